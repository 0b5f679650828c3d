"""``expt train data=breast_cancer model=MODEL`` as a careful user writes it for an all-numeric table: numpy
arrays, ``make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), model)`` and ``cross_validate``.

Issue 26's plain baseline: the same 5 stratified shuffled folds seeded 0, the metrics ``expt train`` reports and
the training accuracy, a refit on all rows, nothing logged. Unlike ``hand_train.py`` it does not build expt's
DataFrame and ColumnTransformer pipeline. Prints the per-fold accuracies as JSON on its last line.

``python benchmarks/plain_train.py [MODEL]``
"""

from __future__ import annotations

import json
import sys

from hand_sweep import MODELS
from hand_train import METRICS


def run(estimator: object, X: object, y: object) -> None:
    """The plain pipeline around ``estimator``: cross-validated as expt train does, refit, fold accuracies
    printed as JSON."""
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), estimator)
    result = cross_validate(pipeline, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                            scoring=list(METRICS), return_train_score=True)
    pipeline.fit(X, y)
    print(json.dumps({"folds": [float(s) for s in result["test_accuracy"]]}))


def main() -> None:
    import importlib

    from sklearn.datasets import load_breast_cancer

    model = sys.argv[1] if len(sys.argv) > 1 else "logistic_regression"
    target, _space, fixed = MODELS[model]
    module, cls = target.rsplit(".", 1)
    X, y = load_breast_cancer(return_X_y=True)
    run(getattr(importlib.import_module(module), cls)(**fixed), X, y)


if __name__ == "__main__":
    main()
