"""Three machines' worth of `expt sweep` on PostgreSQL and an mlflow server; one is killed mid-trial."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from helpers import EXPT
from mlflow import MlflowClient

from expt.sweep.storage import ERROR, RESULT, RETRY_ATTR, SURPLUS, WORKER_ATTR, open_storage

pytestmark = [pytest.mark.pg, pytest.mark.slow]
UNITS = ("fold-0", "fold-1", "final")
N_TRIALS = 5


def studies(storage_url: str, sweep_id: str) -> dict[str, optuna.Study]:
    storage = open_storage(storage_url)
    names = {s.study_name for s in storage.get_all_studies()}
    return {u: optuna.load_study(study_name=f"{sweep_id}/{u}", storage=storage)
            for u in UNITS if f"{sweep_id}/{u}" in names}


def test_three_workers_share_one_sweep_and_survive_one_killed_mid_trial(postgres, mlflow_server: str,
                                                                         tmp_path: Path) -> None:
    storage = postgres.create_database("sweep_kill")
    env = {**os.environ, "EXPT_HEARTBEAT_SECONDS": "1"}  # a dead worker's trial is stale after 3 s
    command = [EXPT, "sweep", "data=digits", "model=random_forest", "search.outer_folds=2", "search.inner_folds=2",
               f"search.n_trials={N_TRIALS}", "search.sampler=random", f"tracking.uri={mlflow_server}",
               "tracking.experiment=pg-kill", "--storage", storage, "--sweep-id", "k3"]
    machines = [tmp_path / f"machine{i}" for i in range(3)]
    procs = []
    for home in machines:
        home.mkdir()
        procs.append(subprocess.Popen(command, cwd=home, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    victim = procs[1]
    victim_id = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and victim_id is None:
        time.sleep(0.3)
        try:
            running = [t for s in studies(storage, "k3").values() for t in s.get_trials(deepcopy=False)
                       if t.state.name == "RUNNING" and t.params
                       and t.user_attrs.get(WORKER_ATTR, "").endswith(f":{victim.pid}")]
        except Exception:  # noqa: BLE001, S112 - the studies are still being created
            continue
        if running:
            victim_id = running[0].user_attrs[WORKER_ATTR]
            os.killpg(victim.pid, signal.SIGKILL)  # the machine dies: its worker and its MLflow sink
    assert victim_id is not None, "the kill must land mid-trial"
    victim.wait()
    survivors = [procs[0], procs[2]]
    outs = [p.communicate(timeout=600) for p in survivors]
    assert [p.returncode for p in survivors] == [0, 0], [err[-3000:] for _, err in outs]

    # Optuna: every budget met exactly, trial numbers unique, the killed trial failed and re-run elsewhere.
    found = studies(storage, "k3")
    killed = []
    for unit, study in found.items():
        trials = study.get_trials(deepcopy=False)
        assert len({t.number for t in trials}) == len(trials)
        assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == N_TRIALS, unit
        assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
        for t in trials:
            if t.state.name == "FAIL" and not t.user_attrs.get(SURPLUS):
                assert t.user_attrs[WORKER_ATTR] == victim_id and "no heartbeat" in t.user_attrs[ERROR]
                killed.append((unit, t))
    assert len(killed) == 1
    unit, dead = killed[0]
    (retry,) = [t for t in found[unit].trials if t.user_attrs.get(RETRY_ATTR) == dead.number]
    # The kill may land between two suggestions: the retry runs every value the dead trial had
    # chosen and samples the ones it had not reached.
    assert dead.params.items() <= retry.params.items() and retry.state.name == "COMPLETE"
    assert retry.user_attrs[WORKER_ATTR] != victim_id

    # MLflow on the server: one tree, every run ended, every trial once under its fold.
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("pg-kill")
    runs = client.search_runs([experiment.experiment_id], "tags.`expt.sweep_id` = 'k3'", max_results=1000)
    assert "RUNNING" not in {r.info.status for r in runs}
    by_key = collections.defaultdict(list)
    for r in runs:
        by_key[r.data.tags["expt.key"]].append(r)
    assert max(len(v) for v in by_key.values()) == 1, "no run is logged twice"
    run = {k: v[0] for k, v in by_key.items()}
    assert run["sweep"].info.status == "FINISHED"
    for u in UNITS:
        assert run[u].data.tags["mlflow.parentRunId"] == run["sweep"].info.run_id and run[u].info.status == "FINISHED"
    logged = sorted(k for k in run if "/" in k)
    expected = sorted(f"{u}/trial-{t.number}" for u, s in found.items() for t in s.trials
                      if t.state.name != "FAIL" or not t.user_attrs.get(SURPLUS))
    assert logged == expected
    for key in logged:
        assert run[key].data.tags["mlflow.parentRunId"] == run[key.split("/")[0]].info.run_id
    assert run[f"{unit}/trial-{dead.number}"].info.status == "FAILED"
    for u in ("fold-0", "fold-1"):
        assert run[u].data.metrics["outer_accuracy"] == found[u].user_attrs[RESULT]["outer_score"]

    # One machine closed the sweep and appended its records; the password never left the URL.
    assert sum((home / "records.jsonl").exists() for home in machines) == 1
    assert postgres.password not in "".join(out + err for out, err in outs)
    assert not [r for r in runs if any(postgres.password in str(v) for v in r.data.params.values())]
