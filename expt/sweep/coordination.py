"""What lets any number of processes, on any number of machines, work one sweep.

The Optuna storage is the only coordinator (no server of ours):

* **Heartbeats.** On an RDB storage (PostgreSQL, MySQL, SQLite URLs) every running
  trial records a heartbeat; a trial whose heartbeat is older than the grace period
  belongs to a dead worker. Any worker that notices fails it (the storage's row lock
  lets exactly one win), logs its MLflow run as FAILED, and enqueues the same
  configuration again, so another worker re-runs it. A journal file has no
  heartbeats: there ``expt sweep --resume`` does this for trials left RUNNING.
* **Run claims.** The MLflow runs of the sweep and of each outer fold must exist
  once, whichever process first needs them. Creating a study is the one atomic
  "first wins" operation every Optuna storage has, so a run key is claimed by
  creating the study ``<sweep id>:run:<key>``; the winner creates the MLflow run and
  stores its id there, the others read it. The same claim makes one process, not
  every machine, close the sweep and append its records.
* **Worker ids.** Each trial carries ``expt.worker`` (host:pid), which is how
  ``expt sweep --status`` tells which workers were seen recently.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol

from expt.sweep.storage import (
    WORKER_ATTR,
    beat_seconds,
    fail_and_requeue,
    has_heartbeat,
    heartbeat_interval,
    open_storage,
    stale_trial_ids,
    storage_of,
    trial_id_of,
)

if TYPE_CHECKING:
    from optuna import Study, Trial
    from optuna.trial import FrozenTrial

CLAIM_SEP = ":run:"
CLAIM_WAIT = 120.0


class SweepRef(Protocol):
    """What this module reads of a sweep: :class:`expt.sweep.attach.Sweep`, which it cannot import (attach imports
    the engine, which imports this module)."""

    @property
    def sweep_id(self) -> str: ...

    @property
    def storage_url(self) -> str: ...

    @property
    def studies(self) -> Mapping[str, Study]: ...  # one per unit, in the plan's order


def worker_id(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid or os.getpid()}"


@contextlib.contextmanager
def heartbeat(study: Study, trial: Trial) -> Iterator[None]:
    """Beat for ``trial`` while the block runs (what ``study.optimize`` does; ask/tell has to do it itself)."""
    storage = storage_of(study)
    if not has_heartbeat(storage):
        yield
        return
    stop = threading.Event()
    interval = beat_seconds(storage)

    def beat() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(Exception):  # a missed beat is not worth killing the trial for
                storage.record_heartbeat(trial_id_of(trial))

    storage.record_heartbeat(trial_id_of(trial))  # before anything can die: a trial with no beat is never stale
    thread = threading.Thread(target=beat, name="expt-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class RunClaims:
    """First process to claim a key creates its MLflow run; the rest use that run's id."""

    def __init__(self, storage_url: str, sweep_id: str) -> None:
        import logging

        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        self.storage, self.sweep_id = open_storage(storage_url), sweep_id

    def _name(self, key: str) -> str:
        return f"{self.sweep_id}{CLAIM_SEP}{key}"

    def claim(self, key: str) -> tuple[bool, int]:
        """(won, study id of the claim)."""
        from optuna.exceptions import DuplicatedStudyError
        from optuna.study import StudyDirection

        try:
            return True, self.storage.create_new_study([StudyDirection.MAXIMIZE], self._name(key))
        except DuplicatedStudyError:
            return False, self.storage.get_study_id_from_name(self._name(key))

    def run_id(self, key: str, create: Callable[[], str]) -> str:
        won, study_id = self.claim(key)
        if won:
            run_id = create()
            self.storage.set_study_user_attr(study_id, "run_id", run_id)
            return run_id
        deadline = time.monotonic() + CLAIM_WAIT
        while time.monotonic() < deadline:
            stored = self.storage.get_study_user_attrs(study_id).get("run_id")
            if stored:
                return str(stored)
            time.sleep(0.2)
        # The claimer died between its claim and its run: take over rather than lose the tree.
        run_id = create()
        self.storage.set_study_user_attr(study_id, "run_id", run_id)
        return run_id


def reap_stale(study: Study, reason: str) -> list[FrozenTrial]:
    """Fail the trials whose worker stopped beating and enqueue their configurations again (RDB storages).

    Returns the trials this process failed (another process may win some of them).
    """
    if not has_heartbeat(storage_of(study)):
        return []
    return fail_and_requeue(study, stale_trial_ids(study), reason)


def foreign_workers(sweep: SweepRef, own: set[str]) -> set[str]:
    """Workers of other processes (other machines, other invocations) that ran trials of this sweep."""
    seen = {t.user_attrs.get(WORKER_ATTR) for study in sweep.studies.values()
            for t in study.get_trials(deepcopy=False)}
    return {w for w in seen if w is not None and w not in own}


def claim_close(sweep: SweepRef) -> bool:
    return RunClaims(sweep.storage_url, sweep.sweep_id).claim("close")[0]


class Node:
    """This process's entry in the sweep's storage: alive (``seen`` kept fresh by a thread), then ``drained``
    once its MLflow sink has written everything it was sent.

    The process that closes a sweep replays what MLflow lacks (trials a dead machine ran
    but never logged). Replaying while another machine's sink still has queued messages
    would log those trials twice, so it first waits until every other node has drained
    or gone stale (no sign of life for 3 heartbeat intervals + 5 s).
    """

    PREFIX = "expt.node:"

    def __init__(self, sweep: SweepRef) -> None:
        self.storage = storage_of(next(iter(sweep.studies.values())))
        self.study_id = self.storage.get_study_id_from_name(sweep.sweep_id)
        self.key = f"{self.PREFIX}{worker_id()}"
        self.interval = heartbeat_interval()
        self.stale_after = 3 * self.interval + 5
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _mark(self, state: str) -> None:
        with contextlib.suppress(Exception):  # a lost mark only makes a closer wait for staleness
            self.storage.set_study_user_attr(self.study_id, self.key, {"state": state, "seen": time.time()})

    def start(self) -> Node:
        self._mark("working")

        def beat() -> None:
            while not self._stop.wait(self.interval):
                self._mark("working")

        self._thread = threading.Thread(target=beat, name="expt-node", daemon=True)
        self._thread.start()
        return self

    def drained(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._mark("drained")

    def others_working(self) -> list[str]:
        now = time.time()
        attrs = self.storage.get_study_user_attrs(self.study_id)
        return [k[len(self.PREFIX):] for k, v in attrs.items() if k.startswith(self.PREFIX) and k != self.key
                and isinstance(v, dict) and v.get("state") != "drained" and now - v.get("seen", 0) < self.stale_after]

    def wait_for_others(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while self.others_working() and time.monotonic() < deadline:
            time.sleep(0.5)
