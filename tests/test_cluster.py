"""Issue 25: grids and the knowledge-base build on a Dask cluster. A real `dask scheduler` and two `dask worker`
processes on loopback, an `mlflow server` the workers share (tests/fixtures/cluster.py); the commands run as a
user runs them, in subprocesses."""

from __future__ import annotations

import collections
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.cluster import Cluster, start_worker
from helpers import EXPT

pytestmark = pytest.mark.slow
FAST = ("learner=quick", "tracking.log_model=false", "tracking.plots=false")


def runs_of(uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=10_000) if found else []


def cells(runs: list) -> dict[str, tuple[float, str]]:
    """Cell -> (accuracy_mean, folds hash) of its FINISHED train run; every cell once."""
    done = [r for r in runs if r.data.tags.get("expt.run_type") == "train" and r.info.status == "FINISHED"]
    keys = [r.data.tags["expt.grid.cell"] for r in done]
    assert len(keys) == len(set(keys)), keys
    return {r.data.tags["expt.grid.cell"]: (r.data.metrics["accuracy_mean"], r.data.tags["expt.folds_hash"])
            for r in done}


def test_a_2x2_grid_on_the_cluster_scores_as_the_local_grid(dask_cluster: Cluster, tmp_path: Path) -> None:
    grid = ["-m", "data=iris,wine", "model=logistic_regression,knn", *FAST]
    on_cluster = subprocess.run([EXPT, "train", *grid, f"tracking.uri={dask_cluster.tracking}",
                                 "tracking.experiment=grid-cluster", "--cluster", dask_cluster.address],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert on_cluster.returncode == 0, on_cluster.stderr
    assert "cells run 4, failed 0" in on_cluster.stdout
    local = subprocess.run([EXPT, "train", *grid, f"tracking.uri={dask_cluster.tracking}",
                            "tracking.experiment=grid-local", "--workers", "2"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr
    remote, here = cells(runs_of(dask_cluster.tracking, "grid-cluster")), cells(runs_of(dask_cluster.tracking,
                                                                                        "grid-local"))
    assert len(remote) == 4 and remote.keys() == here.keys()
    for key, (score, folds) in remote.items():
        assert folds == here[key][1]  # the same folds
        assert score == pytest.approx(here[key][0], rel=1e-9)  # the same scores (tolerance: another CPU's BLAS)
    runs = runs_of(dask_cluster.tracking, "grid-cluster")
    assert "RUNNING" not in {r.info.status for r in runs}
    assert [r.info.status for r in runs if r.data.tags.get("expt.run_type") == "grid"] == ["FINISHED"]


def test_a_worker_killed_mid_cell_leaves_one_finished_run_per_cell(dask_cluster: Cluster, tmp_path: Path) -> None:
    """The worker process running a cell is SIGKILLed while the cell runs: Dask runs the cell again on a worker
    (the nanny restarts the killed one), the lost attempt's runs end KILLED, and the grid completes with exactly
    one FINISHED run per cell and none RUNNING."""
    experiment = "grid-killed"
    proc = subprocess.Popen([EXPT, "train", "-m", "data=digits,breast_cancer", "model=random_forest",
                             "model.estimator.n_estimators=600", "learner=quick", "tracking.log_model=false",
                             "tracking.plots=false", f"tracking.uri={dask_cluster.tracking}",
                             f"tracking.experiment={experiment}", "--cluster", dask_cluster.address],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim, deadline = None, time.monotonic() + 180  # the two cells start together, one on each worker
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        running = [r for r in runs_of(dask_cluster.tracking, experiment)
                   if r.data.tags.get("expt.run_type") == "train" and r.info.status == "RUNNING"]
        if len(running) == 2:  # both cells have their run: whichever worker dies, its cell's run is lost
            victim = _worker_running_a_cell(dask_cluster.address)
    assert victim is not None, "no cell was seen running"
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    runs = runs_of(dask_cluster.tracking, experiment)
    assert len(cells(runs)) == 2  # every cell once
    assert "RUNNING" not in {r.info.status for r in runs}
    killed = [r for r in runs if r.data.tags.get("expt.run_type") == "train" and r.info.status != "FINISHED"]
    assert killed and {r.info.status for r in killed} <= {"KILLED", "FAILED"}  # the lost attempt, ended
    dask_cluster.wait_for_workers(2)  # the nanny restarted it: the next test has both


def _worker_running_a_cell(address: str) -> int | None:
    """The pid of a Dask worker process that is running a grid cell (a one-thread worker runs it in its process)."""
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as client:
        busy = [w for w, tasks in client.processing().items() if any("expt-grid-" in str(t) for t in tasks)]
        pids = client.run(os.getpid, workers=busy) if busy else {}
    return next(iter(pids.values()), None)


def test_a_partial_knowledge_base_build_on_the_cluster_equals_the_local_build(dask_cluster: Cluster,
                                                                             tmp_path: Path) -> None:
    from expt.core.floats import differences

    def build(name: str, *extra: str) -> list[dict]:
        out = tmp_path / f"{name}.jsonl.gz"
        done = subprocess.run([sys.executable, "-m", "expt.kb", "--only", "iris", "--only", "airquality",
                               "--configs", "knn_5", "--configs", "ridge_a1", "--configs", "rf_default",
                               "--build", str(tmp_path / name), "--out", str(out), *extra],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr + done.stdout
        return [json.loads(line) for line in gzip.decompress(out.read_bytes()).splitlines()]

    remote = build("on-cluster", "--cluster", dask_cluster.address)
    local = build("local", "--workers", "2")
    assert len(remote) == len(local) == 6  # 2 datasets x 3 configurations

    def strip(r: dict) -> dict:
        return {k: v for k, v in r.items() if k not in ("created", "fit_seconds")}

    assert [differences(strip(a), strip(b)) for a, b in zip(remote, local, strict=True)] == [[]] * 6


@pytest.mark.parametrize(("args", "expected"), [
    (["tracking.uri=sqlite:///mlruns.db"], "is a store on this machine, which the cluster's workers cannot share"),
    (["tracking.uri=./mlruns"], "is a store on this machine, which the cluster's workers cannot share"),
])
def test_a_store_the_workers_cannot_share_is_refused_before_any_run(dask_cluster: Cluster, tmp_path: Path,
                                                                   args: list[str], expected: str) -> None:
    done = subprocess.run([EXPT, "train", "-m", "data=iris,wine", "model=knn", *FAST, *args,
                           "--cluster", dask_cluster.address], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written: no store, no outputs


def test_a_scheduler_that_does_not_answer_is_refused_in_one_line(tmp_path: Path, dask_cluster: Cluster,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from servers import free_port

    monkeypatch.setenv("EXPT_CLUSTER_TIMEOUT", "2")  # how long expt waits for an answer (default 10 s)

    nobody = f"tcp://127.0.0.1:{free_port()}"
    done = subprocess.run([EXPT, "train", "-m", "data=iris,wine", "model=knn", *FAST,
                           f"tracking.uri={dask_cluster.tracking}", "tracking.experiment=nobody", "--cluster", nobody],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"the Dask scheduler at {nobody} does not answer" in done.stderr and "Traceback" not in done.stderr
    assert runs_of(dask_cluster.tracking, "nobody") == []  # refused before the grid's run was opened
    kb = subprocess.run([sys.executable, "-m", "expt.kb", "--only", "iris", "--configs", "knn_5", "--build",
                         str(tmp_path / "kb"), "--out", str(tmp_path / "kb.jsonl.gz"), "--cluster", nobody],
                        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert kb.returncode != 0 and "does not answer" in kb.stderr and "Traceback" not in kb.stderr
    assert not (tmp_path / "kb.jsonl.gz").exists()


def test_a_sweep_grid_on_the_cluster_is_refused_before_any_run(dask_cluster: Cluster, tmp_path: Path) -> None:
    done = subprocess.run([EXPT, "sweep", "-m", "data=iris,wine", "model=knn", f"tracking.uri={dask_cluster.tracking}",
                           "tracking.experiment=sweep-grid", "--cluster", dask_cluster.address],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--cluster runs train grids" in done.stderr
    assert runs_of(dask_cluster.tracking, "sweep-grid") == []


@pytest.mark.parametrize(("change", "expected"), [
    ("edited", "1 of 3 Dask workers run other expt code than this client"),
    ("older", "cannot run this expt's code check"),  # an expt from before --cluster existed
])
def test_workers_running_other_expt_code_are_refused(dask_cluster: Cluster, tmp_path: Path, change: str,
                                                     expected: str) -> None:
    """A third worker whose expt differs (a copy of the package, first on its PYTHONPATH: one comment line added,
    or without the cluster module, as an older expt) joins the cluster: the grid is refused in one line naming
    it, before any run."""
    import shutil

    import expt

    copy = tmp_path / "other"
    shutil.copytree(Path(expt.__file__).resolve().parent, copy / "expt",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if change == "edited":
        with open(copy / "expt" / "grid" / "cells.py", "a") as fh:
            fh.write("# another version\n")
    else:
        (copy / "expt" / "grid" / "cluster.py").unlink()
    env = {**os.environ, "PYTHONPATH": str(copy)}
    stranger = start_worker(dask_cluster.address, dask_cluster.folder, "stranger", env)
    try:
        dask_cluster.wait_for_workers(3)
        done = subprocess.run([EXPT, "train", "-m", "data=iris,wine", "model=knn", *FAST,
                               f"tracking.uri={dask_cluster.tracking}", "tracking.experiment=stranger",
                               "--cluster", dask_cluster.address],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert runs_of(dask_cluster.tracking, "stranger") == []
    finally:
        os.killpg(stranger.pid, signal.SIGTERM)
        stranger.wait(timeout=30)


# A user's k-NN (trusted with --trust-target) whose first fit in a process waits, up to 2 minutes, until three
# processes have fitted: the sweep's own and its two workers on the cluster. Each process records its share in the
# sweep before its first trial, so all three are on record before any trial ends.
GATED_MODEL = """
import os
import time
from pathlib import Path

from sklearn.neighbors import KNeighborsClassifier

ARRIVED = Path(__file__).with_name("arrived")


class GatedKNN(KNeighborsClassifier):
    def fit(self, X, y):
        ARRIVED.mkdir(exist_ok=True)
        mine = ARRIVED / str(os.getpid())
        if not mine.exists():
            mine.touch()
            deadline = time.monotonic() + 120
            while len(list(ARRIVED.iterdir())) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        return super().fit(X, y)
"""


@pytest.mark.pg
def test_a_sweep_with_two_workers_started_on_the_cluster(dask_cluster: Cluster, postgres, tmp_path: Path) -> None:
    """`expt sweep --workers 2 --cluster ADDRESS` starts two sweep processes as Dask tasks; they join the sweep
    through its PostgreSQL storage with this one, and the sweep ends with every fold's budget met exactly, one run
    tree, no run RUNNING, and the three invocations on record.

    The model's first fit in each process waits until all three processes have come to one (GATED_MODEL): without
    that, this process could finish the 8 trials alone before the workers had started (seen once in CI), and a
    worker that joins a finished sweep rightly has no share in its tags."""
    storage = postgres.create_database("cluster_sweep")
    (tmp_path / "gatedmodels.py").write_text(GATED_MODEL)
    done = subprocess.run([EXPT, "sweep", "--trust-target", "gatedmodels", "data=iris", "model=knn",
                           "model.estimator._target_=gatedmodels.GatedKNN", "search.outer_folds=2",
                           "search.inner_folds=2", "search.n_trials=8", *FAST[1:],
                           f"tracking.uri={dask_cluster.tracking}", "tracking.experiment=cluster-sweep",
                           "--storage", storage, "--sweep-id", "on-dask", "--workers", "2",
                           "--cluster", dask_cluster.address],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "warning:" not in done.stderr  # both workers ended well
    runs = runs_of(dask_cluster.tracking, "cluster-sweep")
    assert "RUNNING" not in {r.info.status for r in runs}
    sweep_runs = [r for r in runs if r.data.tags.get("expt.run_type") == "sweep"]
    assert len(sweep_runs) == 1 and sweep_runs[0].info.status == "FINISHED"
    assert sweep_runs[0].data.tags["expt.sweep.workers"] == "1+1+1"  # this process and the two on the cluster
    trials = [r for r in runs if r.data.tags.get("expt.run_type") == "trial" and r.info.status == "FINISHED"]
    per_unit = collections.Counter(r.data.tags.get("expt.outer_fold") for r in trials)
    assert sorted(per_unit.values()) == [8, 8, 8], per_unit  # each fold's budget exactly, across the processes


def test_a_sweep_storage_the_workers_cannot_reach_is_refused(dask_cluster: Cluster, tmp_path: Path) -> None:
    for storage in ([], ["--storage", "sqlite:///optuna.db"], ["--storage", "sweeps/optuna.journal"]):
        done = subprocess.run([EXPT, "sweep", "data=iris", "model=knn", f"tracking.uri={dask_cluster.tracking}",
                               "tracking.experiment=unreachable", *storage, "--workers", "2", "--cluster",
                               dask_cluster.address], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert "which they cannot reach; pass --storage postgresql://" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())
    assert runs_of(dask_cluster.tracking, "unreachable") == []


def test_a_task_on_a_one_thread_worker_keeps_the_clients_trust_prefixes_to_itself(tmp_path: Path) -> None:
    """A one-thread worker runs cells in its own process: the trust prefixes, thread caps and working directory
    one task gets are put back after it, so a later task from a client that trusted nothing sees none of them (an
    attacker's config cannot ride on a previous client's --trust-target)."""
    from expt.core.build import TRUST_ENV
    from expt.grid.cluster import _in_this_process

    before = {k: os.environ.get(k) for k in (TRUST_ENV, "OMP_NUM_THREADS")}
    here = os.getcwd()
    trusted = _in_this_process(__name__, "_seen", {"key": "a"}, {TRUST_ENV: "mylib.models", "OMP_NUM_THREADS": "1",
                                                                  "EXPT_CELL_THREADS": "1"}, str(tmp_path))
    assert trusted == ("done", {"trust": "mylib.models", "cwd": str(tmp_path)})
    assert {k: os.environ.get(k) for k in before} == before and os.getcwd() == here
    later = _in_this_process(__name__, "_seen", {"key": "b"}, {"EXPT_CELL_THREADS": "1"}, str(tmp_path))
    assert later == ("done", {"trust": None, "cwd": str(tmp_path)})
    failed = _in_this_process(__name__, "_fails", {"key": "c"}, {TRUST_ENV: "x"}, str(tmp_path))
    assert failed[0] == "error" and "KeyError" in failed[1] and os.environ.get(TRUST_ENV) == before[TRUST_ENV]


def _seen(job: dict) -> dict:
    from expt.core.build import TRUST_ENV

    return {"trust": os.environ.get(TRUST_ENV), "cwd": os.getcwd()}


def _fails(job: dict) -> None:
    raise KeyError("boom")


def _task_keys(address: str, prefix: str) -> set[str]:
    """The keys of the tasks the scheduler saw whose name starts with ``prefix`` (its transition log)."""
    from distributed import Client

    def seen(dask_scheduler, prefix: str) -> list[str]:
        return sorted({str(entry[0]) for entry in dask_scheduler.transition_log if str(entry[0]).startswith(prefix)})

    with Client(address, timeout=30, set_as_default=False) as client:
        return set(client.run_on_scheduler(seen, prefix=prefix))


def test_a_probe_runs_its_candidates_on_the_cluster(dask_cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "wine.yaml").write_text("id: wine\n")
    done = subprocess.run([EXPT, "recommend", "wine.yaml", "--probe", "2", "learner=quick", "tracking.log_model=false",
                           "tracking.plots=false", f"tracking.uri={dask_cluster.tracking}",
                           "tracking.experiment=probe-cluster", "--cluster", dask_cluster.address],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "2 of 2 candidates tried" in " ".join(done.stdout.split())  # rich wraps at 80 columns
    runs = runs_of(dask_cluster.tracking, "probe-cluster")
    assert "RUNNING" not in {r.info.status for r in runs}
    trains = [r for r in runs if r.data.tags.get("expt.run_type") == "train" and r.info.status == "FINISHED"]
    assert sorted(r.data.tags["expt.probe.candidate"] for r in trains) == ["1", "2"]
    assert len(_task_keys(dask_cluster.address, "expt-probe-candidate=")) == 2  # each candidate was a Dask task
    refused = subprocess.run([EXPT, "recommend", "wine.yaml", "--cluster", dask_cluster.address], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--cluster and overrides are for a probe; add --probe K" in refused.stderr


def test_a_resumed_grid_does_not_run_a_cell_a_worker_still_runs(dask_cluster: Cluster, tmp_path: Path) -> None:
    """The client dies while its cells run on the workers, which go on (Dask cannot stop a running task). A resume
    then would run those cells a second time: it is refused in one line while they run, and once they end they
    count as done, so every cell has exactly one FINISHED run."""
    experiment = "grid-orphans"
    command = [EXPT, "train", "-m", "data=digits,breast_cancer", "model=random_forest",
               "model.estimator.n_estimators=2000", "learner=quick", "tracking.log_model=false", "tracking.plots=false",
               f"tracking.uri={dask_cluster.tracking}", f"tracking.experiment={experiment}"]
    proc = subprocess.Popen([*command, "--cluster", dask_cluster.address], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def running() -> list:
        return [r for r in runs_of(dask_cluster.tracking, experiment)
                if r.data.tags.get("expt.run_type") == "train" and r.info.status == "RUNNING"]

    deadline = time.monotonic() + 180
    while len(running()) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert len(running()) == 2, "the two cells were not seen running"
    proc.kill()
    proc.communicate(timeout=60)
    grid_id = next((tmp_path / "outputs" / "grids").iterdir()).name
    resume = [EXPT, "train", "-m", "--resume", grid_id, "--cluster", dask_cluster.address]
    refused = subprocess.run(resume, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert f"of grid {grid_id} still run on the cluster" in refused.stderr and "Traceback" not in refused.stderr
    deadline = time.monotonic() + 180
    while running() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not running(), "the workers did not finish the cells"
    resumed = subprocess.run(resume, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    runs = runs_of(dask_cluster.tracking, experiment)
    assert len(cells(runs)) == 2 and "RUNNING" not in {r.info.status for r in runs}
    assert [r.info.status for r in runs if r.data.tags.get("expt.run_type") == "train"] == ["FINISHED"] * 2


def test_a_scheduler_without_workers_is_refused_in_one_line(dask_cluster: Cluster, tmp_path: Path) -> None:
    from fixtures.cluster import DASK, _stop
    from servers import free_port

    port = free_port()
    lonely = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline, done = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            done = subprocess.run([EXPT, "train", "-m", "data=iris,wine", "model=knn", *FAST,
                                   f"tracking.uri={dask_cluster.tracking}", "tracking.experiment=lonely",
                                   "--cluster", f"tcp://127.0.0.1:{port}"],
                                  cwd=tmp_path, capture_output=True, text=True, timeout=120)
            if "does not answer" not in done.stderr:  # the scheduler is up
                break
            time.sleep(1)
        assert done is not None and done.returncode == 2, done.stderr if done else ""
        assert f"the Dask scheduler at tcp://127.0.0.1:{port} has no worker" in done.stderr
        assert runs_of(dask_cluster.tracking, "lonely") == []
    finally:
        _stop(lonely)
