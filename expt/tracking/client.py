"""The MLflow run tree, written through MlflowClient with explicit run ids.

No ``mlflow.start_run`` and no global active run: a run tree built across folds
(and, later, processes) is easier to get right when every call names its run.
A run is created only after all input has been checked, and every run this module
starts is ended FINISHED, FAILED or KILLED, never left RUNNING.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.errors import TrackingError
from expt.tracking.seed import seed_store
from expt.tracking.tags import NOTE_TAG, PARENT_TAG, RUN_TYPE_TAG, SWEEP_ID_TAG, SWEEP_RUN, USER_TAG, tag_filter
from expt.tracking.uri import mask_credentials, new_client, normalize_uri, probe_server

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Metric, Param
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from sklearn.base import BaseEstimator
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

    from expt.core.settings import Tracking

MAX_PARAM_LENGTH = 6000
BATCH = {"params": 100, "metrics": 1000, "tags": 100}


def runs_view(base_url: str, uri: str, experiment: str, sweep_id: str | None = None) -> tuple[str, str | None]:
    """Links into the MLflow UI's runs table: a sweep's tree (``sweep_id``, default the newest sweep), and the
    newest sweep's id.

    The UI (3.17) lists the newest 100 runs first and nests a child only under a parent on the same page: a
    sweep's trials, created after it, push its run off the first page, and the outer folds fetched as the
    trials' parents show up without it. Filtered to one sweep and sorted oldest first, the sweep run comes
    first and its outer folds and trials nest under it (the UI nests only when sorted by start time). The UI
    keeps its view in the URL, so this is a link to send as well. Without a sweep: the plain runs table.
    """
    from urllib.parse import quote

    client = new_client(uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is not None and sweep_id is None:
            newest = client.search_runs([found.experiment_id], tag_filter(RUN_TYPE_TAG, SWEEP_RUN), max_results=1,
                                        order_by=["attributes.start_time DESC"])
            sweep_id = newest[0].data.tags.get(SWEEP_ID_TAG) if newest else None
    except Exception:  # noqa: BLE001 - the link is a convenience; the UI itself still starts
        found = None
    if found is None:
        return base_url, None
    runs = f"{base_url}/#/experiments/{found.experiment_id}/runs"
    if sweep_id is None:
        return runs, None
    where = quote(tag_filter(SWEEP_ID_TAG, sweep_id), safe="")
    return f"{runs}?searchFilter={where}&orderByKey={quote('attributes.start_time')}&orderByAsc=true", sweep_id


def user_metadata(tracking: Tracking) -> dict[str, str]:
    """``tracking.tags`` and ``tracking.description`` as a top run's tags, masked like everything logged."""
    from expt.core.schema import check_user_metadata

    out = {k: mask_credentials(v) for k, v in check_user_metadata(tracking.as_dict()).items()}
    if tracking.description:
        out[NOTE_TAG] = mask_credentials(str(tracking.description))
    return out


def current_user() -> str:
    """Who runs this: ``getpass.getuser()`` reads LOGNAME, USER, LNAME, USERNAME, then the password database."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a container user with no name
        return "unknown"


def flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → dotted params, values as text, cut to MLflow's length limit."""
    out: dict[str, str] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:MAX_PARAM_LENGTH]
    return out


def sqlite_write_ahead(uri: str) -> None:
    """Open this SQLite store in WAL mode with synchronous=NORMAL, in this process.

    Measured on 2 cores: an MLflow trial run (create, log_batch, end) cost 27 ms of CPU
    with SQLite's defaults and 19 ms in WAL with synchronous=NORMAL (fewer fsyncs, no
    journal file per transaction), and readers such as ``mlflow ui`` no longer block
    the writer. WAL is a property of the database file, so it stays on. A power loss
    (not a process crash) can lose the last commits; a sweep's ``--resume`` logs them
    again from the Optuna storage. WAL needs every process on one host: turn it off
    (``tracking.sqlite_wal=false``) for a store on a network filesystem.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    prefix = "sqlite:///"
    if not uri.startswith(prefix) or ":memory:" in uri or uri in _WAL_STORES:
        return
    path = os.path.realpath(uri[len(prefix):])
    _WAL_STORES.add(uri)

    def on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        if not type(dbapi_connection).__module__.startswith("sqlite3"):
            return
        cursor = dbapi_connection.cursor()
        try:
            files = {os.path.realpath(row[2]) for row in cursor.execute("PRAGMA database_list") if row[2]}
            if path in files:  # this store only, not an Optuna SQLite storage in the same process
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    event.listen(Engine, "connect", on_connect)


_WAL_STORES: set[str] = set()


@contextlib.contextmanager
def sqlite_creation_lock(uri: str) -> Iterator[None]:
    """One process at a time opens a SQLite store: MLflow migrates a new file on first open, and two
    processes migrating one file at once (sweeps joining together) broke it (alembic temp tables,
    'expected to match one row'). A lock file beside the database serializes that first open."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri[len("sqlite:///"):])
    try:
        fh = open(db.parent / f".{db.name}.lock", "a")  # noqa: SIM115 - held for the block
    except OSError:
        yield  # a folder we cannot write: MLflow will say so in its own words
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _pinned_requirements_trusted() -> Iterator[None]:
    """Skip MLflow's check that the installed packages satisfy a model's requirements while saving it.

    Ours are read from the installed packages (``model_requirements`` pins each to its installed version),
    so the check cannot warn; it maps every module to its distribution (``packages_distributions``, which
    reads every installed package's file list): 0.4-0.9 s of each model log on 2 cores, measured. MLflow
    keeps the check in a module function; if an upgrade moves it, the check simply runs again.
    """
    import mlflow.utils.environment as environment

    original = getattr(environment, "warn_dependency_requirement_mismatches", None)
    if original is None:
        yield
        return
    environment.warn_dependency_requirement_mismatches = lambda *args, **kwargs: None
    try:
        yield
    finally:
        environment.warn_dependency_requirement_mismatches = original


ONE_BY_ONE_ENV = "EXPT_RUNS_ONE_BY_ONE"  # set: finished runs go through MLflow's client one by one (tests compare)
BULK_DATABASES = ("sqlite", "postgresql")  # where the one-transaction path is tested against the client's (MySQL: not)


@dataclass
class FinishedRun:
    """A run written whole, created and ended at once: :meth:`Tracker.log_finished`."""

    name: str
    tags: Mapping[str, str]
    parent_id: str | None
    start: float | None
    end: float | None
    status: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, object] = field(default_factory=dict)
    series: Mapping[str, list[float]] = field(default_factory=dict)


def run_tags(tags: Mapping[str, str], parent_id: str | None) -> dict[str, str]:
    """A new run's tags as expt creates it: the user (MLflow's client leaves that to the caller), the given tags,
    the parent. One definition for :meth:`Tracker.start` and the one-transaction path."""
    return {USER_TAG: current_user(), **tags, **({PARENT_TAG: parent_id} if parent_id is not None else {})}


def batch_entities(metrics: Mapping[str, float], params: Mapping[str, object], series: Mapping[str, list[float]],
                   *, now: int, step: int = 0) -> tuple[list[Metric], list[Param]]:
    """MLflow's entities for a run's metrics (at ``step``), series (step = index) and params, as :meth:`Tracker.log`
    and the one-transaction path write them."""
    from mlflow.entities import Metric, Param

    m = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    m += [Metric(k, float(v), now, i) for k, values in series.items() for i, v in enumerate(values)]
    return m, [Param(k, str(v)) for k, v in params.items()]


def import_bulk_writer() -> None:
    """Import what :meth:`Tracker.log_finished` uses, now: a sweep's sink calls it before its background thread
    starts importing, so that its own thread never imports a module while the other does."""
    import uuid  # noqa: F401

    from mlflow.entities import Metric, Param  # noqa: F401
    from mlflow.store.tracking import sqlalchemy_store  # noqa: F401
    from mlflow.store.tracking.dbmodels import models  # noqa: F401
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME  # noqa: F401
    from mlflow.utils.uri import append_to_uri_path  # noqa: F401


def _bulk_rows(store: SqlAlchemyStore, experiment_id: str,
               runs: list[FinishedRun]) -> tuple[list[str], Callable[[], None]]:
    """The rows MLflow's SqlAlchemyStore writes for each run through create_run, log_batch and update_run_info
    (the same columns and values: tests/test_live_tree.py compares every field), in one session; nothing is
    committed until the returned ``commit`` is called."""
    import uuid

    from mlflow.store.tracking import sqlalchemy_store as sql
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
    from mlflow.utils.uri import append_to_uri_path

    experiment = store.get_experiment(experiment_id)
    store._check_experiment_is_active(experiment)
    now = int(time.time() * 1000)
    ids, rows = [], []
    for run in runs:
        tags = {**run_tags(run.tags, run.parent_id), MLFLOW_RUN_NAME: run.name}  # create_run adds the name tag
        metrics, params = batch_entities(run.metrics, run.params, run.series, now=now)
        metrics, params, _tags = sql._validate_batch_log_data(metrics, params, [])
        sql._validate_batch_log_limits(metrics, params, [])
        sql._validate_param_keys_unique(params)
        if len(metrics) > BATCH["metrics"] or len(params) > BATCH["params"] or len(tags) > BATCH["tags"]:
            raise ValueError("more than one batch: the client path splits it")
        run_id = uuid.uuid4().hex
        row = SqlRun(name=run.name, artifact_uri=append_to_uri_path(experiment.artifact_location, run_id,
                                                                    sql.SqlAlchemyStore.ARTIFACTS_FOLDER_NAME),
                     run_uuid=run_id, experiment_id=experiment_id, source_type="UNKNOWN", source_name="",
                     entry_point_name="", user_id=tags[USER_TAG], status=run.status,  # the client takes it from the tag
                     start_time=int((run.start or time.time()) * 1000),
                     end_time=int((run.end or time.time()) * 1000), deleted_time=None, source_version="",
                     lifecycle_stage="active")
        row.tags = [SqlTag(key=k, value=str(v)) for k, v in tags.items()]
        row.params = [SqlParam(key=p.key, value=p.value) for p in params]
        latest: dict[str, Any] = {}  # key -> its row MLflow keeps as the latest: most recent by (step, time, value)
        metric_rows = []
        for m in dict.fromkeys(metrics):  # the store drops exact duplicates
            is_nan, value = store.sanitize_metric_value(m.value)
            metric = SqlMetric(run_uuid=run_id, key=m.key, value=value, timestamp=m.timestamp, step=m.step,
                               is_nan=is_nan)
            metric_rows.append(metric)
            old = latest.get(m.key)
            if old is None or (metric.step, metric.timestamp, metric.value) > (old.step, old.timestamp, old.value):
                latest[m.key] = metric
        latest_rows = [SqlLatestMetric(run_uuid=run_id, key=m.key, value=m.value, timestamp=m.timestamp,
                                       step=m.step, is_nan=m.is_nan) for m in latest.values()]
        ids.append(run_id)
        rows.append((row, metric_rows, latest_rows))

    def commit() -> None:
        with store.ManagedSessionMaker(read_only=False) as session:
            for row, metric_rows, latest_rows in rows:
                session.add(row)
                session.flush()  # the run first: its metrics refer to it
                session.add_all(metric_rows)
                session.add_all(latest_rows)

    return ids, commit


class Tracker:
    """One experiment in one MLflow store."""

    def __init__(self, uri: str, experiment: str, *, sqlite_wal: bool = True) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # Runs stay local: no usage telemetry unless the user turns it on (MLFLOW_DISABLE_TELEMETRY=false).
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        # No "View run at http://..." line per run: a sweep creates hundreds (expt prints where to browse once).
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        self.uri = normalize_uri(uri)
        probe_server(self.uri)
        with sqlite_creation_lock(self.uri):
            seed_store(self.uri)  # a new SQLite store from the migrated template, not ~70 migrations
            if sqlite_wal:
                sqlite_write_ahead(self.uri)
            self.client = new_client(self.uri)
            self.experiment_id = self._experiment(experiment)

    def _experiment(self, name: str, attempts: int = 5) -> str:
        """The experiment's id, created if missing.

        Processes that start together on a fresh store race to create the experiment (one
        gets 'already exists'); a second look settles it.
        """
        for attempt in range(attempts):
            try:
                found = self.client.get_experiment_by_name(name)
                if found is not None:
                    if found.lifecycle_stage == "deleted":
                        self.client.restore_experiment(found.experiment_id)
                    return found.experiment_id
                return self.client.create_experiment(name, artifact_location=self._artifact_location())
            except Exception as exc:  # noqa: BLE001 - MlflowException, SQLAlchemy and connection errors alike
                text = str(exc)
                racing = "already exists" in text or "RESOURCE_ALREADY_EXISTS" in text or "locked" in text
                if racing and attempt < attempts - 1:
                    time.sleep(0.5 + attempt)
                    continue
                raise TrackingError(
                    f"cannot open MLflow store {mask_credentials(self.uri)!r}: "
                    f"{mask_credentials(text.splitlines()[0][:200])}; "
                    "check tracking.uri (e.g. tracking.uri=sqlite:///mlruns.db)"
                ) from None
        raise AssertionError("unreachable")

    def _artifact_location(self) -> str | None:
        """Keep a SQLite store's artifacts next to its file, not in whatever directory runs it."""
        if self.uri.startswith("sqlite:///"):
            return (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
        return None

    def start(self, name: str, tags: Mapping[str, str], *, parent_id: str | None = None,
              start_time: float | None = None) -> str:
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags=run_tags(tags, parent_id),
            start_time=int((start_time or time.time()) * 1000),
        )
        return run.info.run_id

    def log_finished(self, runs: list[FinishedRun]) -> list[str]:
        """Runs that are created and ended at once (a sweep's trials), each exactly as :meth:`start`, :meth:`log`
        and :meth:`end` write it; their ids, in order.

        On a SQLite or PostgreSQL store they are written in one transaction with MLflow's own
        table models (``mlflow.store.tracking.dbmodels``), after MLflow's own checks of the batch: a trial run
        through the client costs three transactions and ~10 ms of the sink's CPU, which made the sink the slowest
        part of a small sweep and its trials reach the store a second or more after they ended. All or none of
        a batch is written. On any other store (MySQL too, untested here), or if MLflow's table models are not
        what this expects (an MLflow whose schema moved on), each run goes through the client instead;
        ``tests/test_live_tree.py`` and ``tests/test_pg.py`` check that both ways write the same runs.
        """
        bulk = self._bulk_writer()
        prepared = None
        if bulk is not None:
            try:
                prepared = bulk(runs)
            except Exception:  # noqa: BLE001 - nothing is written before the commit below: the client path follows
                prepared = None
        if prepared is None:
            return [self._finished_one_by_one(run) for run in runs]
        ids, commit = prepared
        commit()
        return ids

    def _finished_one_by_one(self, run: FinishedRun) -> str:
        run_id = self.start(run.name, run.tags, parent_id=run.parent_id, start_time=run.start)
        self.log(run_id, metrics=run.metrics, params=run.params, series=run.series)
        self.end(run_id, run.status, end_time=run.end)
        return run_id

    def _bulk_writer(self) -> Callable[[list[FinishedRun]], tuple[list[str], Callable[[], None]]] | None:
        """For a database store, a function that builds a batch's rows and returns (ids, commit); else None."""
        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        if os.environ.get(ONE_BY_ONE_ENV) or type(store).__name__ != "SqlAlchemyStore":
            return None
        if getattr(store, "db_type", None) not in BULK_DATABASES:
            return None
        return lambda runs: _bulk_rows(store, self.experiment_id, runs)  # type: ignore[arg-type]

    def log(self, run_id: str, *, metrics: Mapping[str, float] = {}, params: Mapping[str, object] = {},
            tags: Mapping[str, str] = {}, step: int = 0, series: Mapping[str, list[float]] = {}) -> None:
        """Everything for a run in as few ``log_batch`` calls as MLflow's limits allow.

        ``series`` are metrics logged at steps 0, 1, ... (inner-fold scores, say) in the same batch.
        """
        from mlflow.entities import RunTag

        m, p = batch_entities(metrics, params, series, now=int(time.time() * 1000), step=step)
        t = [RunTag(k, str(v)) for k, v in tags.items()]
        while m or p or t:
            self.client.log_batch(run_id, metrics=m[:BATCH["metrics"]], params=p[:BATCH["params"]],
                                  tags=t[:BATCH["tags"]])
            m, p, t = m[BATCH["metrics"]:], p[BATCH["params"]:], t[BATCH["tags"]:]

    def log_steps(self, run_id: str, key: str, values: list[float]) -> None:
        """One metric as a series (step = index) in a single batch."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        series = [Metric(key, float(v), now, step) for step, v in enumerate(values)]
        for start in range(0, len(series), BATCH["metrics"]):
            self.client.log_batch(run_id, metrics=series[start:start + BATCH["metrics"]])

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    def log_files(self, run_id: str, files: Iterable[str], artifact_dir: str | None = None) -> None:
        """Files as artifacts of a run (under ``artifact_dir``), one call per file: a store copies each."""
        for local in files:
            self.client.log_artifact(run_id, local, artifact_dir)

    def log_sklearn_model(self, run_id: str, model: BaseEstimator, X_example: pd.DataFrame,
                          fmt: str = "cloudpickle") -> None:
        """Save with an explicit requirement list and log as artifacts of the run.

        ``save_model`` + ``log_artifacts`` keeps the explicit run id; naming the pip
        requirements skips MLflow's inference, which spends ~10 s importing everything
        in a subprocess (its check of installed distributions still costs ~1 s once per
        process). The list is complete for what the model holds (:func:`model_requirements`),
        so ``mlflow models serve`` can build an environment for it. cloudpickle is the default
        format because skops' import pulls in torch (~3.5 s); ``tracking.model_format=skops``
        is there for those who want it.
        """
        import logging
        import tempfile

        import mlflow.sklearn

        from expt.tracking.packaging import model_requirements, model_signature, skops_types

        example, signature = model_signature(model, X_example)
        logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
        logging.getLogger("mlflow.utils.requirements_utils").setLevel(logging.ERROR)  # torch's "+cpu" label
        with tempfile.TemporaryDirectory(prefix="expt-model-") as tmp, _pinned_requirements_trusted():
            path = Path(tmp) / "model"
            mlflow.sklearn.save_model(
                model, str(path), signature=signature, input_example=example,
                pip_requirements=model_requirements(model, fmt), serialization_format=fmt,
                skops_trusted_types=skops_types(model) if fmt == "skops" else None,
            )
            self.client.log_artifacts(run_id, str(path), "model")

    def checkpoint(self) -> None:
        """Fold a SQLite store's write-ahead log into the .db file, so that file alone holds every run.

        Without it the last runs can sit in ``mlruns.db-wal`` until some later process
        checkpoints, and a copy of ``mlruns.db`` alone would miss them. Best effort: a
        reader holding the log open only delays it.
        """
        import sqlite3

        prefix = "sqlite:///"
        if self.uri not in _WAL_STORES:
            return
        try:
            with sqlite3.connect(self.uri[len(prefix):], timeout=5) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.close()
        except sqlite3.Error:
            return

    def end(self, run_id: str, status: str = "FINISHED", end_time: float | None = None) -> None:
        self.client.set_terminated(run_id, status=status, end_time=int((end_time or time.time()) * 1000))

    def end_quietly(self, run_ids: Iterable[str], status: str) -> None:
        """Mark runs ended after a failure; a store that is itself failing must not hide the first error."""
        for run_id in run_ids:
            try:
                self.end(run_id, status)
            except Exception:  # noqa: BLE001, S112 - best effort on the way out of an error
                continue
