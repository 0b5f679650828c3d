"""``hand_sweep.py`` with plain MLflow logging, as a user writes it: the same nested CV (same pipeline,
folds, seeds, space and budget, final search and refit), and a run tree of sweep -> outer fold -> trial
(params, inner scores), each fold's best parameters and outer score, the final model logged with
``mlflow.sklearn.log_model``. Prints the outer scores as JSON on its last line.

``python benchmarks/hand_mlflow_sweep.py TRACKING_URI [MODEL] [N_TRIALS] [OUTER] [INNER]``
"""

from __future__ import annotations

import json
import sys

import mlflow
import numpy as np
from hand_sweep import load, nested_cv


def main() -> None:
    uri = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 else "logistic_regression"
    sizes = [int(a) for a in sys.argv[3:6]]
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("hand-sweep")
    folds: dict[int, str] = {}

    def fold_run(index: int) -> str:
        if index not in folds:
            name = "final" if index == (sizes[1] if len(sizes) > 1 else 5) else f"outer-fold-{index}"
            folds[index] = mlflow.start_run(run_name=name, nested=True).info.run_id
            mlflow.end_run()
        return folds[index]

    def on_trial(index: int, trial, scores: list[float]) -> None:
        with mlflow.start_run(run_id=fold_run(index), nested=True), \
                mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(trial.params)
            for step, score in enumerate(scores):
                mlflow.log_metric("inner_accuracy", score, step=step)
            mlflow.log_metric("inner_accuracy_mean", float(np.mean(scores)))

    def on_fold(index: int, params: dict, score: float | None) -> None:
        with mlflow.start_run(run_id=fold_run(index), nested=True):
            mlflow.log_params({f"best.{k}": v for k, v in params.items()})
            if score is not None:
                mlflow.log_metric("outer_accuracy", score)

    with mlflow.start_run(run_name="sweep"):
        mlflow.log_params({"model": model, "n_trials": sizes[0] if sizes else 20})
        scores, final = nested_cv(model, *sizes, on_trial=on_trial, on_fold=on_fold)
        mlflow.log_metric("outer_accuracy_mean", float(np.mean(scores)))
        mlflow.log_metric("outer_accuracy_std", float(np.std(scores)))
        X, _ = load()
        mlflow.sklearn.log_model(final, name="model", input_example=X.head(5), serialization_format="cloudpickle")
    print(json.dumps({"outer": scores}))


if __name__ == "__main__":
    main()
