"""A train run's writes in a process of its own (expt.train.process): the same run tree as when this process
writes it, nothing written for bad input, no process left behind, and a dead writer is one line."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
from helpers import all_runs, long_train_until_running
from typer.testing import CliRunner

from expt.cli import app

VOLATILE_TAGS = {"mlflow.parentRunId", "expt.dataset_fingerprint"}  # ids differ; the rest must not


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _tree(store: str, tmp_path: Path) -> dict:
    """What a user sees of the run tree, without ids and times: every run's params, metrics, tags, artifacts."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store)

    def artifacts(run_id: str, path: str | None = None) -> list[str]:
        out = []
        for a in client.list_artifacts(run_id, path):
            out.extend(artifacts(run_id, a.path) if a.is_dir else [a.path])
        return sorted(out)

    runs = {}
    for r in all_runs(store):
        name = r.info.run_name if r.data.tags["expt.run_type"] == "fold" else "parent"
        runs[name] = {"status": r.info.status, "params": r.data.params, "metrics": r.data.metrics,
                      "tags": {k: v for k, v in r.data.tags.items() if k not in VOLATILE_TAGS},
                      "artifacts": artifacts(r.info.run_id)}
    parent = next(r for r in all_runs(store) if r.data.tags["expt.run_type"] == "train")
    record = json.loads(Path(client.download_artifacts(parent.info.run_id, "records.jsonl", str(tmp_path)))
                        .read_text())
    assert record["id"] == f"train/{parent.info.run_id}" and record["source"]["run_id"] == parent.info.run_id
    assert record["source"]["experiment_id"] == parent.info.experiment_id
    return {"runs": runs, "record": {k: v for k, v in record.items() if k not in ("id", "created", "source")}}


def test_the_writer_process_and_this_process_write_the_same_run_tree(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from expt.train.writer import MODE_ENV

    trees = {}
    for mode in ("side", "inline"):
        folder = tmp_path / mode
        folder.mkdir()
        monkeypatch.chdir(folder)
        monkeypatch.setenv(MODE_ENV, mode)
        result = run_cli("train", "data=wine", "model=knn", "learner=quick")
        assert result.exit_code == 0, result.output
        trees[mode] = _tree(f"sqlite:///{folder / 'mlruns.db'}", folder)
        lines = (folder / "records.jsonl").read_text().splitlines()  # the record reached the records file too
        assert len(lines) == 1 and json.loads(lines[0])["scores"] == trees[mode]["record"]["scores"]
    side, inline = trees["side"], trees["inline"]
    assert set(side["runs"]) == {"parent", "fold-0", "fold-1", "fold-2"}
    for name in side["runs"]:
        for key in ("status", "params", "tags", "artifacts"):
            assert side["runs"][name][key] == inline["runs"][name][key], (name, key)
        timing = {"fit_time", "score_time", "fit_time_mean"}
        assert {k: v for k, v in side["runs"][name]["metrics"].items() if k not in timing} == \
               {k: v for k, v in inline["runs"][name]["metrics"].items() if k not in timing}, name
    assert "model/MLmodel" in side["runs"]["parent"]["artifacts"]
    assert "plots/roc_curve.png" in side["runs"]["parent"]["artifacts"]
    side["record"].pop("fit_seconds")
    inline["record"].pop("fit_seconds")
    assert side["record"] == inline["record"]


def test_bad_input_writes_nothing_and_leaves_no_writer_behind(store: str, tmp_path: Path, writer_mode: str) -> None:
    """The writer starts before the config is composed; a typo ends it at once, with nothing written."""
    started = time.monotonic()
    result = run_cli("train", "model=svn", f"tracking.uri={store}")
    assert result.exit_code == 2 and result.stderr.startswith("error: unknown model 'svn'")
    assert time.monotonic() - started < 10  # not held by a writer still importing MLflow
    assert all_runs(store) == [] and not (tmp_path / "records.jsonl").exists()
    assert multiprocessing.active_children() == []


def _started(pid: int) -> list[int]:
    """The processes ``pid`` started (forked or spawned), not multiprocessing's resource tracker."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = [int(p) for p in path.read_text().split()] if path.exists() else []
    return [c for c in children if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.slow
def test_a_writer_killed_mid_run_is_one_line_and_the_command_stops(store: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL of the writer process (the OOM killer's choice, say): the command says so in one line and exits 1
    instead of waiting for writes that will never be made, and ends the run the writer left RUNNING FAILED."""
    from expt.train.writer import MODE_ENV

    monkeypatch.setenv(MODE_ENV, "side")
    proc = long_train_until_running(store, tmp_path, trees=400)
    time.sleep(1.0)  # the writer has told the command the run's id (it does so right after creating the run)
    writers = _started(proc.pid)
    assert len(writers) == 1, writers  # the writer; the evaluation runs in a thread beside it
    os.kill(writers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: the MLflow writer process exited with code -9"), err
    assert "Traceback" not in err
    runs = all_runs(store)
    parent = [r for r in runs if r.data.tags["expt.run_type"] == "train"]
    assert len(parent) == 1 and parent[0].info.status == "FAILED"
    assert "RUNNING" not in {r.info.status for r in runs}
