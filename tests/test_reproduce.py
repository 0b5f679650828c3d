"""`expt rerun`, `runs`, `show`, `compare`, `ui` against real SQLite stores."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import EXPT, all_runs, train
from mlflow import MlflowClient
from servers import free_port, server_env
from typer.testing import CliRunner

from expt.cli import app


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def top_level(store: str) -> list:
    return [r for r in all_runs(store) if r.data.tags.get("expt.run_type") in ("train", "sweep")]


def fold_scores(store: str, run_id: str) -> dict[str, float]:
    return {r.info.run_name: r.data.metrics["accuracy"] for r in all_runs(store)
            if r.data.tags.get("mlflow.parentRunId") == run_id}


def test_rerun_reproduces_every_fold_score_and_is_tagged(store: str) -> None:
    original = train(store, "data=wine", "model=random_forest", "model.estimator.n_estimators=30", "learner=quick",
                     "learner.metrics=[accuracy]")
    result = run_cli("rerun", original.run_id, "--tracking-uri", store, "--check")
    assert result.exit_code == 0, result.output
    # mean, std, three folds, and the final model's predictions and class probabilities
    assert "all 9 results match exactly" in result.output and "only the rerun" not in result.output
    (new,) = [r for r in top_level(store) if r.info.run_id != original.run_id]
    assert new.data.tags["expt.rerun_of"] == original.run_id
    assert fold_scores(store, new.info.run_id) == fold_scores(store, original.run_id)
    assert "dataset fingerprint" in result.output and "changed" not in result.output.split("results:")[0].replace(
        "what changed", "")


def test_rerun_compares_what_the_logged_run_has_and_lists_what_it_lacks(store: str) -> None:
    # A run logged with one metric (or by an older expt), rerun with more: the new ones cannot have drifted.
    original = train(store, "data=iris", "model=knn", "learner=quick", "learner.metrics=[accuracy]")
    result = run_cli("rerun", original.run_id, "learner.metrics=[accuracy,f1_macro]", "--tracking-uri", store,
                     "--check")
    assert result.exit_code == 0, result.output
    assert "all 9 results match exactly" in result.output
    assert "results only the rerun logged, not compared: f1_macro_mean" in " ".join(result.output.split())


def test_rerun_with_a_change_reports_the_difference(store: str) -> None:
    original = train(store, "data=wine", "model=svm", "learner=quick")
    result = run_cli("rerun", original.run_id, "model.estimator.C=0.01", "--tracking-uri", store, "--check")
    assert result.exit_code == 1 and "results differ" in result.output and "unexpected" not in result.output
    (new,) = [r for r in top_level(store) if r.info.run_id != original.run_id]
    assert new.data.params["model.estimator.C"] == "0.01"


def test_every_run_logs_its_environment(store: str, tmp_path: Path) -> None:
    result = train(store, "data=iris", "model=knn", "learner=quick")
    path = MlflowClient(tracking_uri=store).download_artifacts(result.run_id, "environment.txt", str(tmp_path))
    lock = Path(path).read_text()
    assert lock.startswith("# python ") and "scikit_learn==" in lock and "mlflow==" in lock


def test_a_tampered_config_with_a_disallowed_target_is_refused(store: str) -> None:
    original = train(store, "data=iris", "model=knn", "learner=quick")
    client = MlflowClient(tracking_uri=store)
    text = Path(client.download_artifacts(original.run_id, "config.yaml")).read_text()
    assert "_target_: sklearn.neighbors.KNeighborsClassifier" in text
    client.log_text(original.run_id, text.replace("sklearn.neighbors.KNeighborsClassifier", "os.system"), "config.yaml")
    before = len(all_runs(store))
    result = run_cli("rerun", original.run_id, "--tracking-uri", store)
    assert result.exit_code == 2 and "is not allowed" in result.output, result.output
    assert "Traceback" not in result.output and len(all_runs(store)) == before


def test_a_changed_data_file_is_drift_that_stops_the_rerun(store: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(90, 3)), columns=list("abc")).assign(y=lambda f: np.where(f.a > 0, "p", "n"))
    csv = tmp_path / "data.csv"
    table.to_csv(csv, index=False)
    original = train(store, "data=file", f"data.path={csv}", "data.target=y", "model=knn", "learner=quick")
    table.loc[0, "b"] = 99.0
    table.to_csv(csv, index=False)
    before = len(all_runs(store))
    result = run_cli("rerun", original.run_id, "--tracking-uri", store)
    assert result.exit_code == 2 and "changed (fingerprint" in result.output and "--allow-data-drift" in result.output
    assert len(all_runs(store)) == before
    allowed = run_cli("rerun", original.run_id, "--tracking-uri", store, "--allow-data-drift")
    assert allowed.exit_code == 0, allowed.output
    assert "changed" in allowed.output  # the drift table marks the fingerprint


def test_compare_shows_the_changed_parameter(store: str) -> None:
    a = train(store, "data=wine", "model=svm", "learner=quick")
    b = train(store, "data=wine", "model=svm", "model.estimator.C=10", "learner=quick")
    result = run_cli("compare", a.run_id, b.run_id, "--tracking-uri", store, "--json")
    assert result.exit_code == 0, result.output
    diff = json.loads(result.output)
    assert diff["params"] == [{"key": "model.estimator.C", "a": "1.0", "b": "10"}]
    accuracy = next(m for m in diff["metrics"] if m["key"] == "accuracy_mean")
    assert accuracy["diff"] == pytest.approx(b.cv.mean - a.cv.mean)
    table = run_cli("compare", a.run_id, b.run_id, "--tracking-uri", store)
    assert table.exit_code == 0 and "model.estimator.C" in table.output


def test_runs_lists_filters_and_sorts(store: str) -> None:
    knn = train(store, "data=iris", "model=knn", "learner=quick")
    svm = train(store, "data=iris", "model=svm", "learner=quick")
    train(store, "data=wine", "model=knn", "learner=quick")
    listed = json.loads(run_cli("runs", "--tracking-uri", store, "--json").output)
    assert len(listed) == 3 and all(r["type"] == "train" for r in listed)
    iris = json.loads(run_cli("runs", "--tracking-uri", store, "--data", "iris", "--sort", "accuracy_mean",
                              "--json").output)
    best_first = sorted([knn, svm], key=lambda r: -r.cv.mean)
    assert [r["run_id"] for r in iris] == [r.run_id for r in best_first]
    with_folds = json.loads(run_cli("runs", "--tracking-uri", store, "--all", "--limit", "100", "--json").output)
    assert len(with_folds) == 3 + 9
    bad = run_cli("runs", "--tracking-uri", store, "--sort", "acuracy_mean")
    assert bad.exit_code == 2 and "accuracy_mean" in bad.output


def test_runs_headline_the_selecting_metric_among_the_defaults(store: str) -> None:
    # Regression logs r2, RMSE and MAE; "neg_mean_absolute_error" sorts first, r2 is what selects.
    train(store, "data=diabetes", "model=knn", "learner=quick")
    (listed,) = json.loads(run_cli("runs", "--tracking-uri", store, "--json").output)
    assert listed["metric"] == "r2_mean"


def test_show_has_config_metrics_and_fold_scores(store: str) -> None:
    result = train(store, "data=iris", "model=knn", "learner=quick")
    shown = json.loads(run_cli("show", result.run_id, "--tracking-uri", store, "--json").output)
    assert shown["params"]["model.estimator.n_neighbors"] == "5" and shown["metric"] == "accuracy_mean"
    assert [f["scores"]["accuracy"] for f in shown["folds"]] == pytest.approx(result.cv.scores)
    assert shown["children"] == {"fold": {"FINISHED": 3}}
    assert run_cli("show", result.run_id, "--tracking-uri", store).exit_code == 0


def test_sweep_rerun_reproduces_the_outer_scores(store: str, tmp_path: Path) -> None:
    from expt.core.config import compose
    from expt.sweep.runner import SweepOptions, run_sweep

    composed = compose(["data=iris", "model=knn", "search.outer_folds=2", "search.inner_folds=2",
                        "search.n_trials=3", f"tracking.uri={store}"])
    run_sweep(composed, SweepOptions(sweep_id="orig", storage=str(tmp_path / "o.journal")))
    (original,) = top_level(store)
    result = run_cli("rerun", original.info.run_id, "--tracking-uri", store, "--check")
    assert result.exit_code == 0, result.output
    sweeps = [r for r in top_level(store) if r.data.tags["expt.run_type"] == "sweep"]
    assert len(sweeps) == 2
    new = next(r for r in sweeps if r.info.run_id != original.info.run_id)
    assert new.data.tags["expt.rerun_of"] == original.info.run_id
    assert new.data.metrics["outer_accuracy_mean"] == original.data.metrics["outer_accuracy_mean"]


def test_a_fold_id_reruns_its_train_run(store: str) -> None:
    original = train(store, "data=iris", "model=knn", "learner=quick")
    fold = next(r for r in all_runs(store) if r.data.tags.get("mlflow.parentRunId") == original.run_id)
    result = run_cli("rerun", fold.info.run_id, "--tracking-uri", store)
    assert result.exit_code == 0 and original.run_id in result.output


def test_bad_input_is_one_line(store: str) -> None:
    client = MlflowClient(tracking_uri=store)
    bare = client.create_run(client.create_experiment("other")).info.run_id
    client.set_tag(bare, "expt.run_type", "train")
    cases = [
        (["rerun", "0123456789abcdef0123456789abcdef", "--tracking-uri", store], 2, "no run '0123456789abcdef"),
        (["show", "nope", "--tracking-uri", store], 2, "no run 'nope'"),
        (["rerun", bare, "--tracking-uri", store], 2, "has no config.yaml artifact"),
        (["runs", "--tracking-uri", "sqlite:///no/such/mlruns.db"], 2, "no MLflow store at"),
        (["runs", "--tracking-uri", "http://bob:pw@127.0.0.1:9"], 1, "cannot reach the MLflow tracking server"),
        (["runs", "--tracking-uri", store, "--experiment", "nope"], 2, "no experiment 'nope'"),
        (["ui", "--tracking-uri", "sqlite:///no/such/mlruns.db"], 2, "no MLflow store at"),
    ]
    for args, code, expected in cases:
        result = run_cli(*args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == code and len(lines) == 1 and expected in lines[0], (args, result.output)
        assert "pw@" not in result.output


@pytest.mark.slow
def test_ui_serves_the_store(store: str, tmp_path: Path) -> None:
    import urllib.request

    train(store, "data=iris", "model=knn", "learner=quick")
    port = free_port()
    proc = subprocess.Popen([EXPT, "ui", "--tracking-uri", store, "--port", str(port)], cwd=tmp_path,
                            env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, body = time.monotonic() + 90, None
        while time.monotonic() < deadline and body is None:
            try:
                url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10"
                body = json.loads(urllib.request.urlopen(url, timeout=5).read())
            except OSError:
                time.sleep(1)
        assert body is not None, "the UI did not answer"
        assert "expt" in {e["name"] for e in body["experiments"]}
    finally:
        proc.terminate()
        proc.wait(30)
