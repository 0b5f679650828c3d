"""``expt train data=breast_cancer model=lightgbm`` written by hand, untracked: the baseline of bench_boosting.py.

numpy arrays, ``make_pipeline`` (median imputation, standard scaling, the booster), ``cross_val_score`` on the
same 5 stratified shuffled folds (seed 0) and a refit on all the data, nothing logged. The booster is the one
``model=lightgbm`` builds (expt's BoostedClassifier around LightGBM's defaults with n_jobs=1, early stopping on 10%
of each training part), so both sides fit the same models; importing it costs what importing lightgbm costs.
Prints the per-fold accuracies as JSON on its last line (the benchmark checks them against expt's).

``python benchmarks/hand_boosting.py [lightgbm|xgboost|catboost]``
"""

from __future__ import annotations

import json
import sys


def booster(family: str) -> object:
    if family == "lightgbm":
        from lightgbm import LGBMClassifier

        return LGBMClassifier(n_estimators=1000, learning_rate=0.1, num_leaves=31, min_child_samples=20,
                              subsample=1.0, subsample_freq=0, colsample_bytree=1.0, reg_alpha=0.0, reg_lambda=0.0,
                              n_jobs=1, verbosity=-1, random_state=0)
    if family == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier(n_estimators=1000, learning_rate=0.3, max_depth=6, min_child_weight=1.0, subsample=1.0,
                             colsample_bytree=1.0, reg_alpha=0.0, reg_lambda=1.0, tree_method="hist", n_jobs=1,
                             verbosity=0, random_state=0)
    from catboost import CatBoostClassifier

    return CatBoostClassifier(iterations=1000, learning_rate=None, depth=6, l2_leaf_reg=3.0, thread_count=1,
                              verbose=False, allow_writing_files=False, random_seed=0)


def main() -> None:
    from sklearn.datasets import load_breast_cancer
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from expt.models.boosting import BoostedClassifier

    family = sys.argv[1] if len(sys.argv) > 1 else "lightgbm"
    X, y = load_breast_cancer(return_X_y=True)
    pipeline = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                             BoostedClassifier(booster(family), validation_fraction=0.1, early_stopping_rounds=50))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = cross_val_score(pipeline, X, y, cv=folds, scoring="accuracy")
    pipeline.fit(X, y)
    print(json.dumps({"folds": [float(s) for s in scores]}))


if __name__ == "__main__":
    main()
