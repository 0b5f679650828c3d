"""Nested cross-validation as a careful person writes it with scikit-learn and Optuna, untracked.

The baseline ``bench_process.py`` runs ``expt sweep data=breast_cancer model=MODEL`` against, as a
script a user runs from the shell: the pipeline expt builds (median imputation and standard scaling
inside each fold), 5 outer x 3 inner stratified shuffled folds seeded 0, 20 TPE trials per outer fold
seeded as expt seeds them, the best trial refit on each outer training part and scored on its test
part, then the final search on all data and its refit. Nothing logged, nothing stored. It prints the
outer scores as JSON on its last line (the benchmark checks them against expt's).

``python benchmarks/hand_sweep.py [MODEL] [N_TRIALS] [OUTER] [INNER]``
"""

from __future__ import annotations

import json
import sys

SEED = 0
MODELS = {  # conf/model/*.yaml and conf/search/*.yaml, written out
    "logistic_regression": ("sklearn.linear_model.LogisticRegression",
                            {"C": ("float", 1e-3, 1e3, True)}, {"max_iter": 1000, "random_state": SEED}),
    "random_forest": ("sklearn.ensemble.RandomForestClassifier",
                      {"n_estimators": ("int", 20, 300, True), "max_depth": ("int", 2, 32, True),
                       "min_samples_leaf": ("int", 1, 10, False), "max_features": ("float", 0.1, 1.0, False)},
                      {"n_estimators": 100, "max_depth": None, "min_samples_leaf": 1, "max_features": "sqrt",
                       "n_jobs": 1, "random_state": SEED}),
}


def load() -> tuple:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X.astype(float), y.to_numpy()


def make_pipeline_for(model: str, columns: list[str]):  # a factory of pipelines
    import importlib

    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import StandardScaler

    target, _space, fixed = MODELS[model]
    module, cls = target.rsplit(".", 1)
    estimator_cls = getattr(importlib.import_module(module), cls)

    def pipeline(params: dict):
        pre = ColumnTransformer([("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                                  columns)], verbose_feature_names_out=False)
        return Pipeline([("preprocess", pre), ("model", estimator_cls(**{**fixed, **params}))])

    return pipeline


def suggest(trial, model: str) -> dict:
    params = {}
    for name, (kind, low, high, log) in MODELS[model][1].items():
        draw = trial.suggest_int if kind == "int" else trial.suggest_float
        params[name] = draw(f"model.estimator.{name}", low, high, log=log)
    return params


def nested_cv(model: str, n_trials: int = 20, outer_folds: int = 5, inner_folds: int = 3,
              on_trial=None, on_fold=None) -> tuple[list[float], object]:
    """Outer scores and the final model; ``on_trial(index, trial, scores)`` and ``on_fold(index, params, score)``
    are where the MLflow variant logs."""
    import numpy as np
    import optuna
    from sklearn.base import clone
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import StratifiedKFold

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    X, y = load()
    pipeline = make_pipeline_for(model, list(X.columns))
    scorer = get_scorer("accuracy")

    def search(train, index: int) -> dict:
        Xt, yt = X.iloc[train], y[train]
        inner = StratifiedKFold(inner_folds, shuffle=True, random_state=SEED)

        def objective(trial: optuna.Trial) -> float:
            candidate = pipeline(suggest(trial, model))
            scores = []
            for a, b in inner.split(Xt, yt):
                fitted = clone(candidate).fit(Xt.iloc[a], yt[a])
                scores.append(float(scorer(fitted, Xt.iloc[b], yt[b])))
            if on_trial is not None:
                on_trial(index, trial, scores)
            return float(np.mean(scores))

        sampler = optuna.samplers.TPESampler(seed=SEED * 1_000_003 + index * 1009)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(objective, n_trials=n_trials)
        return {k.rsplit(".", 1)[1]: v for k, v in study.best_params.items()}

    outer = StratifiedKFold(outer_folds, shuffle=True, random_state=SEED)
    scores = []
    final_params = search(np.arange(len(y)), outer_folds)  # the final search on all data, and its refit
    final = pipeline(final_params).fit(X, y)
    if on_fold is not None:
        on_fold(outer_folds, final_params, None)
    for k, (train, test) in enumerate(outer.split(X, y)):
        params = search(train, k)
        fitted = pipeline(params).fit(X.iloc[train], y[train])
        scores.append(float(scorer(fitted, X.iloc[test], y[test])))
        if on_fold is not None:
            on_fold(k, params, scores[-1])
    return scores, final


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "logistic_regression"
    sizes = [int(a) for a in sys.argv[2:5]]
    scores, _final = nested_cv(model, *sizes)
    print(json.dumps({"outer": scores}))


if __name__ == "__main__":
    main()
