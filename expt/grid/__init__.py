"""``expt train -m`` / ``expt sweep -m``: a grid of ordinary runs, compared honestly at the end.

Bottom up: spec (Hydra's sweep overrides expanded into cells), plan (every cell composed and checked before any
run exists: skips, paired folds, one store), results (the cells read back from MLflow), stats (table, ranks,
tests, the critical-difference diagram), runner (the ``grid-<id>`` run, cells in this process or in workers,
resume). It sits beside ``expt.reproduce`` and ``expt.kb``: it runs train and sweep, and nothing below imports it.
"""
