"""Records: whole or absent, round-tripped, written by train and sweep, readable from files and MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import train

from expt.core.data import load_dataset
from expt.meta.records import SCHEMA, RecordStore, make_record, read_records


def record(record_id: str = "r1", score: float = 0.9) -> dict:
    data = load_dataset({"source": "sklearn", "id": "iris", "target": "target"})
    return make_record(record_id=record_id, dataset=data, meta_features={"general.log_rows": 2.2},
                       model={"name": "svm", "family": "svm", "params": {"C": 1.0}, "preprocessing": {},
                              "config_key": "svm(C=1.0)|"},
                       config={"model_option": "svm"}, metric="accuracy", scores=[score, score - 0.1, float("nan")],
                       evaluation="3-fold CV", seed=0, source={"kind": "test"})


def test_records_round_trip(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "records.jsonl")
    written = [record("a"), record("b", 0.8)]
    assert store.append(written) == 2
    assert store.read() == json.loads(json.dumps(written))
    assert store.read()[0]["scores"][2] is None and store.read()[0]["score"] == pytest.approx(0.85)
    assert store.read()[0]["schema"] == SCHEMA


def test_a_record_cut_short_by_a_crash_is_never_read_and_is_repaired(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    store = RecordStore(path)
    store.append([record("a")])
    whole = path.read_bytes()
    path.write_bytes(whole + json.dumps(record("torn")).encode()[:57])  # a crash mid-write: no newline
    assert [r["id"] for r in store.read()] == ["a"]
    store.append([record("b")])
    assert [r["id"] for r in store.read()] == ["a", "b"]
    assert path.read_bytes().count(b"\n") == 2 and b"torn" not in path.read_bytes()


def test_appending_the_same_record_twice_keeps_one(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "records.jsonl")
    store.append([record("a")])
    assert store.append([record("a"), record("b")]) == 1
    assert [r["id"] for r in store.read()] == ["a", "b"]


def test_records_of_another_schema_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    other = {**record("future"), "schema": SCHEMA + 1}
    path.write_text(json.dumps(other) + "\n" + json.dumps(record("now")) + "\n" + "not json\n")
    assert [r["id"] for r in RecordStore(path).read()] == ["now"]


def test_train_appends_its_record_and_logs_it_with_the_run(store: str, tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    result = train(store, "data=wine", "model=knn", "learner=quick", f"tracking.records={path}")
    (rec,) = RecordStore(path).read()
    assert rec["id"] == f"train/{result.run_id}" and rec["source"]["run_id"] == result.run_id
    assert rec["scores"] == pytest.approx(result.cv.scores) and rec["metric"]["name"] == "accuracy"
    assert rec["dataset"]["fingerprint"] == result.prepared.dataset.fingerprint
    assert rec["model"]["family"] == "knn" and rec["model"]["params"]["n_neighbors"] == 5
    assert len(rec["meta_features"]) > 20
    assert rec["protocol"] == {"kind": "cv", "folds": 3, "repeats": 1} and rec["fit_seconds"] > 0
    assert rec["model"]["n_parameters"] == 178 * 13  # knn: stored training points x features, of the refit model
    from_mlflow = read_records([store], kb=False)
    assert [r["id"] for r in from_mlflow] == [rec["id"]] and from_mlflow[0] == rec


def test_records_can_be_turned_off(store: str, tmp_path: Path) -> None:
    train(store, "data=iris", "model=knn", "learner=quick", "tracking.records=null")
    assert read_records([store], kb=False) == [] and not (tmp_path / "records.jsonl").exists()


def test_a_failed_run_leaves_no_record(store: str, tmp_path: Path) -> None:
    from expt.core.errors import ExptError

    path = tmp_path / "records.jsonl"
    with pytest.raises(ExptError):  # every fold fails: n_neighbors larger than any training part
        train(store, "data=iris", "model=knn", "model.estimator.n_neighbors=500", "learner=quick",
              f"tracking.records={path}")
    assert not path.exists() and read_records([store], kb=False) == []


def test_sweep_records_its_final_search_once_even_when_resumed(store: str, tmp_path: Path) -> None:
    from expt.core.config import compose
    from expt.sweep.runner import SweepOptions, run_sweep

    path = tmp_path / "records.jsonl"
    composed = compose(["data=iris", "model=knn", "search.outer_folds=2", "search.inner_folds=2",
                        "search.n_trials=3", f"tracking.uri={store}", f"tracking.records={path}"])
    options = SweepOptions(sweep_id="rec", storage=str(tmp_path / "optuna.journal"))
    run_sweep(composed, options)
    records = RecordStore(path).read()
    assert len(records) == 3 and {r["source"]["sweep_id"] for r in records} == {"rec"}
    assert all(len(r["scores"]) == 2 and r["meta_features"] for r in records)
    assert all(r["protocol"] == {"kind": "inner", "folds": 2} and r["fit_seconds"] > 0 for r in records)
    sizes = [r["model"]["n_parameters"] for r in records]
    assert 150 * 4 in sizes  # the trial the final model was refit from: the final model's size (knn: rows x features)
    run_sweep(None, SweepOptions(sweep_id="rec", storage=str(tmp_path / "optuna.journal"), resume=True))
    assert len(RecordStore(path).read()) == 3
    assert len(read_records([store], kb=False)) == 3


def test_n_parameters_counts_each_kind_of_fitted_model() -> None:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    from expt.meta.model_features import n_parameters
    from expt.models import MLPClassifier

    X, y = load_iris(return_X_y=True)
    X = X.astype("float32")

    def fitted(model):
        return make_pipeline(StandardScaler(), model).fit(X, y)

    assert n_parameters(make_pipeline(StandardScaler(), LogisticRegression())) is None  # not fitted yet
    assert n_parameters(fitted(LogisticRegression())) == 3 * 4 + 3  # coefficients and intercepts
    tree = fitted(DecisionTreeClassifier(random_state=0))
    assert n_parameters(tree) == tree[-1].tree_.node_count
    forest = fitted(RandomForestClassifier(n_estimators=3, random_state=0))
    assert n_parameters(forest) == sum(t.tree_.node_count for t in forest[-1].estimators_)
    boosting = fitted(HistGradientBoostingClassifier(max_iter=3))
    assert n_parameters(boosting) == sum(len(t.nodes) for trees in boosting[-1]._predictors for t in trees)
    svm = fitted(SVC())
    assert n_parameters(svm) == len(svm[-1].support_) * 4  # support vectors x features
    assert n_parameters(fitted(KNeighborsClassifier())) == 150 * 4  # stored training points x features
    mlp = fitted(MLPClassifier(hidden_sizes=[8], max_epochs=2))
    assert n_parameters(mlp) == (4 * 8 + 8) + (8 * 3 + 3)  # a torch module's trainable parameters


# n_parameters is filled for every model: from the refit final model when the run made one, else from a fold's.

def test_a_train_record_is_sized_from_a_fold_model_without_a_final_one() -> None:
    from sklearn.base import clone

    from expt.core.config import compose
    from expt.core.cv import cross_validate
    from expt.core.prepare import prepare
    from expt.meta.records import fitted_model, train_record

    prepared = prepare(compose(["data=iris", "model=knn", "learner=quick", "tracking.records=null"]))
    data = prepared.dataset
    cv = cross_validate(prepared.pipeline, data.X, data.y, cv=prepared.splitter, scoring=prepared.scorer,
                        metric=prepared.metric, return_models=True)
    rec = train_record(prepared, cv)
    assert rec["model"]["n_parameters"] == cv.folds[0].n_train * 4  # knn: the first fold's training points x features
    assert rec["model"]["steps"] and fitted_model(cv) is cv.folds[0].model
    final = clone(prepared.pipeline).fit(data.X, data.y)
    assert train_record(prepared, cv, final)["model"]["n_parameters"] == 150 * 4
    for fold in cv.folds:
        fold.model = None
    assert train_record(prepared, cv)["model"]["n_parameters"] is None


def test_sweep_records_carry_each_trial_s_size() -> None:
    import optuna

    from expt.core.config import compose
    from expt.meta.records import sweep_records
    from expt.sweep.plan import make_plan

    plan = make_plan(compose(["data=iris", "model=knn", "search.outer_folds=2", "search.inner_folds=2",
                              "search.n_trials=2", "tracking.records=null"]))
    study = optuna.create_study(direction="maximize")
    for size in (300, None):
        attrs = {"inner_scores": [0.9, 0.8], **({"n_parameters": size} if size is not None else {})}
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.85, user_attrs=attrs))
    sweep = type("Sweep", (), {"plan": plan, "studies": {"final": study}, "choices": {"model": "knn"},
                               "sweep_id": "s"})()
    assert [r["model"]["n_parameters"] for r in sweep_records(sweep, "sqlite:///unused.db")] == [300, None]


def test_train_without_a_logged_model_still_records_its_size(store: str, tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    result = train(store, "data=wine", "model=knn", "learner=quick", "tracking.log_model=false",
                   f"tracking.records={path}")
    (rec,) = RecordStore(path).read()
    assert rec["model"]["n_parameters"] == result.cv.folds[0].n_train * 13  # the first fold's model
    assert all(f.model is None for f in result.cv.folds)  # sized, then let go


def test_every_sweep_record_is_sized(store: str, tmp_path: Path) -> None:
    from expt.core.config import compose
    from expt.sweep.runner import SweepOptions, run_sweep

    path = tmp_path / "records.jsonl"
    composed = compose(["data=iris", "model=knn", "search.outer_folds=2", "search.inner_folds=2",
                        "search.n_trials=3", "tracking.log_model=false", f"tracking.uri={store}",
                        f"tracking.records={path}"])
    run_sweep(composed, SweepOptions(sweep_id="sized", storage=str(tmp_path / "optuna.journal")))
    records = RecordStore(path).read()
    assert len(records) == 3 and all(r["model"]["n_parameters"] == 75 * 4 for r in records)  # first inner fold
