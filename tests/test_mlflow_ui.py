"""The `mlflow ui` command that `expt train` prints shows the run tree it wrote."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


@pytest.mark.slow
def test_mlflow_ui_serves_the_run_tree(store: str, tmp_path: Path) -> None:
    from expt.tracking.uri import ui_command

    result = train(store, "data=iris", "model=knn", "learner=quick", "tracking.log_model=false")
    port = _free_port()
    command = ui_command(result.uri).split()[1:]
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen([mlflow, *command, "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                runs = _post(f"{base}/runs/search", {"experiment_ids": [result.experiment_id]})["runs"]
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    by_id = {r["info"]["run_id"]: r for r in runs}
    assert result.run_id in by_id and len(runs) == 4
    parents = [{t["key"]: t["value"] for t in r["data"].get("tags", [])}.get("mlflow.parentRunId") for r in runs]
    assert parents.count(result.run_id) == 3
