"""`sweep` against real stores: Optuna journal files and SQLite MLflow stores in tmp_path."""

from __future__ import annotations

import collections
import math
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from helpers import EXPT, all_runs
from mlflow import MlflowClient

from expt.core.config import compose
from expt.core.errors import ConfigError, RunFailedError
from expt.sweep.reporter import TRIAL_TAGS
from expt.sweep.runner import SweepOptions, run_sweep
from expt.sweep.storage import open_storage

SMALL = ["search.outer_folds=2", "search.inner_folds=2", "search.n_trials=3"]
UNITS = ("fold-0", "fold-1", "final")


def sweep(store: str, tmp_path: Path, *overrides: str, config_dir: Path | None = None, **options):
    composed = compose([*overrides, f"tracking.uri={store}"], config_dir=config_dir)
    options.setdefault("storage", str(tmp_path / "optuna.journal"))
    return run_sweep(composed, SweepOptions(config_dir=str(config_dir) if config_dir else None, **options))


def trials(storage: str, sweep_id: str, unit: str) -> list:
    return optuna.load_study(study_name=f"{sweep_id}/{unit}", storage=open_storage(storage)).trials


def done(ts: list) -> list:
    return [t for t in ts if t.state.name in ("COMPLETE", "PRUNED")]


def by_type(store: str) -> dict[str, list]:
    out = collections.defaultdict(list)
    for run in all_runs(store):
        out[run.data.tags.get("expt.run_type")].append(run)
    return out


def test_counts_and_run_tree(store: str, tmp_path: Path) -> None:
    sw, result = sweep(store, tmp_path, "data=breast_cancer", "model=knn", *SMALL, sweep_id="s1")
    storage = str(tmp_path / "optuna.journal")
    for unit in UNITS:
        assert len(done(trials(storage, "s1", unit))) == 3
    runs = by_type(store)
    assert [len(runs[k]) for k in ("sweep", "outer_fold", "final", "trial")] == [1, 2, 1, 9]
    ids = {r.info.run_id: r for rs in runs.values() for r in rs}
    parent = runs["sweep"][0]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs["outer_fold"] + runs["final"]} == {parent.info.run_id}
    for trial in runs["trial"]:
        unit = ids[trial.data.tags["mlflow.parentRunId"]]
        assert unit.data.tags["expt.key"] == trial.data.tags["expt.key"].split("/")[0]
        assert len(trial.data.metrics) >= 2 and "model.estimator.n_neighbors" in trial.data.params
        assert trial.data.tags["expt.trial_state"] == "COMPLETE" and trial.data.tags["expt.sweep_id"] == "s1"
    assert {r.info.status for rs in runs.values() for r in rs} == {"FINISHED"}
    for fold in runs["outer_fold"]:
        key = fold.data.tags["expt.key"]
        stored = optuna.load_study(study_name=f"s1/{key}", storage=open_storage(storage)).user_attrs["expt.result"]
        assert fold.data.metrics["outer_accuracy"] == stored["outer_score"]
    assert parent.data.metrics["outer_accuracy_mean"] == pytest.approx(result["outer_mean"])
    assert parent.data.tags["expt.dataset_fingerprint"] and parent.data.tags["expt.git_commit"]
    contract = ("expt.git_commit", "expt.git_dirty", "expt.version", "expt.dataset_fingerprint", "expt.seed")
    for run in runs["trial"]:
        assert {k: run.data.tags[k] for k in contract} == {k: parent.data.tags[k] for k in contract}
    client = MlflowClient(tracking_uri=store)
    plots = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"optimization_history.png", "outer_vs_inner.png"} <= plots
    png = client.download_artifacts(parent.info.run_id, "plots/outer_vs_inner.png", str(tmp_path))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    copy = tmp_path / "copy" / "mlruns.db"  # the write-ahead log was folded in: the .db file alone is the store
    copy.parent.mkdir()
    shutil.copy(store.removeprefix("sqlite:///"), copy)
    assert len(all_runs(f"sqlite:///{copy}")) == 13


def test_importance_plot_comes_with_the_final_search(store: str, tmp_path: Path) -> None:
    sweep(store, tmp_path, "data=iris", "model=knn", "search.outer_folds=2", "search.inner_folds=2",
          "search.n_trials=8", "search.sampler=random", sweep_id="imp")
    parent = by_type(store)["sweep"][0]
    plots = {Path(a.path).name for a in MlflowClient(tracking_uri=store).list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"optimization_history.png", "outer_vs_inner.png", "param_importances.png"}


def test_the_same_sweep_id_with_another_config_is_refused(store: str, tmp_path: Path) -> None:
    sweep(store, tmp_path, "data=iris", "model=knn", *SMALL, "search.n_trials=2", sweep_id="j1")
    with pytest.raises(ConfigError, match="already exists with another config"):
        sweep(store, tmp_path, "data=iris", "model=knn", *SMALL, "search.n_trials=2", "seed=5", sweep_id="j1")


def test_final_model_is_logged_and_predicts(store: str, tmp_path: Path) -> None:
    import mlflow.pyfunc
    import numpy as np

    sw, _ = sweep(store, tmp_path, "data=wine", "model=logistic_regression", *SMALL, sweep_id="m1")
    final = by_type(store)["final"][0]
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(f"runs:/{final.info.run_id}/model")
    X = sw.plan.prepared.dataset.X
    assert np.asarray(model.predict(X.head(10))).shape == (10,)


class _Lost:
    """A queue whose messages never reach MLflow: what a sink that died with them leaves behind."""

    def put(self, msg: dict) -> None:
        if msg.get("model"):
            os.unlink(msg["model"])


def test_resume_logs_everything_the_sink_never_wrote_with_the_final_model(store: str, tmp_path: Path) -> None:
    import mlflow.pyfunc

    from expt.sweep.attach import attach, make_engine
    from expt.sweep.reporter import Reporter

    storage = str(tmp_path / "optuna.journal")
    composed = compose(["data=wine", "model=logistic_regression", *SMALL, f"tracking.uri={store}"])
    lost = attach("lost", storage, composed=composed)
    make_engine(lost, Reporter(_Lost(), lost.plan, "lost", {k: "x" for k in TRIAL_TAGS})).run()
    assert all_runs(store) == []
    sw, _ = run_sweep(None, SweepOptions(sweep_id="lost", storage=storage, resume=True))
    runs = by_type(store)
    assert [len(runs[k]) for k in ("sweep", "outer_fold", "final", "trial")] == [1, 2, 1, 9]
    assert {r.info.status for rs in runs.values() for r in rs} == {"FINISHED"}
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(f"runs:/{runs['final'][0].info.run_id}/model")
    assert len(model.predict(sw.plan.prepared.dataset.X.head(4))) == 4


def test_two_workers_meet_the_budget_exactly(store: str, tmp_path: Path) -> None:
    sweep(store, tmp_path, "data=breast_cancer", "model=knn", "search.outer_folds=2", "search.inner_folds=2",
          "search.n_trials=5", sweep_id="w2", workers=2)
    storage = str(tmp_path / "optuna.journal")
    for unit in UNITS:
        ts = trials(storage, "w2", unit)
        assert len(done(ts)) == 5
        assert len({t.number for t in ts}) == len(ts)
    runs = by_type(store)
    assert len(runs["trial"]) == 15 and len({r.data.tags["expt.key"] for r in runs["trial"]}) == 15


def test_pruner_records_pruned_trials(store: str, tmp_path: Path) -> None:
    sweep(store, tmp_path, "data=breast_cancer", "model=knn", "search.outer_folds=2", "search.inner_folds=4",
          "search.n_trials=10", "search.pruner=median", "search.sampler=random", sweep_id="p1")
    states = collections.Counter(t.state.name for u in UNITS for t in trials(str(tmp_path / "optuna.journal"),
                                                                              "p1", u))
    assert states["PRUNED"] > 0 and states["COMPLETE"] + states["PRUNED"] == 30
    pruned = [r for r in by_type(store)["trial"] if r.data.tags["expt.trial_state"] == "PRUNED"]
    assert len(pruned) == states["PRUNED"]


@pytest.fixture
def failing_conf(tmp_path: Path) -> Path:
    """A space where large n_neighbors exceed the inner training part: those trials raise."""
    conf = tmp_path / "conf" / "search"
    conf.mkdir(parents=True)
    (conf / "knn_wide.yaml").write_text(
        "defaults:\n  - _base\n  - _self_\nname: knn_wide\nmax_failure_rate: 0.9\n"
        "space:\n  model.estimator.n_neighbors: {type: int, low: 1, high: 50}\n")
    return tmp_path / "conf"


def test_failing_trials_are_recorded_and_the_sweep_completes(store: str, tmp_path: Path, failing_conf: Path) -> None:
    sweep(store, tmp_path, "data=iris", "model=knn", "search=knn_wide", "search.outer_folds=2",
          "search.inner_folds=2", "search.n_trials=6", "search.sampler=random", sweep_id="f1", config_dir=failing_conf)
    all_trials = [t for u in UNITS for t in trials(str(tmp_path / "optuna.journal"), "f1", u)]
    failed = [t for t in all_trials if t.state.name == "FAIL"]
    assert failed and all("n_neighbors" in t.user_attrs["expt.error"] for t in failed)
    assert len(done(all_trials)) == 18
    failed_runs = [r for r in by_type(store)["trial"] if r.info.status == "FAILED"]
    assert len(failed_runs) == len(failed) and "n_neighbors" in failed_runs[0].data.tags["expt.error"]


def test_too_many_failures_stop_with_a_clear_message(store: str, tmp_path: Path, failing_conf: Path) -> None:
    with pytest.raises(RunFailedError, match="search.max_failure_rate"):
        sweep(store, tmp_path, "data=iris", "model=knn", "search=knn_wide", "search.max_failure_rate=0.0",
              "search.outer_folds=2", "search.inner_folds=2", "search.n_trials=12", "search.sampler=random",
              sweep_id="f2", config_dir=failing_conf)
    assert "RUNNING" not in {r.info.status for r in all_runs(store)}
    assert by_type(store)["sweep"][0].info.status == "FAILED"


def test_warm_start_configurations_run_first(store: str, tmp_path: Path) -> None:
    warm = tmp_path / "warm.yaml"
    warm.write_text("- {model.estimator.n_neighbors: 7, model.estimator.weights: distance}\n")
    sweep(store, tmp_path, "data=iris", "model=knn", *SMALL, sweep_id="ws", warm_start=str(warm))
    for unit in UNITS:
        first = trials(str(tmp_path / "optuna.journal"), "ws", unit)[0]
        assert first.params == {"model.estimator.n_neighbors": 7, "model.estimator.weights": "distance"}


@pytest.mark.parametrize(("entry", "message"), [
    ("{model.estimator.n_neighbors: {a: 1}}", "n_neighbors: {'a': 1} is not a number (int from 1 to 50)"),
    ("{model.estimator.n_neighbors: 500}", "n_neighbors: 500 is outside 1..50"),
    ("{model.estimator.n_neighbors: 2.5}", "n_neighbors: 2.5 is not a whole number"),
    ("{model.estimator.n_neighbors: true}", "n_neighbors: True is not a number"),
    ("{model.estimator.weights: closest}", "weights: 'closest' is not one of ['uniform', 'distance']"),
])
def test_a_warm_start_entry_outside_the_space_is_refused_before_any_run(store: str, tmp_path: Path, entry: str,
                                                                         message: str) -> None:
    """Issue 26: Optuna enqueues whatever it is given, so a mapping where a number belongs failed a trial in every
    study and the command exited 0. Now one line names the entry, and nothing is written."""
    from expt.core.errors import UsageError

    warm = tmp_path / "warm.yaml"
    warm.write_text(f"- {{model.estimator.n_neighbors: 7}}\n- {entry}\n")
    with pytest.raises(UsageError, match=r"^--warm-start entry 2, model\.estimator\." + re.escape(message)):
        sweep(store, tmp_path, "data=iris", "model=knn", *SMALL, sweep_id="bad", warm_start=str(warm))
    assert all_runs(store) == [] and not (tmp_path / "optuna.journal").exists()


def test_model_selection_chooses_among_families(store: str, tmp_path: Path) -> None:
    sw, result = sweep(store, tmp_path, "data=diabetes", "search=model_selection", *SMALL, "search.n_trials=4",
                       sweep_id="ms")
    families = {t.params["model"] for u in UNITS for t in trials(str(tmp_path / "optuna.journal"), "ms", u)}
    assert families and "logistic_regression" not in families  # it cannot do regression: filtered out
    assert 0.0 < result["outer_mean"] < 1.0 and all(math.isfinite(v) for v in result["outer"])


@pytest.mark.parametrize(("space", "message"), [
    ("model.estimator.C: {type: float, low: 2, high: 1}", "low (2) must be below high (1)"),
    ("model.estimator.C: {type: float, low: 0, high: 1, log: true}", "log=true needs low > 0"),
    ("model.estimator.C: {type: normal}", "needs type: float | int | categorical"),
    ("learner.cv.nope: {type: int, low: 1, high: 3}", "names no config value"),
    ("model.estimator.C: {type: float, low: 1, hi: 3}", "unknown keys ['hi']"),
])
def test_bad_spaces_are_named_before_anything_runs(store: str, tmp_path: Path, space: str, message: str) -> None:
    conf = tmp_path / "conf" / "search"
    conf.mkdir(parents=True)
    (conf / "broken.yaml").write_text(f"defaults:\n  - _base\n  - _self_\nname: broken\nspace:\n  {space}\n")
    with pytest.raises(ConfigError) as err:
        sweep(store, tmp_path, "data=iris", "model=svm", "search=broken", sweep_id="bad", config_dir=tmp_path / "conf")
    assert message in str(err.value)
    assert all_runs(store) == []


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume_is_exact(store: str, tmp_path: Path) -> None:
    storage = str(tmp_path / "optuna.journal")
    args = [EXPT, "sweep", "data=digits", "model=random_forest", "search.outer_folds=2", "search.inner_folds=3",
            "search.n_trials=4", f"tracking.uri={store}", "--storage", storage]
    proc = subprocess.Popen([*args, "--sweep-id", "k1"], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            ts = trials(storage, "k1", "fold-0")
        except (KeyError, ValueError, FileNotFoundError):
            continue
        if len(done(ts)) >= 2 and any(t.state.name == "RUNNING" for t in ts):
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(t.state.name == "RUNNING" for t in trials(storage, "k1", "fold-0")), "the kill must land mid-trial"
    resumed = subprocess.run([EXPT, "sweep", "--resume", "k1", "--storage", storage], cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed: 1 trial(s)" in resumed.stdout
    runs = all_runs(store)
    assert "RUNNING" not in {r.info.status for r in runs}
    keys = collections.Counter(r.data.tags.get("expt.key") for r in runs)
    assert max(keys.values()) == 1, "no MLflow run is duplicated"
    for unit in UNITS:
        ts = trials(storage, "k1", unit)
        assert len(done(ts)) == 4
        params = [tuple(sorted(t.params.items())) for t in done(ts)]
        assert len(set(params)) == len(params)
    killed = [t for t in trials(storage, "k1", "fold-0") if t.state.name == "FAIL"]
    assert len(killed) == 1 and "worker died" in killed[0].user_attrs["expt.error"]
    killed_run = [r for r in runs if r.data.tags.get("expt.key") == f"fold-0/trial-{killed[0].number}"]
    assert killed_run and killed_run[0].info.status == "FAILED"
    assert len([r for r in runs if r.data.tags.get("expt.run_type") == "sweep"]) == 1


def test_the_sink_builds_the_tree_whatever_order_the_processes_deliver_in(store: str) -> None:
    """Workers and the sweep process write one queue from threads of their own; delivery order is not send order."""
    from expt.sweep.sink import Sink

    sink = Sink(store, "expt", "order")
    trial = {"key": "fold-0/trial-0", "parent": "fold-0", "name": "trial-0", "status": "FINISHED",
             "tags": {"expt.sweep_id": "order", "expt.run_type": "trial"}, "metrics": {"inner_accuracy_mean": 0.9}}
    done = {"key": "fold-0", "parent": "sweep", "status": "FINISHED", "metrics": {"outer_accuracy": 0.8}}
    fold = {"key": "fold-0", "parent": "sweep", "name": "outer-fold-0", "status": "RUNNING",
            "tags": {"expt.sweep_id": "order", "expt.run_type": "outer_fold"}}
    sweep_open = {"key": "sweep", "name": "sweep-order", "status": "RUNNING",
                  "tags": {"expt.sweep_id": "order", "expt.run_type": "sweep"}}
    for msg in (trial, done, fold, sweep_open):  # exactly backwards
        sink.handle(msg)
    assert not sink.waiting
    runs = {r.data.tags["expt.run_type"]: r for r in all_runs(store)}
    assert runs["trial"].data.tags["mlflow.parentRunId"] == runs["outer_fold"].info.run_id
    assert runs["outer_fold"].data.tags["mlflow.parentRunId"] == runs["sweep"].info.run_id
    assert runs["outer_fold"].info.status == "FINISHED" and runs["outer_fold"].data.metrics["outer_accuracy"] == 0.8
