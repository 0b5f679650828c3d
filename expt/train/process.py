"""A train run's writes in a process of its own, or in the train process when no core is idle.

The train process never needs MLflow to cross-validate, and importing MLflow and opening its store cost
~1.5 s, so with a core idle ``expt train`` starts a :class:`WriterProcess` before it composes the config: that
process imports MLflow (then scikit-learn, to unpickle the final model) while the command composes, loads the
data and runs the folds, and runs the same :class:`~expt.train.writer.TrainWriter` methods from a queue. The
command returns when the writer has written everything (:meth:`WriterProcess.wait`); a store that fails is a
one-line error as before, raised at the next fold or at the end. Without an idle core, a second interpreter's
imports would compete with the folds, and the same methods run here (:class:`~expt.train.writer.LocalWriter`;
:func:`start_writer` chooses).

A grid (``expt train -m``) keeps one writer for all its cells, which also draws each cell's evaluation
(:meth:`TrainWriter.evaluate`): a cell's runs are written while the next cell's folds run, and the grid waits
for the writes before it compares the cells.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from expt.core.timeline import mark
from expt.train.writer import ENDS, MODE_ENV, LocalWriter, TrainWriter

if TYPE_CHECKING:
    from multiprocessing.context import ForkContext, SpawnContext
    from multiprocessing.queues import Queue

    Message = tuple[str, Any]  # (kind, what): the queues' items, a kind and what it carries

R = TypeVar("R")


class WriterProcess:
    """:class:`TrainWriter` in a process of its own, started before the config is composed; fed by a queue.

    Nothing is written before :meth:`configure` names the store; :meth:`close` ends a writer that never got
    one at once (bad input writes nothing). The writer dies with this process (a SIGKILLed train leaves its
    run RUNNING, as a train process killed alone does). Replies come back in the order the runs ended: one
    per run (its ids, or the error that failed it), and one ``failed`` as soon as a write fails.
    """

    def __init__(self, evaluates: bool = False) -> None:
        self.evaluates = evaluates  # the evaluation drawn here too (a grid's writer) rather than by the run
        ctx = _context()
        self.queue, self.replies, self.results = ctx.Queue(), ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(target=writer_main, args=(self.queue, self.replies, self.results),
                                   name="expt-mlflow-writer", daemon=False)
        self.process.start()
        self.configured = False
        self.store: tuple[str, str, bool] | None = None  # uri, experiment, sqlite_wal: where the runs are
        self.ends = 0  # runs whose end was sent
        self.ended: list[tuple[str, Any]] = []  # their replies, in order
        self.open_runs: list[str] = []  # runs the writer opened and has not said ended: a dead writer's to end

    def configure(self, uri: str, experiment: str, sqlite_wal: bool) -> None:
        if not self.configured:
            self.queue.put(("configure", (uri, experiment, sqlite_wal)))
            self.configured, self.store = True, (uri, experiment, sqlite_wal)

    def call(self, method: str, *args: object) -> int | None:
        """Send one write; for a run's end, the ticket :meth:`wait` takes."""
        self._send("call", method, args)
        if method in ENDS:
            self.ends += 1
            return self.ends - 1
        return None

    def on_store(self, fn: Callable[..., R], *args: object) -> R:
        """``fn(tracker, *args)`` in the writer process, after every write sent before it; its result, or its
        error raised here (expt's own as they are). ``fn`` must be a module-level function."""
        from queue import Empty

        self._send("store", fn, args)
        while True:
            try:
                kind, value = self.results.get(timeout=1.0)
            except Empty:
                self._check_alive()
                continue
            if kind == "raise":
                raise value
            if kind == "error":
                self._fail(value)
            return value

    def check(self) -> None:
        """Raise now if a write already failed (a store that cannot be opened), so the folds stop early."""
        from queue import Empty

        while True:
            try:
                self._read(self.replies.get_nowait())
            except Empty:
                self._check_alive()
                return

    def wait(self, ticket: int | None = None, timeout: float = 3600) -> tuple[str, str, str]:
        """Block until the run is written (the last one sent without a ticket): its (run id, experiment id, URI),
        or TrackingError with the write that failed it."""
        from queue import Empty

        ticket = self.ends - 1 if ticket is None else ticket
        while len(self.ended) <= ticket:
            try:
                reply = self.replies.get(timeout=1.0)
            except Empty:
                self._check_alive()
                timeout -= 1.0
                if timeout <= 0:
                    self._fail("the MLflow writer process did not finish in time")
                continue
            self._note(reply)
        kind, value = self.ended[ticket]
        if kind == "error":
            self._fail(value)
        return value

    def drain(self) -> None:
        """Wait until every run sent is written; TrackingError for the first that failed."""
        for ticket in range(self.ends):
            self.wait(ticket)

    def _send(self, kind: str, what: str | Callable[..., object], args: tuple[object, ...]) -> None:
        """Pickled now (cloudpickle, as MLflow saves a model): what the caller changes afterwards is not what
        gets written."""
        import cloudpickle

        try:
            payload = cloudpickle.dumps((what, args))
        except Exception as exc:  # noqa: BLE001 - pickling raises many kinds
            from expt.core.errors import TrackingError

            name = what if isinstance(what, str) else getattr(what, "__name__", "a call")
            raise TrackingError(f"cannot hand {name} to the MLflow writer process ({type(exc).__name__}: "
                                f"{str(exc)[:200]}); run with {MODE_ENV}=inline to write from this process") from None
        self.queue.put((kind, payload))

    def _read(self, reply: tuple[str, Any]) -> None:
        if reply[0] == "failed":
            self._fail(reply[1])
        self._note(reply)

    def _note(self, reply: tuple[str, Any]) -> None:
        """A reply other than ``failed`` (said again by the run's end): a run opened, or a run's end."""
        if reply[0] == "opened":
            self.open_runs.append(reply[1])
        elif reply[0] != "failed":
            self.ended.append(reply)
            if self.open_runs:  # the writer ends its runs in the order it opened them
                self.open_runs.pop(0)

    def _check_alive(self) -> None:
        if not self.process.is_alive():
            self._end_orphans()
            self._fail(f"the MLflow writer process exited with code {self.process.exitcode}; run with --debug "
                       "(EXPT_DEBUG=1) to see why")

    def _end_orphans(self) -> None:
        """The runs a dead writer left RUNNING (and their folds), ended FAILED from here: best effort, since the
        store may be what killed it."""
        from queue import Empty

        while True:
            try:
                self._note(self.replies.get_nowait())
            except (Empty, OSError, EOFError):
                break
        if not self.open_runs:
            return
        try:
            from expt.tracking.client import Tracker
            from expt.tracking.tags import PARENT_TAG, tag_filter

            assert self.store is not None  # a run was opened, so the store was named
            uri, experiment, sqlite_wal = self.store
            tracker = Tracker(uri, experiment, sqlite_wal=sqlite_wal)
            for run_id in self.open_runs:
                folds = tracker.client.search_runs([tracker.experiment_id], f"{tag_filter(PARENT_TAG, run_id)} and "
                                                   "attributes.status = 'RUNNING'")
                tracker.end_quietly([r.info.run_id for r in folds] + [run_id], "FAILED")
            tracker.checkpoint()
        except Exception:  # noqa: BLE001, S110 - the writer's death is the error to report
            pass
        self.open_runs = []

    def _fail(self, text: str) -> NoReturn:
        from expt.core.errors import TrackingError

        raise TrackingError(text)

    def close(self) -> None:
        """Stop the writer: after everything sent when it was configured, at once when it never was."""
        if self.process.is_alive():
            if self.configured:
                self.queue.put(("stop", None))
                self.process.join(600)
            if self.process.is_alive():
                self.process.terminate()
        self.process.join(30)
        self.queue.cancel_join_thread()  # what a dead writer did not read must not hold this process at exit


def _context() -> ForkContext | SpawnContext:
    """Fork while this process is still bare (``expt train`` starts the writer before it imports numpy: one
    thread, no native thread pools, nothing a child could inherit half-locked): the writer then starts in
    milliseconds, not the ~0.25 s of a fresh interpreter and its resource tracker. Otherwise spawn."""
    import multiprocessing as mp
    import sys
    import threading

    bare = threading.active_count() == 1 and not {"numpy", "torch"} & set(sys.modules)
    return mp.get_context("fork") if bare and sys.platform.startswith("linux") else mp.get_context("spawn")


def writer_main(queue: Queue[Message], replies: Queue[Message], results: Queue[Message]) -> None:
    """The writer process: import, wait for the store, then run each call; after a failed call the run it
    belongs to is ended FAILED, its remaining calls are skipped and its end reports the error."""
    import logging
    import pickle

    from expt.core.offload import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle; it sends abort
    die_with_parent()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mark("writer: started")
    warm_up()
    writer: TrainWriter | None = None
    error = ""
    warmed = False
    while True:
        if not warmed and queue.empty():  # idle: the folds are still running
            warm_up_later()
            warmed = True
        kind, body = queue.get()
        if kind == "stop":
            break
        if kind == "configure":
            try:
                writer = TrainWriter(*body)
                writer.on_open = lambda run_id: replies.put(("opened", run_id))
                mark("writer: store open")
            except Exception as exc:  # noqa: BLE001 - reported to the command as one line
                error = _one_line(exc)
                replies.put(("failed", error))  # now: the command stops at its next fold
            continue
        method, args = pickle.loads(body)  # noqa: S301 - pickled by this process's parent a moment ago
        if kind == "store":
            results.put(_on_store(writer, error, method, args))
            continue
        ending = method in ENDS
        if error or writer is None:
            if ending:
                replies.put(("error", error or "no store was configured"))
                error = "" if writer is not None else error
            continue
        try:
            out = getattr(writer, method)(*args)
        except Exception as exc:  # noqa: BLE001 - reported to the command as one line, the run ended FAILED
            error = _one_line(exc)
            if os.environ.get("EXPT_DEBUG"):
                import traceback

                traceback.print_exc()
            writer.abort("FAILED")
            replies.put(("failed", error))
            if ending:
                replies.put(("error", error))
                error = ""
            continue
        if ending:
            replies.put(("ended", out))
    for done in (replies, results):
        done.close()
        done.join_thread()  # os._exit would drop what the queue's feeder thread still holds
    os._exit(0)  # no interpreter teardown: MLflow's and matplotlib's take ~1 s and guard nothing


def _on_store(writer: TrainWriter | None, error: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> \
        tuple[str, Any]:
    """A :meth:`WriterProcess.on_store` call's reply: ("ok", result), ("raise", an expt error) or ("error", line)."""
    from expt.core.errors import ExptError

    if error or writer is None:
        return "error", error or "no store was configured"
    try:
        return "ok", fn(writer.tracker, *args)
    except ExptError as exc:
        return "raise", exc
    except Exception as exc:  # noqa: BLE001 - reported to the command as one line
        if os.environ.get("EXPT_DEBUG"):
            import traceback

            traceback.print_exc()
        return "error", _one_line(exc)


def _one_line(exc: BaseException) -> str:
    """expt's own errors as they are (the same line the train process would print), others named."""
    from expt.core.errors import ExptError

    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, ExptError) else f"MLflow logging failed: {type(exc).__name__}: {text}"


def warm_up() -> None:
    """What the first writes need, imported while the command composes and loads the data."""
    from mlflow import MlflowClient  # noqa: F401
    from mlflow.store.tracking import sqlalchemy_store  # noqa: F401 - a database store

    from expt.tracking import client  # noqa: F401

    mark("writer: mlflow imported")


def warm_up_later() -> None:
    """What the final model needs (scikit-learn to unpickle it, ``mlflow.sklearn`` to save it), imported if the
    writer is idle before the folds end. Measured on 2 cores (breast_cancer, logistic regression): importing it
    all before any write, idle or not, ended the run 0.15 s later than this."""
    import mlflow.sklearn  # noqa: F401
    import sklearn.pipeline  # noqa: F401
    from mlflow.models import infer_signature  # noqa: F401

    mark("writer: warmed up for the model")


def start_writer(evaluates: bool = False) -> WriterProcess | LocalWriter:
    """A writer process when a core is idle (and this process may start one), else the writes run here.

    ``evaluates``: the writer process draws each run's evaluation too. Right for a grid, whose process goes on
    to the next cell while the writer has time to spare; not for one ``expt train``, where the writer is the
    last to finish (MLflow's imports) and the train process would otherwise wait idle for it."""
    import multiprocessing

    from expt.core.offload import idle_core

    mode = os.environ.get(MODE_ENV, "")
    if multiprocessing.current_process().daemon or mode == "inline":
        return LocalWriter()
    if mode != "side" and not idle_core():
        return LocalWriter()
    return WriterProcess(evaluates)
