"""``--cluster ADDRESS``: a set of independent jobs (a grid's cells, the knowledge base's jobs) on a Dask cluster.

The seam is :func:`expt.grid.workers.run_jobs`: with a cluster address it hands the jobs to :func:`run_on_cluster`
instead of its local processes, with the same contract (a job is a picklable dict with a unique ``key``, a
module-level runner, progress told in this process, a job that raises RunFailedError fails alone, any other error
stops the rest in one line).

Isolation: a Dask worker is long-lived and runs tasks in its threads, while a cell changes its process (the
``--trust-target`` allow-list in ``os.environ``, thread caps, the working directory). On a one-thread worker
(``dask worker --nthreads 1``, docs/guides/scale-out.md's recipe) a task runs in the worker's process, one at a
time, with this
client's trust prefixes, thread caps and working directory set for it and put back after, so nothing of one task
reaches the next and the imports are paid once per worker (a fresh process per cell cost ~2 s a cell: a 3 x 3 grid
took 2.5x as long as on local workers). On a worker with more threads, tasks could run side by side in one
process, so each starts a fresh ``python -m expt.grid.cluster_cell``, which dies with the worker (Linux's
parent-death signal).

Refusals, each one line before any job is sent (:func:`connect`): a scheduler that does not answer, a cluster
with no worker, workers whose expt code differs from this client's (the version string is fixed, so a fingerprint
of the package's files is compared), and, by the callers, stores and folders the workers cannot share.

Faults: Dask runs a lost worker's task again on another worker (up to its ``allowed-failures``, 3 by default;
then the job is an error naming the worker loss). What the killed attempt left is the runner's to settle: a grid
cell's run left RUNNING is ended KILLED before the cell runs again (:func:`expt.grid.cells.run_job`), a knowledge
base cell that did not finish was never marked done.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from expt.core.errors import RunFailedError, UsageError

if TYPE_CHECKING:
    from distributed import Client

    from expt.grid.jobs import JobProgress

T = TypeVar("T")

CLUSTER_ENV = "EXPT_CLUSTER"  # the scheduler's address when --cluster is not given
CONNECT_TIMEOUT = 10.0  # seconds for the scheduler to answer; EXPT_CLUSTER_TIMEOUT sets another


def cluster_address(given: str | None) -> str | None:
    """``--cluster``, else ``$EXPT_CLUSTER``, else None (the local processes)."""
    address = given if given is not None else os.environ.get(CLUSTER_ENV) or None
    if address is not None and not address.strip():
        raise UsageError(f"--cluster is empty; give the scheduler's address (e.g. --cluster tcp://host:8786) "
                         f"or unset {CLUSTER_ENV}")
    return address


def code_fingerprint() -> str:
    """A hash of every file of the installed ``expt`` package (its code, configs and knowledge base): two
    installs with the same fingerprint run the same code. Read from disk at each call (~20 ms), not cached: a
    long-lived worker runs each cell in a fresh process, which runs what is on disk now."""
    import expt

    root = Path(expt.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and p.suffix not in (".pyc", ".pyo")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


_LOADED: list[str] = []  # the fingerprint when this process first computed one: the code it has imported


def _worker_facts() -> dict[str, str]:
    """Run on each worker by :func:`connect`: the fingerprint of the code on disk, or of the code the worker
    loaded first where that differs (expt upgraded under a running worker, which runs cells in its own process:
    the worker must be restarted)."""
    disk = code_fingerprint()
    if not _LOADED:
        _LOADED.append(disk)
    return {"fingerprint": disk if _LOADED[0] == disk else _LOADED[0], "python": sys.version.split()[0]}


def _timeout() -> float:
    text = os.environ.get("EXPT_CLUSTER_TIMEOUT") or str(CONNECT_TIMEOUT)
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 3600:
        raise UsageError(f"EXPT_CLUSTER_TIMEOUT={text!r} is not a number of seconds; set it like "
                         "EXPT_CLUSTER_TIMEOUT=30, or unset it (10 s)")
    return seconds


_clients: dict[str, Client] = {}


def connect(address: str) -> Client:
    """A client of the scheduler at ``address`` whose every worker runs this client's expt code; one clear line
    otherwise (UsageError), before anything is sent. Kept for the next call with the same address (a grid checks
    the cluster before it opens its run, then runs its cells), until :func:`disconnect`."""
    if address in _clients:
        return _clients[address]
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--cluster needs Dask: pip install 'expt-runner[cluster]' (or make install)") from None
    import logging

    for name in ("distributed", "distributed.client", "distributed.comm", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # their connection retries are not the user's news
    try:
        client = Client(address, timeout=_timeout(), set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(f"the Dask scheduler at {address} does not answer ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160] if str(exc) else 'no reply'}); start one with "
                         f"`dask scheduler` and workers with `dask worker {address}`, or drop --cluster") from None
    try:
        try:
            facts = client.run(_worker_facts)
        except Exception as exc:  # noqa: BLE001 - a worker without this expt (an older one, none at all)
            why = str(exc) if type(exc) is Exception else f"{type(exc).__name__}: {exc}"  # Dask wraps what it got
            raise UsageError(f"the Dask workers at {address} cannot run this expt's code check "
                             f"({(why.splitlines() or [''])[0][:160]}); install the same expt on every worker and "
                             "restart the workers") from None
        if not facts:
            raise UsageError(f"the Dask scheduler at {address} has no worker; start some with "
                             f"`dask worker {address} --nthreads 1`")
        here = code_fingerprint()
        other = {w: f for w, f in facts.items() if f["fingerprint"] != here}
        if other:
            worker, f = sorted(other.items())[0]
            raise UsageError(f"{len(other)} of {len(facts)} Dask workers run other expt code than this client "
                             f"(worker {worker}: fingerprint {f['fingerprint']}, here {here}); install the same "
                             "expt on every worker and restart the workers")
    except BaseException:
        client.close()
        raise
    _clients[address] = client
    return client


def disconnect(address: str) -> None:
    client = _clients.pop(address, None)
    if client is not None:
        client.close()


def shared_uri(uri: str) -> None:
    """Refuse a tracking store that workers on other machines cannot share: a file on this machine."""
    from expt.tracking.uri import mask_credentials

    if uri.startswith(("http://", "https://", "postgresql", "mysql", "mssql", "databricks")):
        return
    raise UsageError(f"tracking.uri={mask_credentials(uri)} is a store on this machine, which the cluster's workers "
                     "cannot share; use a tracking server (tracking.uri=http://host:5000, `mlflow server` with a "
                     "PostgreSQL backend) or a PostgreSQL store (tracking.uri=postgresql://...)")


def _sees(paths: list[str]) -> list[str]:
    """Run on each worker by :func:`shared_folders`: the marker files it cannot see."""
    return [p for p in paths if not Path(p).is_file()]


def shared_folders(client: Client, folders: list[Path]) -> None:
    """Refuse unless every worker sees each of ``folders`` at the same path (a shared filesystem): a marker file
    written here must be visible there."""
    token = hashlib.sha256(os.urandom(8)).hexdigest()[:12]
    markers = []
    try:
        for folder in folders:
            marker = folder.resolve() / f".expt-cluster-{token}"
            marker.write_text("written by an expt client to check that the Dask workers share this folder\n")
            markers.append(marker)
        missing = {w: m for w, m in client.run(_sees, [str(m) for m in markers]).items() if m}
        if missing:
            worker, paths = sorted(missing.items())[0]
            raise UsageError(f"{len(missing)} Dask worker(s) do not see {Path(paths[0]).parent} (worker {worker}); "
                             "the workers must share this folder at the same path (a shared filesystem), or "
                             "run without --cluster")
    finally:
        for marker in markers:
            marker.unlink(missing_ok=True)


# What this worker process runs now: a job's claim (``grid id/cell key``) for each task in progress. A task goes
# on when its client dies (Dask cannot stop a running thread), so a resumed client asks the workers (client.run,
# answered by the worker's event loop while its task thread is busy) before it runs a cell again.
_RUNNING: dict[int, str] = {}


def _claims() -> list[str]:
    """Run on each worker by :func:`running_claims`."""
    return sorted(_RUNNING.values())


def running_claims(client: Client, prefix: str) -> list[tuple[str, str]]:
    """(worker, claim) of every task a worker is running whose claim starts with ``prefix``."""
    found = client.run(_claims)
    return sorted((worker, claim) for worker, claims in found.items() for claim in claims if claim.startswith(prefix))


def _task(module: str, name: str, job: dict[str, Any], env: dict[str, str], cwd: str) -> tuple[str, Any]:
    """On a worker: the job, isolated (see the module's doc); returns ("done", value), ("failed", why) or
    ("error", why). A one-thread worker (``dask worker --nthreads 1``, as docs/guides/scale-out.md starts them) runs
    it in its
    own process, one task at a time, with this client's environment set for the task and put back after; a worker
    with more threads runs it in a fresh ``python -m expt.grid.cluster_cell``, whose imports cost ~2 s a job."""
    import threading

    me = threading.get_ident()
    _RUNNING[me] = str(job.get("claim") or job["key"])
    try:
        return _isolated(module, name, job, env, cwd)
    finally:
        _RUNNING.pop(me, None)


def _isolated(module: str, name: str, job: dict[str, Any], env: dict[str, str], cwd: str) -> tuple[str, Any]:
    try:
        from distributed import get_worker

        alone = get_worker().state.nthreads == 1
    except (ImportError, ValueError, AttributeError):
        alone = False
    if alone:
        return _in_this_process(module, name, job, env, cwd)
    return _in_a_process(module, name, job, env, cwd)


def _in_this_process(module: str, name: str, job: dict[str, Any], env: dict[str, str], cwd: str) -> tuple[str, Any]:
    from expt.core.build import TRUST_ENV
    from expt.grid.cluster_cell import run_capped

    if not Path(cwd).is_dir():
        return "error", f"the client's working directory {cwd} is not on this worker: share it at the same path"
    keys = {TRUST_ENV, *env}
    before, here = {k: os.environ.get(k) for k in keys}, os.getcwd()
    os.environ.pop(TRUST_ENV, None)  # the client's prefixes only, never a previous task's
    os.environ.update(env)
    os.chdir(cwd)
    try:
        return run_capped(module, name, job, int(env.get("EXPT_CELL_THREADS", "1")))
    finally:
        os.chdir(here)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _in_a_process(module: str, name: str, job: dict[str, Any], env: dict[str, str], cwd: str) -> tuple[str, Any]:
    import pickle
    import subprocess
    import tempfile

    from expt.core.build import TRUST_ENV

    with tempfile.TemporaryDirectory(prefix="expt-cell-") as tmp:
        out = Path(tmp) / "result.pickle"
        child_env = {k: v for k, v in os.environ.items() if k != TRUST_ENV}  # the client's alone
        child_env.update(env)
        if not Path(cwd).is_dir():
            return "error", f"the client's working directory {cwd} is not on this worker: share it at the same path"
        proc = subprocess.run([sys.executable, "-m", "expt.grid.cluster_cell", str(out), str(os.getpid())],
                              input=pickle.dumps((module, name, job)), env=child_env, cwd=cwd,
                              capture_output=True, check=False)
        if out.is_file():
            result: tuple[str, Any] = pickle.loads(out.read_bytes())  # noqa: S301 - written by our own child
            return result
        tail = (proc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or [""]
        return "error", f"its process ended with exit code {proc.returncode} {tail[0][:200]}".strip()


def run_on_cluster(jobs: list[dict[str, Any]], address: str, runner: Callable[[dict[str, Any]], T], *,
                   progress: JobProgress[T] | None = None, what: str = "grid", unit: str = "cell",
                   resume: str = "", threads: int = 1, shared: list[Path] | None = None) -> list[tuple[str, str]]:
    """:func:`expt.grid.workers.run_jobs` on the Dask cluster at ``address``: each job a task, run in its own
    process with ``threads`` threads per pool; returns the jobs that failed, raises on any other error after
    cancelling what has not run. ``shared``: folders the jobs read or write, which every worker must see
    (:func:`shared_folders`); the working directory always is one."""
    from expt.core.build import TRUST_ENV

    client = connect(address)
    try:
        shared_folders(client, [Path.cwd(), *(shared or [])])
        from distributed import as_completed

        env = {name: str(threads) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        env["EXPT_CELL_THREADS"] = str(threads)
        if os.environ.get(TRUST_ENV):
            env[TRUST_ENV] = os.environ[TRUST_ENV]
        module, name = runner.__module__, runner.__qualname__
        token = hashlib.sha256(os.urandom(8)).hexdigest()[:8]
        futures = {}
        for job in jobs:
            future = client.submit(_task, module, name, job, env, str(Path.cwd()), pure=False,
                                   key=f"expt-{what.replace(' ', '-')}-{job['key']}-{token}")
            futures[future] = job["key"]
            if progress is not None:
                progress.job_started(job["key"])  # sent: the cluster decides when it starts
        failed: list[tuple[str, str]] = []
        try:
            for future in as_completed(list(futures), loop=client.loop):
                key = futures[future]
                try:
                    kind, info = future.result()
                except Exception as exc:  # noqa: BLE001 - KilledWorker and the like: one line
                    raise RunFailedError(f"{what} {unit} {key}: the cluster gave up on it ({type(exc).__name__}: "
                                         f"{str(exc)[:200]}); {resume}") from None
                if kind == "error":
                    raise RunFailedError(f"{what} {unit} {key}: {info}")
                if kind == "failed":
                    failed.append((key, info))
                if progress is not None:
                    progress.job_done(key, kind == "done", info if kind == "done" else None)
        except BaseException:
            client.cancel(list(futures), force=True)
            raise
        return failed
    finally:
        disconnect(address)


# --- sweep workers: `expt sweep --workers N --cluster ADDRESS` ------------------------------------------------

def reachable_storage(storage: str | None) -> str:
    """A sweep's Optuna storage that workers on other machines reach: a database server's URL."""
    if storage is None or not storage.startswith(("postgresql", "mysql")):
        shown = "the default journal file" if storage is None else repr(storage)
        raise UsageError(f"--cluster: the sweep's workers join it through its Optuna storage, and {shown} is on "
                         "this machine, which they cannot reach; pass --storage postgresql://USER@HOST/DB (or "
                         "mysql://...)")
    return storage


def _sweep_worker(argv: list[str], env: dict[str, str], cwd: str) -> tuple[int, str]:
    """On a worker: one `expt sweep` process joining the sweep; returns its exit code and last error line."""
    import subprocess

    if not Path(cwd).is_dir():
        return 2, f"the client's working directory {cwd} is not on this worker"
    child_env = {**os.environ, **env}
    proc = subprocess.run([sys.executable, "-c", _DIES_WITH_WORKER, str(os.getpid()), "sweep", *argv], env=child_env,
                          cwd=cwd, capture_output=True, text=True, check=False)
    return proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1][:300]


# `expt ARGS` that dies with the worker process that started it (Linux's parent-death signal), as a cell does.
_DIES_WITH_WORKER = """
import os, sys
from expt.core.offload import die_with_parent
die_with_parent()
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
sys.argv = ["expt", *sys.argv[2:]]
from expt.cli import main
main()
"""


def start_sweep_workers(address: str, argv: list[str], n: int) -> Callable[[], list[str]]:
    """Start ``n`` sweep processes as Dask tasks, each running ``expt sweep ARGV`` (which names the sweep and its
    storage, so each joins it); returns a function that waits for them and gives one line per worker that failed.
    """
    from expt.core.build import TRUST_ENV

    client = connect(address)
    shared_folders(client, [Path.cwd()])
    env = {TRUST_ENV: os.environ[TRUST_ENV]} if os.environ.get(TRUST_ENV) else {}
    token = hashlib.sha256(os.urandom(8)).hexdigest()[:8]
    futures = [client.submit(_sweep_worker, argv, env, str(Path.cwd()), pure=False,
                             key=f"expt-sweep-worker-{i + 1}-{token}") for i in range(n)]

    def wait() -> list[str]:
        problems = []
        try:
            for i, future in enumerate(futures):
                try:
                    code, last = future.result()
                except Exception as exc:  # noqa: BLE001 - a lost worker: its trial is failed and requeued
                    problems.append(f"sweep worker {i + 1} on the cluster was lost ({type(exc).__name__})")
                    continue
                if code != 0:
                    problems.append(f"sweep worker {i + 1} on the cluster exited with {code}: {last}")
        finally:
            disconnect(address)
        return problems

    return wait
