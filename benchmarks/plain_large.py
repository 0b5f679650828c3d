"""``expt train data=file data.path=CSV data.target=y model=hist_gradient_boosting`` as a careful user writes it:
pandas reads the CSV, numpy arrays, ``make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
HistGradientBoostingClassifier(...))`` with expt's defaults for the model, ``cross_validate`` over the same 5
stratified shuffled folds seeded 0 with the metrics ``expt train`` reports and the training accuracy, then a refit
on all rows; nothing logged. Prints the per-fold accuracies as JSON on its last line. ``bench_large.py`` runs it.

``python benchmarks/plain_large.py CSV``
"""

from __future__ import annotations

import json
import sys

from hand_train import METRICS


def main() -> None:
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import StratifiedKFold, cross_validate
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    table = pd.read_csv(sys.argv[1])
    y = table.pop("y").to_numpy()
    X = table.to_numpy(dtype=float)
    model = HistGradientBoostingClassifier(learning_rate=0.1, max_iter=100, max_leaf_nodes=31, l2_regularization=0.0,
                                           early_stopping=False, random_state=0)
    pipeline = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), model)
    result = cross_validate(pipeline, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                            scoring=list(METRICS), return_train_score=True)
    pipeline.fit(X, y)
    print(json.dumps({"folds": [float(s) for s in result["test_accuracy"]]}))


if __name__ == "__main__":
    main()
