"""`train` end to end in-process against a real SQLite MLflow store: the run tree a user opens in the UI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import OPTIONS_BY_GROUP, all_runs, train

from expt.core.config import compose, resolve_values
from expt.core.cv import build_pipeline, cross_validate, make_splitter
from expt.core.data import load_dataset
from expt.core.schema import fill_data_defaults

TINY = ["learner.cv.folds=2"]


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory: pytest.TempPathFactory):
    store = f"sqlite:///{tmp_path_factory.mktemp('wine')}/mlruns.db"
    return store, train(store, "data=wine", "model=svm", "model.estimator.C=3", "learner.cv.folds=4", "seed=7")


def test_run_tree_has_a_parent_and_one_finished_child_per_fold(wine_run) -> None:
    store, result = wine_run
    runs = all_runs(store)
    parent = next(r for r in runs if r.info.run_id == result.run_id)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.run_id]
    assert len(runs) == 5 and len(children) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.tags["expt.fold"] for r in children) == ["0", "1", "2", "3"]
    for run in (parent, *children):
        tags = run.data.tags
        assert tags["expt.dataset_fingerprint"] == result.prepared.dataset.fingerprint
        assert tags["expt.seed"] == "7" and tags["expt.version"] and tags["expt.git_commit"]
        assert tags["expt.python"] and tags["expt.pkg.scikit-learn"] and tags["expt.git_dirty"]
    for child, fold in zip(sorted(children, key=lambda r: int(r.data.tags["expt.fold"])), result.cv.folds,
                           strict=True):
        assert child.data.metrics["accuracy"] == pytest.approx(fold.score)
        assert child.data.metrics["fit_time"] > 0 and "score_time" in child.data.metrics
    assert parent.data.metrics["accuracy_mean"] == pytest.approx(np.mean(result.cv.scores))
    assert parent.data.metrics["accuracy_std"] == pytest.approx(np.std(result.cv.scores))
    assert parent.data.params["model.estimator.C"] == "3" and parent.data.params["learner.cv.folds"] == "4"
    assert parent.data.params["model.estimator._target_"] == "sklearn.svm.SVC"


def test_logged_config_composes_back_into_the_same_config(wine_run, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    store, result = wine_run
    path = MlflowClient(tracking_uri=store).download_artifacts(result.run_id, "config.yaml", str(tmp_path))
    again = compose([f"conf={path}"])
    assert resolve_values(again.cfg) == result.prepared.values


def test_logged_model_loads_and_predicts(wine_run) -> None:
    import mlflow.pyfunc

    store, result = wine_run
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    X = result.prepared.dataset.X
    predictions = np.asarray(model.predict(X.head(20)))
    assert predictions.shape == (20,)
    assert (predictions == result.prepared.dataset.y[:20]).mean() > 0.8


def test_same_seed_gives_identical_fold_scores(store: str) -> None:
    a = train(store, "data=breast_cancer", "model=random_forest", "model.estimator.n_estimators=10", *TINY,
              "tracking.log_model=false")
    b = train(store, "data=breast_cancer", "model=random_forest", "model.estimator.n_estimators=10", *TINY,
              "tracking.log_model=false")
    assert a.cv.scores == b.cv.scores and a.run_id != b.run_id


def test_preprocessing_is_fitted_inside_each_fold_only() -> None:
    ds = load_dataset(fill_data_defaults({"source": "sklearn", "id": "wine", "target": "target", "task": "auto"}))
    from sklearn.linear_model import LogisticRegression

    pipe = build_pipeline(LogisticRegression(max_iter=500), ds.numeric, ds.categorical,
                          {"impute": "median", "scale": "standard", "one_hot": True, "max_categories": 5})
    cv = make_splitter("classification", ds.n_rows, folds=3, seed=0)
    result = cross_validate(pipe, ds.X, ds.y, cv=cv, scoring=__import__("sklearn.metrics").metrics.get_scorer(
        "accuracy"), metric="accuracy", return_models=True)
    for fold in result.folds:
        scaler = fold.model.named_steps["preprocess"].named_transformers_["numeric"][-1]
        assert scaler.n_samples_seen_ == fold.n_train < ds.n_rows


def test_categorical_and_missing_values_go_through_the_pipeline(store: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 80
    frame = pd.DataFrame({"x": rng.normal(size=n), "city": rng.choice(["a", "b", "c", None], n),
                          "z": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n))})
    frame["label"] = np.where(frame.x > 0, "up", "down")
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    result = train(store, "data=file", f"data.path={path}", "data.target=label", "model=logistic_regression", *TINY)
    assert result.prepared.dataset.categorical == ["city"] and result.cv.mean > 0.8


def _options(group: str) -> list[str]:
    return OPTIONS_BY_GROUP[group]


def _data_overrides(option: str, tmp_path: Path) -> list[str]:
    if option != "file":
        return []
    path = tmp_path / "table.parquet"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30), "target": rng.integers(0, 2, 30)})
    frame.to_parquet(path)
    return [f"data.path={path}"]


@pytest.mark.parametrize("option", _options("data"))
def test_every_data_option_runs(store: str, tmp_path: Path, option: str) -> None:
    result = train(store, f"data={option}", "model=random_forest", "model.estimator.n_estimators=5", *TINY,
                   *_data_overrides(option, tmp_path))
    assert len(result.cv.folds) == 2 and np.isfinite(result.cv.mean)


MODEL_CASES = [(m, d) for m in _options("model") for d in ("iris", "diabetes")
               if not (m == "logistic_regression" and d == "diabetes") and m != "cnn"] + [("cnn", "digits")]
NETWORKS = ("mlp", "cnn")


@pytest.mark.parametrize(("model", "data"), MODEL_CASES, ids=[f"{m}-{d}" for m, d in MODEL_CASES])
def test_every_model_runs_for_each_task_it_handles(store: str, model: str, data: str) -> None:
    short = ["model.estimator.max_epochs=3"] if model in NETWORKS else []
    result = train(store, f"data={data}", f"model={model}", *TINY, *short)
    assert np.isfinite(result.cv.mean)
    assert {r.info.status for r in all_runs(store)} == {"FINISHED"}


@pytest.mark.parametrize("option", _options("learner") + _options("tracking"))
def test_every_learner_and_tracking_option_runs(store: str, option: str) -> None:
    group = "learner" if option in _options("learner") else "tracking"
    result = train(store, f"{group}={option}", "model=knn", "tracking.log_model=false")
    cv = result.prepared.values["learner"]["cv"]
    assert len(result.cv.folds) == cv["folds"] * cv["repeats"]


def _journal_mode(path: Path) -> str:
    import sqlite3

    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        db.close()


def test_sqlite_store_in_wal_mode_is_whole_in_its_db_file(store: str, tmp_path: Path) -> None:
    import shutil

    result = train(store, "data=iris", "model=knn", *TINY)
    path = Path(store.removeprefix("sqlite:///"))
    assert _journal_mode(path) == "wal"
    copy = tmp_path / "elsewhere" / "mlruns.db"  # a user copies the store: the last run must be in it
    copy.parent.mkdir()
    shutil.copy(path, copy)
    runs = all_runs(f"sqlite:///{copy}")
    assert result.run_id in {r.info.run_id for r in runs} and len(runs) == 3
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_sqlite_wal_can_be_turned_off(store: str) -> None:
    train(store, "data=iris", "model=knn", *TINY, "tracking.sqlite_wal=false")
    assert _journal_mode(Path(store.removeprefix("sqlite:///"))) == "delete"
