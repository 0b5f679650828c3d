"""Smoke tests on a real PostgreSQL (Optuna's RDB storage) and a real `mlflow server` backed by it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import EXPT
from servers import Postgres

pytestmark = pytest.mark.pg


def test_optuna_rdb_storage_on_postgres(postgres: Postgres) -> None:
    import optuna

    url = postgres.create_database("optuna_smoke")  # its own database: the shared `optuna` one is the sweeps'
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name="smoke", direction="minimize")
    study.optimize(lambda t: (t.suggest_float("x", -2, 2) - 1) ** 2, n_trials=3)
    storage.remove_session()
    storage.engine.dispose()

    loaded = optuna.load_study(study_name="smoke", storage=optuna.storages.RDBStorage(url))
    assert [t.state.name for t in loaded.trials] == ["COMPLETE"] * 3
    assert loaded.best_value == min(t.value for t in loaded.trials)
    assert {s.study_name for s in optuna.get_all_study_summaries(url)} == {"smoke"}


@pytest.mark.slow
def test_sweep_on_postgres_and_mlflow_server(postgres: Postgres, mlflow_server: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    done = subprocess.run(
        [EXPT, "sweep", "data=iris", "model=knn", "search.outer_folds=2", "search.inner_folds=2",
         "search.n_trials=3", f"tracking.uri={mlflow_server}", "--storage", postgres.optuna_url,
         "--sweep-id", "pgsmoke"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert postgres.password not in output

    client = MlflowClient(tracking_uri=mlflow_server)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string="tags.`expt.sweep_id` = 'pgsmoke'", max_results=1000)
    by_name = {}
    for run in runs:
        by_name.setdefault(run.info.run_name, []).append(run)
    sweeps = by_name.get("sweep-pgsmoke", [])
    assert len(sweeps) == 1, sorted(by_name)
    sweep = sweeps[0]
    assert sweep.info.status == "FINISHED"

    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    names = sorted(r.info.run_name for r in children)
    assert len(children) == 3 and names.count("final") == 1, names
    assert sum(n.startswith("outer-fold-") for n in names) == 2, names
    trials = [r for r in runs if r.info.run_name.startswith("trial-")]
    assert len(trials) == 9  # 3 studies (2 outer folds + final) x 3 trials
    assert {r.data.tags.get("mlflow.parentRunId") for r in trials} == {r.info.run_id for r in children}
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    for run in runs:
        leaked = {k: v for k, v in {**run.data.params, **run.data.tags}.items() if postgres.password in v}
        assert not leaked, (run.info.run_name, leaked)


@pytest.mark.slow
def test_a_sweep_stores_no_password_and_resumes_with_it_from_the_environment(postgres: Postgres,
                                                                             tmp_path: Path) -> None:
    """The tracking URI's password reaches MLflow, never the journal file (world-readable by default), the
    runs' params and tags, or the terminal; a resume takes it from MLFLOW_TRACKING_URI."""
    import os

    from mlflow import MlflowClient

    uri = postgres.create_database("mlflow_secret")
    journal = tmp_path / "optuna.journal"
    args = [EXPT, "sweep", "--sweep-id", "secret", "--storage", str(journal)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([*args, "data=iris", "model=knn", "search.outer_folds=2", "search.inner_folds=2",
                           "search.n_trials=1", "tracking.log_model=false", f"tracking.uri={uri}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert postgres.password not in done.stdout + done.stderr
    assert postgres.password.encode() not in journal.read_bytes()
    assert b":***@" in journal.read_bytes()
    runs = MlflowClient(tracking_uri=uri).search_runs(["0", "1"], max_results=100)
    assert runs and not any(postgres.password in v for r in runs for v in {**r.data.params, **r.data.tags}.values())

    refused = subprocess.run([*args[:2], "--resume", "secret", "--storage", str(journal)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600, check=False)
    assert refused.returncode == 2 and "set MLFLOW_TRACKING_URI" in refused.stderr
    assert refused.stderr.count("\n") == 1 and postgres.password not in refused.stderr
    resumed = subprocess.run([*args[:2], "--resume", "secret", "--storage", str(journal)], cwd=tmp_path,
                             env={**env, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True, timeout=600,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert postgres.password not in resumed.stdout + resumed.stderr


OPEN_AT = """
import sys, time
from expt.sweep.storage import open_storage
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all at once: each sees an empty database
open_storage(sys.argv[1])
print("opened")
"""


@pytest.mark.slow
def test_processes_opening_one_new_storage_at_once_all_open_it(postgres: Postgres, tmp_path: Path) -> None:
    """Sweep workers started together on an empty database each find no tables and create them; the second used
    to fail ('duplicate key value violates unique constraint "pg_type_typname_nsp_index"', seen on a sweep whose
    workers a Dask cluster started). Four real processes, released at the same instant, on a fresh database."""
    import sys
    import time

    url = postgres.create_database("storage_race")
    start = str(time.time() + 8)  # past every process's imports
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AT, url, start], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-500:] for _, err in outs]
    assert all(out.strip() == "opened" for out, _ in outs)


def test_trials_written_in_one_transaction_on_a_postgres_tracking_store(postgres: Postgres) -> None:
    """The sink's one-transaction path on an MLflow store in PostgreSQL (the tracking database of a team's
    `mlflow server`, opened directly): the same runs as MLflow's client writes, field for field."""
    from helpers import comparable, finished_runs_both_ways

    uri = postgres.create_database("mlflow_bulk")
    client_side, bulk_side = finished_runs_both_ways(uri)
    assert [comparable(*r) for r in bulk_side] == [comparable(*r) for r in client_side]
    assert {r.data.tags["side"] for r, _ in bulk_side} == {"bulk"}
