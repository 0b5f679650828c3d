"""Where runs are stored: tracking URIs, the credentials in them, and opening a store that must exist."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.config import with_tracking_uri
from expt.core.errors import TrackingError, UsageError

if TYPE_CHECKING:
    from mlflow import MlflowClient


def normalize_uri(uri: str) -> str:
    """Make a relative SQLite path absolute, so the store does not move with the working directory."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix):]).expanduser().resolve())
    return uri


MASK = "***"
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>]*)")
_SECRET_PARAM = re.compile(r"(?i)([?&;](?:password|passwd|pwd|sslpassword|token|access_token|api_key|apikey|secret)=)"
                           r"[^&;#\s'\"]*")


def mask_credentials(text: str) -> str:
    """Every URI in ``text`` with its password and secret query parameters replaced by ``***``.

    The one masking function (logged params, tags, records, messages, the Optuna storage). The
    user information ends at the *last* ``@`` before the path, so a password holding ``@`` or
    ``:`` (written raw, as SQLAlchemy accepts) or ``%``-escapes is masked whole; a ``/`` in a
    password must be written ``%2F``, as URLs require.
    """
    return _URL.sub(_mask_url, text)


def _mask_url(match: re.Match[str]) -> str:
    rest = match.group("rest")
    end = min((i for i in (rest.find(c) for c in "/?#") if i != -1), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    at = authority.rfind("@")
    if at != -1:
        user, colon, _password = authority[:at].partition(":")
        if colon:
            authority = f"{user}:{MASK}@{authority[at + 1:]}"
    return match.group("scheme") + authority + _SECRET_PARAM.sub(rf"\g<1>{MASK}", tail)


def with_credentials(uri: str, *candidates: str | None) -> str:
    """A URI whose password was masked before it was stored (a sweep's config), with the password back.

    expt never stores a password; the process that has it passes its own URI as a candidate,
    and any process can take it from the environment (``MLFLOW_TRACKING_URI``), where MLflow
    reads it too. A candidate counts only if it masks to the stored URI.
    """
    if MASK not in uri:
        return uri
    for candidate in (*candidates, os.environ.get("MLFLOW_TRACKING_URI")):
        if candidate and mask_credentials(candidate) == uri:
            return candidate
    raise UsageError(f"the tracking URI {uri} needs its password, which expt never stores; set MLFLOW_TRACKING_URI "
                     "to the full URI in this shell and run the command again")


def ui_command(uri: str) -> str:
    """How to browse a store: a server has its own UI; a database or folder needs `mlflow ui` on it."""
    if uri.startswith(("http://", "https://")):
        return f"open {mask_credentials(uri)} in a browser (the tracking server's UI)"
    return f"mlflow ui --backend-store-uri {mask_credentials(uri)}"


def probe_server(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes: MLflow's client retries a dead server with backoff for ~4 minutes."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    dialect = parts.scheme.split("+", 1)[0]  # postgresql+psycopg -> postgresql
    if dialect not in ("http", "https", *DATABASE_PORTS) or not parts.hostname:
        return
    port = parts.port or {"http": 80, "https": 443, **DATABASE_PORTS}[dialect]
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except (OSError, ValueError) as exc:  # a port out of range is a ValueError
        shown = f"{parts.scheme}://{parts.hostname}:{port}"  # never the user name or password
        what, fix = (("the MLflow tracking server", "start it (mlflow server ...)") if dialect.startswith("http")
                     else ("the database of the MLflow tracking store", "start the database"))
        raise TrackingError(f"cannot reach {what} at {shown} ({getattr(exc, 'strerror', None) or exc}); "
                            f"{fix} or set tracking.uri") from None


# MLflow retries a database it cannot reach for ~2 minutes, printing each attempt: probed like a server.
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}




def existing_store(uri: str, *, missing: str) -> str:
    """The normalized URI of a store that must already exist (reading runs, not logging them).

    A dead server fails in seconds (see :func:`probe_server`), and a SQLite path that does
    not exist is an error instead of a new empty database that MLflow would create;
    ``missing`` is the end of that message, naming the fix for the command at hand.
    """
    uri = normalize_uri(uri)
    probe_server(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise UsageError(f"no MLflow store at {uri}; {missing}")
    return uri


def open_client(uri: str, *, missing: str) -> MlflowClient:
    """An MlflowClient on an existing store (see :func:`existing_store`)."""
    return new_client(existing_store(uri, missing=missing))


# What a store whose schema another process is migrating right now says (MLflow migrates a new SQLite file on its
# first open, in every process that opens it: `mlflow ui`, a notebook, another expt command).
MIGRATING = ("duplicate column name", "already exists", "out-of-date database schema", "database is locked",
             "no such table", "expected to match one row")
MIGRATION_WAIT = 60.0  # seconds: a migration of a new store takes 2-4 s on 2 cores


def migrating(exc: BaseException) -> bool:
    """Whether an error opening a store came from a schema migration that another process runs on it too: a
    known message, or any error raised inside MLflow's migration scripts or alembic. The scripts reflect a table
    while the other process rebuilds it, so what fails varies with the script (CI saw ``AttributeError:
    dimension_attributes`` from a column read off a half-rebuilt ``spans``); their frames are what they share."""
    if any(s in str(exc) for s in MIGRATING):
        return True
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if "/mlflow/store/db_migrations/" in filename or "/alembic/" in filename:
            return True
        tb = tb.tb_next
    return False


def new_client(uri: str, registry_uri: str | None = None, *, wait: float = MIGRATION_WAIT) -> MlflowClient:
    """An MlflowClient, opened again while another process migrates the same new store (issue 26).

    Two processes that open a new SQLite store together both see it empty and both run MLflow's migrations; the
    second fails ('duplicate column name: step', 'table ... already exists') and used to end the command before
    its first fold. expt's own processes take a lock for that first open (``sqlite_creation_lock``), but a
    foreign process does not: so the open is retried, with a growing pause, until the other migration is done
    (then the schema checks out) or ``wait`` seconds pass. MLflow caches a store only once it opened.
    """
    import time

    from mlflow import MlflowClient

    deadline = time.monotonic() + wait
    pause = 0.2
    while True:
        try:
            if registry_uri is None:
                return MlflowClient(tracking_uri=uri)
            return MlflowClient(tracking_uri=uri, registry_uri=registry_uri)
        except Exception as exc:  # SQLAlchemy's OperationalError and MlflowException alike
            if not migrating(exc) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def masked_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved config as it may be shown or logged: the tracking URI without its password."""
    return with_tracking_uri(values, mask_credentials)
