"""Many processes on one sweep: heartbeats, run claims, joining, and `expt sweep --status`."""

from __future__ import annotations

import collections
import json
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from helpers import EXPT, all_runs
from typer.testing import CliRunner

from expt.cli import app
from expt.sweep.coordination import heartbeat, reap_stale, worker_id
from expt.sweep.storage import RETRY_ATTR, WORKER_ATTR, open_storage

UNITS = ("fold-0", "fold-1", "final")


def test_a_trial_whose_heartbeat_stops_is_failed_and_its_configuration_queued_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPT_HEARTBEAT_SECONDS", "1")  # stale after 3 s without a beat
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    alive = study.ask()
    alive.suggest_float("x", 0, 1)
    dead = study.ask()
    x = dead.suggest_float("x", 0, 1)
    with heartbeat(study, dead):
        pass  # one beat, then the "worker" is gone
    with heartbeat(study, alive):
        time.sleep(4)
        assert reap_stale(study, "gone") and not reap_stale(study, "gone")  # reaped once, by one process
    states = {t.number: t.state.name for t in study.trials}
    assert states[alive.number] == "RUNNING" and states[dead.number] == "FAIL"
    assert study.trials[dead.number].user_attrs["expt.error"] == "gone"
    retried = study.ask()  # the next trial a worker gets is the dead one's configuration
    assert retried.suggest_float("x", 0, 1) == x and retried.user_attrs[RETRY_ATTR] == dead.number


def sweep_cmd(store: str, storage: str, sweep_id: str, *extra: str) -> list[str]:
    return [EXPT, "sweep", "data=breast_cancer", "model=knn", "search.outer_folds=2", "search.inner_folds=2",
            "search.n_trials=6", f"tracking.uri={store}", "--storage", storage, "--sweep-id", sweep_id, *extra]


# A k-NN whose fits wait, once, for the other invocation: a process that reaches its first fit (in its first trial)
# leaves a file named by its pid in the folder EXPT_TEST_BARRIER names and goes on only once two processes have,
# so neither can run all 18 trials before the other has started one, however late it starts on a loaded machine.
# Past 240 s it goes on alone (the test then fails on the workers seen, not on a timeout).
BARRIER_KNN = """
import os, time
from pathlib import Path

from sklearn.neighbors import KNeighborsClassifier


class BarrierKNN(KNeighborsClassifier):
    def fit(self, X, y):
        folder = Path(os.environ["EXPT_TEST_BARRIER"])
        (folder / str(os.getpid())).touch()
        deadline = time.monotonic() + 240
        while len(list(folder.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().fit(X, y)
"""


@pytest.mark.slow
def test_two_invocations_join_one_sweep_with_one_run_tree_and_one_set_of_records(store: str, tmp_path: Path) -> None:
    import os

    from expt.sweep.coordination import worker_id

    storage = str(tmp_path / "optuna.journal")
    (tmp_path / "barrier_knn.py").write_text(BARRIER_KNN)
    (tmp_path / "barrier").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "EXPT_TEST_BARRIER": str(tmp_path / "barrier")}
    command = sweep_cmd(store, storage, "joined", "model.estimator._target_=barrier_knn.BarrierKNN",
                        "--trust-target", "barrier_knn")
    procs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    workers = set()
    for unit in UNITS:
        study = optuna.load_study(study_name=f"joined/{unit}", storage=open_storage(storage))
        done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
        assert len(done) == 6
        workers |= {t.user_attrs[WORKER_ATTR] for t in done}
    assert workers == {worker_id(p.pid) for p in procs}  # both invocations ran trials of the one sweep
    runs = all_runs(store)
    assert {r.info.status for r in runs} == {"FINISHED"}
    keys = collections.Counter(r.data.tags["expt.key"] for r in runs)
    assert max(keys.values()) == 1 and len(keys) == 1 + 3 + 18
    ids = {r.data.tags["expt.key"]: r.info.run_id for r in runs}
    for r in runs:
        key = r.data.tags["expt.key"]
        parent = r.data.tags.get("mlflow.parentRunId")
        assert parent == (None if key == "sweep" else ids["sweep"] if "/" not in key else ids[key.split("/")[0]])
    records = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len(records) == len({json.loads(line)["id"] for line in records}) == 6  # appended once


def test_status_shows_each_study_and_the_workers_seen(store: str, tmp_path: Path) -> None:
    from expt.core.config import compose
    from expt.sweep.runner import SweepOptions, run_sweep

    storage = str(tmp_path / "optuna.journal")
    run_sweep(compose(["data=iris", "model=knn", "search.outer_folds=2", "search.inner_folds=2",
                       "search.n_trials=3", f"tracking.uri={store}"]), SweepOptions(sweep_id="st", storage=storage))
    result = CliRunner().invoke(app, ["sweep", "--status", "st", "--storage", storage, "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert [u["unit"] for u in status["units"]] == list(UNITS)
    assert all(u["complete"] + u["pruned"] == 3 and u["state"] == "done" for u in status["units"])
    assert all(u["outer"] is not None for u in status["units"][:2]) and status["finished"]
    assert [w["worker"] for w in status["workers"]] == [worker_id()]
    table = CliRunner().invoke(app, ["sweep", "--status", "st", "--storage", storage])
    assert "fold-1" in table.output and worker_id() in table.output
    missing = CliRunner().invoke(app, ["sweep", "--status", "nope", "--storage", storage])
    assert missing.exit_code == 2 and "no sweep 'nope'" in missing.output
    nowhere = CliRunner().invoke(app, ["sweep", "--status", "gone"])  # its default journal does not exist
    assert nowhere.exit_code == 2 and "no storage at" in nowhere.output and not Path("outputs").exists()


@pytest.mark.slow
def test_the_slurm_array_script_starts_a_worker_that_joins_the_sweep(store: str, tmp_path: Path) -> None:
    """SLURM itself cannot run here: `srun` is a stand-in that runs its command, as srun does on a node."""
    import os

    from helpers import ROOT

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "srun").chmod(0o755)
    storage = str(tmp_path / "optuna.journal")
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(EXPT).parent}:{os.environ['PATH']}", "EXPT_OPTUNA_URL": storage,
           "EXPT_TRACKING_URI": store, "SLURM_CPUS_PER_TASK": "2"}
    args = ["data=iris", "model=logistic_regression", "search.outer_folds=2", "search.inner_folds=2",
            "search.n_trials=3"]
    proc = subprocess.run(["bash", str(ROOT / "recipes" / "slurm" / "sweep_array.sbatch"), "slurm1", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for unit in UNITS:
        study = optuna.load_study(study_name=f"slurm1/{unit}", storage=open_storage(storage))
        assert sum(t.state.name == "COMPLETE" for t in study.trials) == 3
    assert {r.info.status for r in all_runs(store)} == {"FINISHED"}
