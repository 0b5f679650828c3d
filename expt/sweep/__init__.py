"""``expt sweep``: nested cross-validation over Optuna studies. Bottom up: storage (names, opening, Optuna
internals), engine, coordination across processes, plan, attach, the MLflow reporter and sink with its plots,
warm start, status, runner.
"""
