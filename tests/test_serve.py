"""From a run to a served model: complete requirements, `expt register` (SQLite and a tracking server),
`expt predict` with its column checks, and `mlflow models serve` answering over HTTP what `expt predict` says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from helpers import EXPT, train
from servers import free_port, start_mlflow_server

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
NO_EXTRAS = ["learner=quick", "tracking.plots=false", "tracking.records=null"]
MLP = ["model=mlp", "model.estimator.max_epochs=5", "model.estimator.hidden_sizes=[16]",
       "model.estimator.patience=null"]


def expt(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXPT, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def requirements(uri: str, run_id: str, tmp_path: Path) -> list[str]:
    from mlflow import MlflowClient

    path = MlflowClient(tracking_uri=uri).download_artifacts(run_id, "model/requirements.txt", str(tmp_path))
    return [line.split("==")[0] for line in Path(path).read_text().split()]


def new_data(result, path: Path, rows: int = 25) -> pd.DataFrame:
    """Rows of the run's dataset as a user's new file: the input columns and the target too (left out)."""
    data = result.prepared.dataset
    table = data.X.iloc[::max(1, data.n_rows // rows)].head(rows).reset_index(drop=True)
    table.assign(**{data.target: data.y[::max(1, data.n_rows // rows)][:rows]}).to_csv(path, index=False)
    return table


@pytest.mark.parametrize(("args", "needs", "not_needed"), [
    (["data=iris", "model=logistic_regression"], {"scikit-learn", "cloudpickle"}, {"torch", "expt-runner", "skops"}),
    (["data=iris", *MLP], {"scikit-learn", "cloudpickle", "torch", "expt-runner"}, {"skops"}),
    (["data=digits", "model=cnn", "model.estimator.max_epochs=2", "model.estimator.patience=null"],
     {"scikit-learn", "torch", "expt-runner"}, {"skops"}),
    (["data=iris", "model=random_forest", "tracking.model_format=skops"], {"scikit-learn", "skops"},
     {"cloudpickle", "torch", "expt-runner"}),
], ids=["sklearn", "torch-mlp", "torch-cnn", "skops"])
def test_logged_requirements_are_complete_for_every_model_kind(store: str, tmp_path: Path, args: list[str],
                                                               needs: set[str], not_needed: set[str]) -> None:
    result = train(store, *args, *NO_EXTRAS)
    listed = set(requirements(store, result.run_id, tmp_path))
    assert needs <= listed and not (not_needed & listed), listed
    table = new_data(result, tmp_path / "new.csv", rows=10)  # and the model loads and predicts from the store
    done = expt("predict", "--model", result.run_id, "new.csv", "--tracking-uri", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(pd.io.common.StringIO(done.stdout))) == len(table)


def test_register_predict_and_the_column_checks(store: str, tmp_path: Path) -> None:
    result = train(store, "data=breast_cancer", "model=logistic_regression", *NO_EXTRAS)
    table = new_data(result, tmp_path / "new.csv")
    done = expt("register", result.run_id, "--name", "cancer", "--alias", "champion", "-u", store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "registered cancer version 1 as @champion" in done.stdout
    again = expt("register", f"runs:/{result.run_id}/model", "--name", "cancer", "-u", store, cwd=tmp_path)
    assert "registered cancer version 2" in again.stdout
    outputs = {}
    for ref in ("models:/cancer@champion", "models:/cancer/2", f"runs:/{result.run_id}/model", result.run_id):
        done = expt("predict", "--model", ref, "new.csv", "--out", "p.csv", "--proba", "-u", store, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "left out 1 column(s) the model does not take: target" in done.stderr
        outputs[ref] = pd.read_csv(tmp_path / "p.csv")
    first = outputs["models:/cancer@champion"]
    assert all(o.equals(first) for o in outputs.values())
    assert list(first.columns) == ["prediction", "proba_0", "proba_1"] and len(first) == len(table)
    model = result.prepared.pipeline.fit(result.prepared.dataset.X, result.prepared.dataset.y)
    assert (first["prediction"].to_numpy() == model.predict(table)).all()

    from mlflow import MlflowClient

    version = MlflowClient(tracking_uri=store).get_model_version_by_alias("cancer", "champion")
    assert str(version.version) == "1" and version.run_id == result.run_id
    assert version.tags["expt.run_id"] == result.run_id and version.tags["expt.data"] == "breast_cancer"


@pytest.mark.slow
def test_register_and_predict_through_a_tracking_server(tmp_path: Path) -> None:
    """The registry of an `mlflow server` (SQLite behind it here): the same commands, --tracking-uri http://..."""
    server = start_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server")
    try:
        result = train(server.url, "data=iris", "model=knn", *NO_EXTRAS)
        new_data(result, tmp_path / "new.csv")
        done = expt("register", result.run_id, "--name", "iris-knn", "--alias", "champion", "-u", server.url,
                    cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        done = expt("predict", "--model", "models:/iris-knn@champion", "new.csv", "-u", server.url, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert len(pd.read_csv(pd.io.common.StringIO(done.stdout))) == 25
    finally:
        server.stop()


def _wait_until_serving(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"mlflow models serve did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _invoke(url: str, table: pd.DataFrame) -> list:
    body = json.dumps({"dataframe_split": json.loads(table.to_json(orient="split", index=False))}).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["predictions"]


@pytest.mark.slow
@pytest.mark.parametrize("args", [["data=iris", "model=logistic_regression"], ["data=breast_cancer", *MLP]],
                         ids=["scikit-learn", "torch-mlp"])
def test_mlflow_models_serve_answers_what_expt_predict_says(store: str, tmp_path: Path, args: list[str]) -> None:
    """`mlflow models serve --env-manager local` on loopback, from the logged model alone."""
    result = train(store, *args, *NO_EXTRAS)
    table = new_data(result, tmp_path / "new.csv")
    done = expt("predict", "--model", f"runs:/{result.run_id}/model", "new.csv", "-o", "p.csv", "-u", store,
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = pd.read_csv(tmp_path / "p.csv")["prediction"].tolist()
    served = served_predictions(store, result.run_id, table, tmp_path)
    assert served == expected and len(served) == len(table)


def served_predictions(store: str, run_id: str, table: pd.DataFrame, cwd: Path) -> list:
    """What `mlflow models serve` of a run's logged model answers for ``table``; the server is stopped after."""
    port = free_port()
    log = cwd / "serve.log"
    # As from an activated virtualenv: MLflow execs `uvicorn` by name.
    env = {**os.environ, "MLFLOW_TRACKING_URI": store,
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    with log.open("wb") as out:
        proc = subprocess.Popen([MLFLOW, "models", "serve", "-m", f"runs:/{run_id}/model", "--env-manager",
                                 "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=cwd,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_serving(url, proc, log)
        return _invoke(url, table)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
