"""Nested cross-validation as a careful user writes it for an all-numeric table: numpy arrays,
``make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), model)``, ``cross_val_score`` and Optuna.

Issue 26's plain baseline for ``expt sweep data=breast_cancer model=MODEL``: the same folds (5 outer x 3 inner,
stratified, shuffled, seed 0), search space, sampler seeds and budget (20 TPE trials per study), the final search
on all rows and its refit, nothing logged. Unlike ``hand_sweep.py`` it does not build expt's DataFrame and
ColumnTransformer pipeline, so the comparison includes what expt's generic per-fit path costs on small data.
Prints the outer scores as JSON on its last line.

``python benchmarks/plain_sweep.py [MODEL] [N_TRIALS] [OUTER] [INNER]``
"""

from __future__ import annotations

import json
import sys

from hand_sweep import MODELS, SEED, suggest


def nested_cv(model: str, n_trials: int = 20, outer_folds: int = 5, inner_folds: int = 3) -> list[float]:
    import importlib

    import numpy as np
    import optuna
    from sklearn.datasets import load_breast_cancer
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    X, y = load_breast_cancer(return_X_y=True)
    target, _space, fixed = MODELS[model]
    module, cls = target.rsplit(".", 1)
    estimator = getattr(importlib.import_module(module), cls)

    def pipeline(params: dict):
        return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), estimator(**{**fixed, **params}))

    def search(rows: np.ndarray, index: int) -> dict:
        inner = StratifiedKFold(inner_folds, shuffle=True, random_state=SEED)

        def objective(trial: optuna.Trial) -> float:
            return float(np.mean(cross_val_score(pipeline(suggest(trial, model)), X[rows], y[rows], cv=inner,
                                                 scoring="accuracy")))

        study = optuna.create_study(direction="maximize",
                                    sampler=optuna.samplers.TPESampler(seed=SEED * 1_000_003 + index * 1009))
        study.optimize(objective, n_trials=n_trials)
        return {k.rsplit(".", 1)[1]: v for k, v in study.best_params.items()}

    pipeline(search(np.arange(len(y)), outer_folds)).fit(X, y)  # the final search on all rows, and its refit
    scores = []
    for k, (train, test) in enumerate(StratifiedKFold(outer_folds, shuffle=True, random_state=SEED).split(X, y)):
        fitted = pipeline(search(train, k)).fit(X[train], y[train])
        scores.append(float(fitted.score(X[test], y[test])))
    return scores


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "logistic_regression"
    sizes = [int(a) for a in sys.argv[2:5]]
    print(json.dumps({"outer": nested_cv(model, *sizes)}))


if __name__ == "__main__":
    main()
