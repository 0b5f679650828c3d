"""Where runs are stored: tracking URIs, the credentials in them, and opening a store that must exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from expt.core.errors import TrackingError, UsageError


def normalize_uri(uri: str) -> str:
    """Make a relative SQLite path absolute, so the store does not move with the working directory."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix):]).expanduser().resolve())
    return uri


def mask_credentials(text: str) -> str:
    """user:password@host → user:***@host, wherever a URI carries a password (logged params, messages)."""
    import re

    return re.sub(r"(//[^:/@\s]+):[^@/\s]+@", r"\1:***@", text)


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


def open_client(uri: str, *, missing: str) -> Any:
    """An MlflowClient on an existing store (see :func:`existing_store`)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=existing_store(uri, missing=missing))


def masked_config(values: dict[str, Any]) -> dict[str, Any]:
    """A resolved config as it may be shown or logged: the tracking URI without its password."""
    tracking = {**values["tracking"], "uri": mask_credentials(values["tracking"]["uri"])}
    return {**values, "tracking": tracking}
