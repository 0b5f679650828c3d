"""Real servers for the tests: a throwaway PostgreSQL cluster and an `mlflow server` on it.

Both are started by the tests themselves (session-scoped fixtures, registered by
conftest.py's ``pytest_plugins``) and stopped at the end of the session, pass or fail. Under
pytest-xdist each worker is a session of its own, which starts them if it runs a pg test: two
workers' clusters and servers have their own temp dirs, sockets and ports (:func:`free_port`):

* ``postgres``: finds the PostgreSQL server binaries (``/usr/lib/postgresql/*/bin``,
  the Debian layout); when they are missing and the tests run as root on a system
  with apt (a fresh CI machine), installs the ``postgresql`` package once. Then
  creates a cluster in a temp dir, listening on 127.0.0.1 only, on a free port, with
  password (scram) auth over TCP, and databases ``optuna`` and ``mlflow`` owned by the
  role ``expt``. Cluster start: about 2-3 s.
* ``mlflow_server``: ``mlflow server`` with that ``mlflow`` database as its backend
  store and artifacts proxied into a temp dir; first start runs MLflow's alembic
  migrations (about 10-20 s).

Environment:

* ``EXPT_TEST_PG_BINDIR``: where to look for the server binaries *before* installing
  (a glob, default ``/usr/lib/postgresql/*/bin``); pointing it at a missing path
  exercises the install path. After an install the Debian location is used.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

DEBIAN_BINDIR = "/usr/lib/postgresql/*/bin"
BINDIR_ENV = "EXPT_TEST_PG_BINDIR"
PG_USER = "expt"
PG_PASSWORD = "expt-secret-pw"
PG_DATABASES = ("optuna", "mlflow")
# Several sweep workers each hold a SQLAlchemy pool (5 + 10 overflow) beside the mlflow server's own pool.
MAX_CONNECTIONS = 200
INSTALL_TIMEOUT = 900
START_TIMEOUT = 60
MLFLOW_TIMEOUT = 120
MLFLOW = str(Path(sys.executable).with_name("mlflow"))

_cleanups: list = []


def _run_cleanups() -> None:
    """The atexit guard: whatever a fixture's finally did not get to (an interrupted session)."""
    while _cleanups:
        with contextlib.suppress(Exception):
            _cleanups.pop()()


atexit.register(_run_cleanups)


# Ports for the servers the tests start: below Linux's ephemeral range (32768-60999), where the kernel picks the
# ports of outgoing connections, so none takes a port between its check here and the server's bind.
PORTS = range(20000, 32768)
_port_cursor = [-1]


def free_port() -> int:
    """A port nothing listens on, from this process's own slice of :data:`PORTS`: each pytest-xdist worker (gw0,
    gw1, ...) has a slice of its own, so two workers never hand out one port before either server binds it (two
    ``bind(0)`` checks can: the port is free again once the check closes it). The walk starts at a random place,
    so two test sessions on one machine rarely meet either; a port in use is skipped."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    size = len(PORTS) // count
    first = PORTS.start + (int(worker) if worker.isdigit() else 0) % count * size
    if _port_cursor[0] < 0:
        _port_cursor[0] = random.randrange(size)  # noqa: S311 - where a walk starts, not a secret
    for _ in range(size):
        _port_cursor[0] += 1
        port = first + _port_cursor[0] % size
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {first}-{first + size - 1}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- PostgreSQL


def _find_bindir(pattern: str) -> Path | None:
    """The newest major version's bin dir under ``pattern`` that has initdb and pg_ctl."""
    found = [Path(p) for p in glob.glob(pattern) if (Path(p) / "initdb").is_file() and (Path(p) / "pg_ctl").is_file()]

    def major(path: Path) -> tuple[int, str]:
        digits = "".join(c for c in path.parent.name if c.isdigit())
        return (int(digits) if digits else 0, str(path))

    return max(found, key=major) if found else None


def _online_clusters() -> set[tuple[str, str]]:
    """(version, name) of the Debian-managed clusters that are running (none before PostgreSQL is installed)."""
    if not shutil.which("pg_lsclusters"):
        return set()
    listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False).stdout
    return {(f[0], f[1]) for f in map(str.split, listing.splitlines()) if len(f) >= 4 and f[3] == "online"}


def _stop_clusters_started_by_apt(before: set[tuple[str, str]]) -> None:
    """Debian's package creates and (without a policy-rc.d) starts a `main` cluster; the tests don't use it."""
    for version, name in _online_clusters() - before:
        subprocess.run(["pg_ctlcluster", version, name, "stop"], capture_output=True, check=False)


def apt_get_install(packages: list[str], how: str) -> None:
    """``apt-get update`` and ``install`` non-interactively (root), waiting for a dpkg lock; a failure fails the test
    with the last lines apt printed and ``how`` to install by hand."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=300"]  # an unattended upgrade holding the dpkg lock: wait for it
    for command in (["apt-get", *wait, "update", "-q"],
                    ["apt-get", *wait, "install", "-y", "-q", "--no-install-recommends",
                     "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", *packages]):
        try:
            done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=INSTALL_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(command)}` took over {INSTALL_TIMEOUT} s; {how}", pytrace=False)
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
            pytest.fail(f"`{' '.join(command)}` failed (exit {done.returncode}); {how}:\n{output}", pytrace=False)


def _install_postgresql(pattern: str) -> None:
    """``apt-get install postgresql`` as root, once (a file lock keeps parallel sessions from racing)."""
    how = ("install PostgreSQL (Debian/Ubuntu: `sudo apt-get install postgresql`) or run the tests as root, "
           "which installs it")
    if os.geteuid() != 0:
        pytest.fail(f"the pg tests need the PostgreSQL server binaries ({DEBIAN_BINDIR}/initdb): {how}",
                    pytrace=False)
    if not shutil.which("apt-get"):
        pytest.fail(f"no PostgreSQL server binaries and no apt-get to install them: {how}", pytrace=False)
    with open(os.path.join(tempfile.gettempdir(), "expt-tests-pg-install.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _find_bindir(pattern):  # another session installed it while this one waited
            return
        started, online = time.monotonic(), _online_clusters()
        print("\n[pg] PostgreSQL server binaries missing: apt-get update && apt-get install postgresql ...",
              file=sys.stderr, flush=True)
        apt_get_install(["postgresql"], how)
        _stop_clusters_started_by_apt(online)
        print(f"[pg] installed PostgreSQL in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def postgres_bindir() -> Path:
    """The server binaries, installing them first when missing (root + apt only)."""
    pattern = os.environ.get(BINDIR_ENV) or DEBIAN_BINDIR
    bindir = _find_bindir(pattern)
    if bindir:
        return bindir
    _install_postgresql(pattern)
    bindir = _find_bindir(DEBIAN_BINDIR)
    if bindir is None:
        pytest.fail(f"installed the postgresql package but found no initdb in {DEBIAN_BINDIR}", pytrace=False)
    return bindir


@dataclasses.dataclass
class Postgres:
    """A running throwaway cluster. URLs are SQLAlchemy ones (SQLAlchemy 2.1 drives postgresql:// with psycopg 3)."""

    bindir: Path
    root: Path  # the temp dir: data/, the log, and the unix socket
    host: str
    port: int
    user: str = PG_USER
    password: str = PG_PASSWORD
    os_user: str | None = None  # who runs the server (``postgres`` when the tests run as root)
    proc_started: bool = False

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    @property
    def optuna_url(self) -> str:
        return self.url("optuna")

    @property
    def mlflow_url(self) -> str:
        return self.url("mlflow")

    def admin_connect(self, database: str = "postgres"):
        """A psycopg connection as the superuser over the unix socket (autocommit)."""
        import psycopg

        return psycopg.connect(host=str(self.root), port=self.port, user="postgres", dbname=database, autocommit=True)

    def create_database(self, name: str) -> str:
        """A fresh, empty database owned by ``expt``; returns its URL (for a test that must not share state)."""
        conn = self.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}" OWNER {self.user}')
        finally:
            conn.close()
        return self.url(name)

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.os_user, "--", *argv] if self.os_user else argv

    def pg_ctl(self, *args: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args]),
                              capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc_started:
            self.proc_started = False
            done = self.pg_ctl("stop", "-m", "fast", "-w", "-t", "30")
            if done.returncode != 0 and (self.datadir / "postmaster.pid").exists():
                self.pg_ctl("stop", "-m", "immediate", "-w", "-t", "30")
        shutil.rmtree(self.root, ignore_errors=True)


def _server_owner() -> str | None:
    """initdb refuses to run as root: as root the cluster belongs to the ``postgres`` OS user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root, but there is no `postgres` OS user to own the test cluster "
                    "(the postgresql package creates it)", pytrace=False)
    return "postgres"


def start_postgres() -> Postgres:
    bindir = postgres_bindir()
    owner = _server_owner()
    # Under /tmp (not pytest's 0700 tmp dir) so that the `postgres` user can reach it.
    root = Path(tempfile.mkdtemp(prefix="expt-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    if owner:
        entry = pwd.getpwnam(owner)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    pg = Postgres(bindir=bindir, root=root, host="127.0.0.1", port=free_port(), os_user=owner)
    _cleanups.append(pg.stop)
    try:
        initdb = subprocess.run(
            pg._as_owner([str(bindir / "initdb"), "-D", str(pg.datadir), "-U", "postgres", "--no-locale",
                          "-E", "UTF8", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"]),
            capture_output=True, text=True, timeout=START_TIMEOUT, check=False, stdin=subprocess.DEVNULL)
        if initdb.returncode != 0:
            pytest.fail(f"initdb failed (exit {initdb.returncode}):\n{initdb.stdout}{initdb.stderr}", pytrace=False)
        options = {"listen_addresses": "127.0.0.1", "port": pg.port, "unix_socket_directories": str(root),
                   "max_connections": MAX_CONNECTIONS, "fsync": "off", "synchronous_commit": "off",
                   "full_page_writes": "off", "shared_buffers": "64MB", "log_min_messages": "warning"}
        with (pg.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# expt tests\n" + "".join(f"{k} = '{v}'\n" for k, v in options.items()))
        for attempt in range(3):
            pg.proc_started = True
            started = pg.pg_ctl("start", "-w", "-t", str(START_TIMEOUT), "-l", str(pg.log))
            if started.returncode == 0:
                break
            pg.proc_started = (pg.datadir / "postmaster.pid").exists()
            if attempt == 2 or "could not bind" not in _tail(pg.log):
                pytest.fail(f"pg_ctl start failed (exit {started.returncode}):\n{started.stdout}{started.stderr}\n"
                            f"log:\n{_tail(pg.log)}", pytrace=False)
            pg.port = free_port()  # lost the race for the port: take another
            with (pg.datadir / "postgresql.conf").open("a") as conf:
                conf.write(f"port = '{pg.port}'\n")
        conn = pg.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE ROLE {pg.user} LOGIN PASSWORD '{pg.password}'")  # no bind parameters in DDL
                for name in PG_DATABASES:
                    cur.execute(f"CREATE DATABASE {name} OWNER {pg.user}")
        finally:
            conn.close()
    except BaseException:
        pg.stop()
        raise
    return pg


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL server for the session: ``.optuna_url``, ``.mlflow_url``, ``.url(db)``, ``.create_database()``.
    """
    started = time.monotonic()
    pg = start_postgres()
    print(f"\n[pg] PostgreSQL {pg.bindir.parent.name} on 127.0.0.1:{pg.port} in {time.monotonic() - started:.1f} s",
          file=sys.stderr, flush=True)
    try:
        yield pg
    finally:
        pg.stop()
        with contextlib.suppress(ValueError):
            _cleanups.remove(pg.stop)


# --------------------------------------------------------------------------- mlflow server


def server_env() -> dict[str, str]:
    """The environment of the MLflow servers the tests start (`mlflow server`, `mlflow ui`, `expt ui`): one
    uvicorn worker, and no job runner. MLflow 3 starts its job runner (for GenAI jobs: scorers, prompt
    optimisation) beside any server on a database store, as seven huey consumers that each import MLflow; no test
    submits a job. Together about 22 CPU-s less per server start, which a 2-core suite run feels."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_WORKERS": "1"}



@dataclasses.dataclass
class MlflowServer:
    url: str  # http://127.0.0.1:PORT: a tracking URI
    port: int
    proc: subprocess.Popen
    log: Path
    artifacts: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # uvicorn's workers, should any outlive the parent
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start_mlflow_server(backend_uri: str, workdir: Path, timeout: float = MLFLOW_TIMEOUT) -> MlflowServer:
    artifacts = workdir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log = workdir / "mlflow-server.log"
    port = free_port()
    command = [MLFLOW, "server", "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=workdir, env=server_env(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = MlflowServer(url=f"http://127.0.0.1:{port}", port=port, proc=proc, log=log, artifacts=artifacts)
    _cleanups.append(server.stop)
    deadline = time.monotonic() + timeout
    while not _healthy(server.url):
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited with {proc.returncode}" if proc.poll() is not None else f"not healthy after {timeout:.0f} s"
            server.stop()
            pytest.fail(f"mlflow server {why}; log tail:\n{_tail(log)}", pytrace=False)
        time.sleep(0.5)
    return server


@pytest.fixture(scope="session")
def mlflow_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An `mlflow server` on the ``mlflow`` database; yields its tracking URI ``http://127.0.0.1:PORT``."""
    started = time.monotonic()
    server = start_mlflow_server(postgres.mlflow_url, tmp_path_factory.mktemp("mlflow-server"))
    print(f"\n[pg] mlflow server on {server.url} in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    try:
        yield server.url
    finally:
        server.stop()
        with contextlib.suppress(ValueError):
            _cleanups.remove(server.stop)
