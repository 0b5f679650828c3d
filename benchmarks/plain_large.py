"""``expt train data=file data.path=CSV data.target=y model=hist_gradient_boosting`` as a careful user writes it:
pandas reads the CSV, numpy arrays, ``make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
HistGradientBoostingClassifier(...))`` with expt's defaults for the model, ``cross_validate`` over the same 5
stratified shuffled folds seeded 0 with the metrics ``expt train`` reports and the training accuracy, then a refit
on all rows; nothing logged. Prints the per-fold accuracies as JSON on its last line. ``bench_large.py`` runs it.

``python benchmarks/plain_large.py CSV``
"""

from __future__ import annotations

import sys

from plain_train import run


def main() -> None:
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier

    table = pd.read_csv(sys.argv[1])
    y = table.pop("y").to_numpy()
    run(HistGradientBoostingClassifier(learning_rate=0.1, max_iter=100, max_leaf_nodes=31, l2_regularization=0.0,
                                       early_stopping=False, random_state=0), table.to_numpy(dtype=float), y)


if __name__ == "__main__":
    main()
