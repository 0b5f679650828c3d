"""Torch models through the same train, sweep, tracking, records and rerun paths as any estimator."""

from __future__ import annotations

import collections
import json
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from helpers import EXPT, all_runs, train
from mlflow import MlflowClient
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_digits, make_classification
from typer.testing import CliRunner

from expt.cli import app
from expt.models import CNNClassifier, MLPClassifier, MLPRegressor

TINY = ["model.estimator.max_epochs=8", "model.estimator.hidden_sizes=[16]", "model.estimator.batch_size=16",
        "model.estimator.optimizer.lr=0.01", "learner=quick"]


def test_clone_keeps_params_and_fits_are_deterministic() -> None:
    X, y = make_classification(n_samples=120, n_features=6, random_state=0)
    est = MLPClassifier(hidden_sizes="16-8", max_epochs=6, random_state=3)
    twin = clone(est)
    assert twin.get_params() == est.get_params() and not hasattr(twin, "module_")
    a, b = est.fit(X, y).predict_proba(X), twin.fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (120, 2) and np.allclose(a.sum(axis=1), 1, atol=1e-5)
    c = clone(est).set_params(random_state=4).fit(X, y).predict_proba(X)
    assert not np.array_equal(a, c)


def test_fit_leaves_the_callers_random_state_alone() -> None:
    import torch

    X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    MLPClassifier(max_epochs=2).fit(X, y)
    assert torch.equal(torch.rand(3), expected)


def test_early_stopping_uses_a_validation_split_and_keeps_the_best_epoch() -> None:
    X, y = load_diabetes(return_X_y=True)
    est = MLPRegressor(hidden_sizes=[64], max_epochs=300, patience=5, optimizer=None).fit(X, y)
    assert est.n_epochs_ < 300  # stopped early
    losses = [row["valid_loss"] for row in est.history_]
    assert est.best_epoch_ == int(np.argmin(losses)) and est.n_epochs_ == est.best_epoch_ + 6
    assert est.score(X, y) > 0.3  # R² of a model that learned something


def test_cnn_reads_digits_as_images_and_refuses_the_wrong_shape() -> None:
    X, y = load_digits(return_X_y=True)
    est = CNNClassifier(image_shape=[8, 8], channels=[8], max_epochs=4).fit(X[:600], y[:600])
    assert est.score(X[600:900], y[600:900]) > 0.5
    with pytest.raises(ValueError, match="reads rows as 1x8x8 images"):
        CNNClassifier(image_shape=[8, 8]).fit(X[:, :10], y)


def test_device_choice() -> None:
    import torch

    from expt.models.estimators import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device=auto or cpu"):
            resolve_device("cuda")


def test_mlp_train_on_iris_logs_every_epoch_and_the_model_predicts(store: str, tmp_path: Path) -> None:
    import mlflow

    result = train(store, "data=iris", "model=mlp", *TINY)
    client = MlflowClient(tracking_uri=store)
    folds = [r for r in all_runs(store) if r.data.tags.get("expt.run_type") == "fold"]
    assert len(folds) == 3
    for fold in folds:
        for key in ("train_loss", "valid_loss", "valid_accuracy"):
            history = client.get_metric_history(fold.info.run_id, key)
            assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(8)), key
    mlflow.set_tracking_uri(store)
    model = mlflow.sklearn.load_model(f"runs:/{result.run_id}/model")
    X = result.prepared.dataset.X
    assert (model.predict(X) == result.prepared.dataset.y).mean() > 0.6
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert records[0]["model"]["family"] == "neural_network"


def test_rerun_reproduces_the_mlp_scores(store: str) -> None:
    original = train(store, "data=wine", "model=mlp", *TINY)
    result = CliRunner().invoke(app, ["rerun", original.run_id, "--tracking-uri", store, "--check"])
    assert result.exit_code == 0, result.output
    assert "match exactly" in result.output


def test_a_sweep_prunes_mlp_trials_on_epoch_scores(store: str, tmp_path: Path) -> None:
    from expt.core.config import compose
    from expt.sweep.runner import SweepOptions, run_sweep
    from expt.sweep.storage import open_storage

    storage = str(tmp_path / "optuna.journal")
    composed = compose(["data=breast_cancer", "model=mlp", "search=mlp", "search.outer_folds=2",
                        "search.inner_folds=2", "search.n_trials=8", "search.sampler=random",
                        "model.estimator.max_epochs=12", "model.estimator.patience=null", f"tracking.uri={store}"])
    run_sweep(composed, SweepOptions(sweep_id="nn", storage=storage))
    states: collections.Counter = collections.Counter()
    for unit in ("fold-0", "fold-1", "final"):
        study = optuna.load_study(study_name=f"nn/{unit}", storage=open_storage(storage))
        states.update(t.state.name for t in study.trials)
        pruned = [t for t in study.trials if t.state.name == "PRUNED"]
        assert all("epoch" in t.user_attrs["pruned_at"] for t in pruned)
        # one intermediate value per epoch: step = inner fold x 12 + epoch
        complete = next(t for t in study.trials if t.state.name == "COMPLETE")
        assert sorted(complete.intermediate_values) == list(range(24))
    assert states["PRUNED"] > 0 and states["COMPLETE"] + states["PRUNED"] == 24
    runs = all_runs(store)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    outer = [r for r in runs if r.data.tags.get("expt.run_type") == "outer_fold"]
    client = MlflowClient(tracking_uri=store)
    assert all(client.get_metric_history(r.info.run_id, "train_loss") for r in outer)  # the refit's epochs


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([EXPT, *args], capture_output=True, text=True, cwd=cwd, timeout=180)


@pytest.mark.slow
def test_bad_inputs_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1.0, np.nan] * 20, "b": np.arange(40.0), "y": [0, 1] * 20})
    frame.to_csv(tmp_path / "gaps.csv", index=False)
    cases = [
        (["train", "data=iris", "model=cnn"], "CNNClassifier reads rows as images, but iris is a table"),
        (["train", "data=digits", "model=cnn", "data.image_shape=[7,7]"], "reads rows as 1x7x7 images"),
        (["train", "data=file", "data.path=gaps.csv", "data.target=y", "model=mlp",
          "learner.preprocessing.impute=none"], "learner.preprocessing.impute=median"),
        (["train", "model=mlp", "model.estimator.dropout=1.5"], "fix model.estimator.dropout"),
        (["train", "model=mlp", "model.estimator.hidden_sizes=a-b"], "hidden_sizes"),
    ]
    for args, message in cases:
        proc = run_cli(*args, "tracking.uri=sqlite:///mlruns.db", cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "records.jsonl").exists()
    if (tmp_path / "mlruns.db").exists():
        assert not all_runs(f"sqlite:///{tmp_path / 'mlruns.db'}")
