"""A sweep's Optuna storage: where it lives, how it is opened, the names kept in it, and the one
place that touches Optuna's private API.

Everything below the sweep (engine, coordination, status) imports its constants and
storage helpers from here, so none of them has to import another back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

from expt.core.errors import ExptError, TrackingError, UsageError

if TYPE_CHECKING:
    from optuna import Study
    from optuna.storages import BaseStorage, RDBStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import FrozenTrial, Trial

OUTPUTS = Path("outputs") / "sweeps"
# Study user attributes of a sweep's meta study.
META_CONFIG, META_MANIFEST, META_FAMILIES = "expt.config", "expt.manifest_hash", "expt.family_models"
# Trial user attributes.
SURPLUS = "expt.surplus"  # a trial asked for after the budget was met: FAIL, never run
ERROR = "expt.error"  # why a trial failed, one line
WORKER_ATTR = "expt.worker"  # host:pid of the process that ran it
RETRY_ATTR = "expt.retry_of"  # the number of the dead worker's trial this one re-runs
# Study user attribute: a unit's outer score, inner best and best parameters once it is finalized.
RESULT = "expt.result"

HEARTBEAT_ENV = "EXPT_HEARTBEAT_SECONDS"
DEFAULT_HEARTBEAT = 10


def new_sweep_id() -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def default_storage(sweep_id: str) -> str:
    return str((OUTPUTS / sweep_id / "optuna.journal").resolve())


def heartbeat_interval() -> int:
    """Seconds between heartbeats (``EXPT_HEARTBEAT_SECONDS``, default 10); a trial is stale after 3 of them."""
    raw = os.environ.get(HEARTBEAT_ENV, "")
    try:
        value = int(raw) if raw else DEFAULT_HEARTBEAT
    except ValueError:
        raise UsageError(f"{HEARTBEAT_ENV}={raw!r} is not a whole number of seconds; unset it or set e.g. 10") from None
    return max(1, value)


def open_storage(url: str) -> BaseStorage:
    """A journal file (a path, default) or any Optuna RDB URL (sqlite:///, postgresql://...)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    try:
        if "://" not in url:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(url))
        return rdb_storage(url)  # with heartbeats: a dead worker's trial is detected and re-run
    except ExptError:
        raise
    except Exception as exc:  # noqa: BLE001 - any driver error means the same to the user
        from expt.tracking.uri import mask_credentials

        raise TrackingError(f"cannot open the Optuna storage {mask_credentials(url)!r}: "
                            f"{str(exc).splitlines()[0][:200]}; check --storage") from None


# What opening a new RDB storage says while another process creates its tables at the same moment (several
# workers started together on an empty database: each sees no tables and runs CREATE TABLE).
CREATING = ("already exists", "duplicate key value", "UniqueViolation", "database is locked")
CREATION_WAIT = 60.0  # seconds


def rdb_storage(url: str) -> RDBStorage:
    """Optuna's RDBStorage with heartbeats, opened again while another process creates the same new schema
    (PostgreSQL said ``duplicate key value violates unique constraint "pg_type_typname_nsp_index"`` to the second
    of three sweep processes started together): once the other's tables exist, the next open finds them."""
    import time
    import warnings

    import optuna

    interval = heartbeat_interval()
    deadline, pause = time.monotonic() + CREATION_WAIT, 0.2
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: experimental
                return optuna.storages.RDBStorage(url, heartbeat_interval=interval, grace_period=3 * interval,
                                                  engine_kwargs={"pool_pre_ping": True})
        except Exception as exc:
            if not any(s in str(exc) for s in CREATING) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(2 * pause, 2.0)


# --- Optuna internals ------------------------------------------------------------------------------
# Driving studies with ask/tell across processes needs a few things Optuna keeps private: a study's
# storage and id, a trial's storage id, whether heartbeats are on, and the ids of stale trials.
# Checked against Optuna 5.0.0 (and 4.x); if an upgrade breaks one of them, it breaks here only.

def storage_of(study: Study) -> BaseStorage:
    return study._storage


def study_id_of(study: Study) -> int:
    return study._study_id


def trial_id_of(trial: Trial | FrozenTrial) -> int:
    """The storage's id of a live ``Trial`` or a ``FrozenTrial`` (not its per-study ``number``)."""
    return trial._trial_id


def has_heartbeat(storage: BaseStorage) -> TypeGuard[BaseHeartbeat]:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def beat_seconds(storage: BaseHeartbeat) -> int:
    """The heartbeat interval of a storage with heartbeats on (:func:`has_heartbeat`), which always has one."""
    interval = storage.get_heartbeat_interval()
    assert interval is not None  # is_heartbeat_enabled: an interval is set
    return interval


def grace_period(storage: BaseHeartbeat) -> int:
    backend = getattr(storage, "_backend", storage)  # optuna wraps an RDBStorage in a cache
    return int(getattr(backend, "grace_period", None) or 2 * beat_seconds(storage))


def stale_trial_ids(study: Study) -> list[int]:
    """Running trials whose heartbeat is older than the grace period (RDB storages with heartbeats)."""
    from optuna.storages._heartbeat import BaseHeartbeat

    storage = storage_of(study)
    assert isinstance(storage, BaseHeartbeat)  # callers have checked has_heartbeat
    return list(storage._get_stale_trial_ids(study_id_of(study)))


# --- failing a dead worker's trials --------------------------------------------------------------

def fail_and_requeue(study: Study, trial_ids: list[int], reason: str) -> list[FrozenTrial]:
    """Mark these trials FAIL with ``reason`` and enqueue their configurations to run again.

    Returns the trials this process failed: on a shared storage another process may win some
    of them (setting the state is atomic), and only the winner re-queues.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = storage_of(study)
    failed: list[FrozenTrial] = []
    for trial_id in trial_ids:
        with contextlib.suppress(UpdateFinishedTrialError):
            storage.set_trial_user_attr(trial_id, ERROR, reason)
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(storage.get_trial(trial_id))
    for t in failed:
        retry(study, t)
    return failed


def retry(study: Study, trial: FrozenTrial) -> None:
    """The same configuration again, as the next trial a worker asks for.

    A trial killed between two suggestions has chosen only some of its values: the retry fixes
    those and samples the rest (Optuna's enqueued trials work that way).
    """
    if trial.params:
        study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number}, skip_if_exists=False)
