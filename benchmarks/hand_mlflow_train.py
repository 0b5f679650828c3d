"""``hand_train.py`` with plain MLflow logging, as a user writes it: the same cross-validation and refit,
a parent run with the parameters and mean/std of every metric, a child run per fold with its scores,
and the refit model logged with ``mlflow.sklearn.log_model``. Prints the per-fold accuracies as JSON.

``python benchmarks/hand_mlflow_train.py TRACKING_URI [MODEL]``
"""

from __future__ import annotations

import json
import sys

import mlflow
import numpy as np
from hand_sweep import load
from hand_train import METRICS, cross_validate


def main() -> None:
    uri = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 else "logistic_regression"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("hand-train")
    with mlflow.start_run(run_name=f"breast_cancer-{model}"):
        result, final = cross_validate(model)
        mlflow.log_params({f"model.{k}": v for k, v in final.named_steps["model"].get_params().items()})
        mlflow.log_metrics({f"{m}_{stat}": float(fn(result[f"test_{m}"])) for m in METRICS
                            for stat, fn in (("mean", np.mean), ("std", np.std))})
        for k in range(len(result["test_accuracy"])):
            with mlflow.start_run(run_name=f"fold-{k}", nested=True):
                mlflow.log_metrics({m: float(result[f"test_{m}"][k]) for m in METRICS})
                mlflow.log_metric("train_accuracy", float(result["train_accuracy"][k]))
        X, _ = load()
        mlflow.sklearn.log_model(final, name="model", input_example=X.head(5), serialization_format="cloudpickle")
    print(json.dumps({"folds": [float(s) for s in result["test_accuracy"]]}))


if __name__ == "__main__":
    main()
