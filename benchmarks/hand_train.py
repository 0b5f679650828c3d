"""``expt train data=breast_cancer model=MODEL`` as a careful person writes it with scikit-learn, untracked.

The baseline ``bench_process.py`` runs ``expt train`` against, as a script run from the shell: the
pipeline expt builds (median imputation and standard scaling in each fold), 5 stratified shuffled
folds seeded 0, every metric ``expt train`` reports (accuracy, balanced accuracy, macro F1, ROC AUC,
log loss) and the training accuracy, then a refit on all the data. Nothing logged, no plots. Prints
the per-fold accuracies as JSON on its last line (the benchmark checks them against expt's).

``python benchmarks/hand_train.py [MODEL]``
"""

from __future__ import annotations

import json
import sys

from hand_sweep import MODELS, load, make_pipeline_for

METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "neg_log_loss")


def cross_validate(model: str) -> tuple[dict, object]:
    from sklearn.model_selection import StratifiedKFold, cross_validate

    X, y = load()
    pipeline = make_pipeline_for(model, list(X.columns))({})
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    result = cross_validate(pipeline, X, y, cv=folds, scoring=list(METRICS), return_train_score=True)
    final = pipeline.fit(X, y)
    return result, final


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "logistic_regression"
    assert model in MODELS
    result, _final = cross_validate(model)
    print(json.dumps({"folds": [float(s) for s in result["test_accuracy"]]}))


if __name__ == "__main__":
    main()
