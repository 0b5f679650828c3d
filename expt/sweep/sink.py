"""MLflow logging for sweeps in a process of its own.

Importing MLflow and opening its store costs seconds, and each write tens of
milliseconds; on the search's critical path that more than doubled a cheap nested
CV. Here a separate process (its own interpreter, so its own core) imports MLflow
while the first trials run and writes the run tree from a queue in order.

Runs are named by keys (``sweep``, ``fold-0``, ``fold-0/trial-3``) kept as the tag
``expt.key``; on start the sink maps the keys the store already holds for this
sweep, so a resumed sweep re-attaches to its runs and a message for a finished run
is skipped: the Optuna storage is the source of truth, and replaying it never
duplicates a run.
"""

from __future__ import annotations

import functools
import os
import pickle
import traceback
from collections.abc import Callable, Mapping, Sequence
from queue import Empty
from typing import TYPE_CHECKING, Any, NoReturn

from expt.core.timeline import mark
from expt.tracking.tags import BEST_TRIAL_TAG, EVALUATION_ERROR_TAG, KEY_TAG, RECORDS_TAG, SWEEP_ID_TAG, tag_filter

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

    from expt.core.data import Dataset
    from expt.core.evaluation import Evaluation

TERMINAL = ("FINISHED", "FAILED", "KILLED")
OUTER_PLOTS = "outer_plots"  # on the sweep run: the out-of-fold plots pooled over the outer folds


def parent_alive() -> bool:
    import multiprocessing

    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()


class Sink:
    def __init__(self, uri: str, experiment: str, sweep_id: str, sqlite_wal: bool = True,
                 storage_url: str | None = None) -> None:
        from expt.tracking.client import Tracker

        self.tracker = Tracker(uri, experiment, sqlite_wal=sqlite_wal)
        self.claims = None
        if storage_url:  # the sweep and fold runs are shared by every process on the sweep: claimed once
            from expt.sweep.coordination import RunClaims

            self.claims = RunClaims(storage_url, sweep_id)
        self.client = self.tracker.client
        self.sweep_id = sweep_id
        self.runs: dict[str, tuple[str, str]] = {}  # key -> (run id, status)
        self.waiting: dict[str, list[Mapping[str, Any]]] = {}  # parent key -> messages that came before it
        self.evaluated: dict[int, tuple[Evaluation, dict[str, float], str, str]] = {}  # outer fold -> its evaluation
        self.rescan()

    def rescan(self) -> None:
        """Learn the runs the store holds for this sweep: at start (a resume), and before a closing replay
        (what other processes' sinks logged meanwhile)."""
        filt = tag_filter(SWEEP_ID_TAG, self.sweep_id)
        for run in self.client.search_runs([self.tracker.experiment_id], filt, max_results=50_000):
            key = run.data.tags.get(KEY_TAG)
            if key:
                self.runs[key] = (run.info.run_id, run.info.status)

    def handle(self, msg: Mapping[str, Any]) -> None:
        key = msg["key"]
        status = msg.get("status")
        known = self.runs.get(key)
        replayed = known and known[1] in TERMINAL and status in TERMINAL  # logged in full before a resume
        reopened = known and known[1] == "FINISHED" and status == "RUNNING"  # a finished unit stays finished
        if (replayed or reopened) and not msg.get("update"):
            for handoff in ("model", "evaluation"):  # a finished run logged them before it ended
                if msg.get(handoff):
                    os.unlink(msg[handoff])
            return
        if known is None and ("name" not in msg or msg.get("parent") and msg["parent"] not in self.runs):
            # Workers and the sweep process feed one queue through threads of their own: a worker's trial (or
            # a fold's result) can arrive before the message that opens its fold. It waits for that run.
            self.waiting.setdefault(key if "name" not in msg else msg["parent"], []).append(msg)
            return
        if known is None:
            run_id, created = self._open(key, msg)
            if not created and status == "RUNNING":  # another process opened it and logged its config
                self.runs[key] = (run_id, "RUNNING")
                for held in self.waiting.pop(key, []):
                    self.handle(held)
                return
        else:
            run_id = known[0]
            if status == "RUNNING" and known[1] != "RUNNING":  # KILLED or FAILED by a stop; resumed now
                self.client.update_run(run_id, status="RUNNING")
            if msg.get("tags"):
                self.tracker.log(run_id, tags=msg["tags"])
        # One batch for metrics, series and params: each SQLite write costs ~14 ms of this process's CPU.
        self.tracker.log(run_id, metrics=msg.get("metrics", {}), params=msg.get("params", {}),
                         series=msg.get("steps", {}))
        for path, text in msg.get("texts", {}).items():
            self.tracker.log_text(run_id, text, path)
        self._log_figures(run_id, msg)
        if msg.get("records"):
            self._log_records(run_id, msg["records"], msg["records_path"])
        if msg.get("model"):
            with open(msg["model"], "rb") as fh:  # written by this sweep's own worker a moment ago
                model, example, fmt = pickle.load(fh)  # noqa: S301 - see the line above
            os.unlink(msg["model"])
            from expt.meta.model_features import n_parameters

            self.final_size = (msg.get("tags", {}).get(BEST_TRIAL_TAG), n_parameters(model))  # for its record
            self.tracker.log_sklearn_model(run_id, model, example, fmt)
            mark("sink: final model logged")
        if (known is None and key == "sweep") or (key.startswith("fold-") and "/" not in key):
            mark(f"sink: {key} run {'opened' if known is None else 'logged'}")
        if status in TERMINAL:
            self.tracker.end(run_id, status, end_time=msg.get("end"))
            if key == "sweep":
                mark("sink: sweep run closed (plots, records)")
            elif "/trial-" in key:
                _trial_logged(msg)
        self.runs[key] = (run_id, status or (known[1] if known else "RUNNING"))
        for held in self.waiting.pop(key, []):
            self.handle(held)

    def whole(self, msg: Mapping[str, Any]) -> bool:
        """A new run that this one message creates and ends, with nothing but tags, params and metrics (a trial):
        written with others like it in one transaction (:meth:`handle_whole`)."""
        parent = msg.get("parent")
        return ("name" in msg and msg.get("status") in TERMINAL and msg["key"] not in self.runs
                and parent not in (None, "sweep") and parent in self.runs and not msg.get("update")
                and not any(msg.get(k) for k in (*Background.HEAVY, "texts")))

    def handle_whole(self, msgs: Sequence[Mapping[str, Any]]) -> None:
        """Messages that each pass :meth:`whole`: their runs, as :meth:`handle` writes them, in one batch."""
        from expt.tracking.client import FinishedRun

        runs = [FinishedRun(name=m["name"], tags={**m.get("tags", {}), KEY_TAG: m["key"]},
                            parent_id=self.runs[m["parent"]][0], start=m.get("start"), end=m.get("end"),
                            status=m["status"], metrics=m.get("metrics", {}), params=m.get("params", {}),
                            series=m.get("steps", {})) for m in msgs]
        for msg, run_id in zip(msgs, self.tracker.log_finished(runs), strict=True):
            self.runs[msg["key"]] = (run_id, msg["status"])
            _trial_logged(msg)
        for msg in msgs:
            for held in self.waiting.pop(msg["key"], []):
                self.handle(held)

    def _open(self, key: str, msg: Mapping[str, Any]) -> tuple[str, bool]:
        """A new run for ``key``, or, for the sweep and fold runs, the one another process made first."""
        parent = self.runs[msg["parent"]][0] if msg.get("parent") else None
        made: list[str] = []

        def create() -> str:
            made.append(self.tracker.start(msg["name"], {**msg.get("tags", {}), KEY_TAG: key}, parent_id=parent,
                                           start_time=msg.get("start")))
            return made[0]

        shared = msg.get("parent") in (None, "sweep")
        run_id = self.claims.run_id(key, create) if shared and self.claims is not None else create()
        return run_id, bool(made)

    def _log_plots(self, run_id: str, data: Mapping[str, Any]) -> None:
        import tempfile
        from pathlib import Path

        from expt.sweep.plots import render

        with tempfile.TemporaryDirectory(prefix="expt-plots-") as tmp:
            for artifact_dir, local in render(data, Path(tmp)):
                self.client.log_artifact(run_id, local, artifact_dir)

    def _log_figures(self, run_id: str, msg: Mapping[str, Any]) -> None:
        """An outer fold's evaluation, the sweep's plots, and at the close the outer folds' pooled evaluation."""
        if msg.get("evaluation"):
            self._log_evaluation(run_id, msg["evaluation"])
        if msg.get("plots"):
            self._log_plots(run_id, msg["plots"])
            if "outer" in msg["plots"]:  # the closing message
                self._log_pooled(run_id, len(msg["plots"]["outer"]))

    def _log_evaluation(self, run_id: str, path: str) -> None:
        """An outer fold's predictions, every metric (``outer_<metric>``) and plots, from its refit model; kept
        for the sweep's pooled plots. A failure is noted on the run (``expt.evaluation_error``), not fatal."""
        import tempfile

        from expt.core.evaluation import evaluate_holdout

        with open(path, "rb") as fh:
            payload = pickle.load(fh)  # noqa: S301 - written by this sweep's own worker a moment ago
        os.unlink(path)
        try:
            with tempfile.TemporaryDirectory(prefix="expt-eval-") as tmp:
                result, files = evaluate_holdout(payload, tmp)
                self.tracker.log_files(run_id, [files["predictions"]])
                self.tracker.log_files(run_id, files["plots"], "plots")
        except Exception as exc:  # noqa: BLE001 - the sweep's results stand without its plots
            self.tracker.log(run_id, tags={EVALUATION_ERROR_TAG: f"{type(exc).__name__}: {exc}"[:500]})
            return
        metrics = {f"outer_{k}": v for k, v in files["metrics"].items() if k != payload["metric"]}
        self.tracker.log(run_id, metrics=metrics)
        self.evaluated[payload["fold"]] = (result, files["metrics"], payload["task"], payload["metric"])

    def _log_pooled(self, run_id: str, n_outer: int) -> None:
        """Every outer fold's predictions as the sweep's ``predictions.parquet`` and plots, and each metric's
        ``outer_<metric>_mean``/``_std``: only when this sink evaluated all the folds (one machine)."""
        import tempfile

        import numpy as np

        from expt.core.evaluation import pooled, write_all

        evaluated = self.evaluated
        if len(evaluated) != n_outer:
            return
        folds = [evaluated[k] for k in sorted(evaluated)]
        _result, _scores, task, metric = folds[0]
        names = [n for n in folds[0][1] if n != metric]
        summary = {f"outer_{n}_{stat}": float(fn([f[1][n] for f in folds])) for n in names
                   for stat, fn in (("mean", np.nanmean), ("std", np.nanstd))}
        with tempfile.TemporaryDirectory(prefix="expt-eval-") as tmp:
            files = write_all(pooled([f[0] for f in folds]), task, metric, tmp)
            self.tracker.log_files(run_id, [files["predictions"]])
            self.tracker.log_files(run_id, files["plots"], OUTER_PLOTS)  # plots/ holds the search's own
        self.tracker.log(run_id, metrics=summary)

    def set_dataset(self, dataset: Dataset, seed: int) -> None:
        from expt.meta.records import features_of

        self.meta_features = features_of(dataset, seed)

    def _log_records(self, run_id: str, records: list[dict[str, Any]], path: str) -> None:
        """Records whole or not at all: in MLflow with the sweep run, then appended to the records file."""
        import json

        from expt.meta.records import ARTIFACT, RecordStore

        features = getattr(self, "meta_features", None)
        if not features:
            return  # the dataset message never came (an older sweep process): no record rather than a partial one
        trial, size = getattr(self, "final_size", (None, None))  # the final model's, if this sink logged it
        records = [{**r, "meta_features": features, "model": {**r["model"], "n_parameters": size}
                    if trial is not None and size is not None and str(r["source"].get("trial")) == trial
                    else r["model"]} for r in records]
        self.tracker.log_text(run_id, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records), ARTIFACT)
        self.tracker.log(run_id, tags={RECORDS_TAG: str(len(records))})
        RecordStore(path).append(records)

    def close_open(self, status: str) -> None:
        for key, (run_id, state) in self.runs.items():
            if state == "RUNNING":
                self.tracker.end(run_id, status)
                self.runs[key] = (run_id, status)


def _leave_now() -> NoReturn:
    """Exit without tearing the interpreter down: every write is committed, and the parent waits on this exit.

    Interpreter shutdown with MLflow, scikit-learn and matplotlib loaded took 1.2 s
    here, all of it garbage collection and module teardown that guards nothing.
    """
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def warm_up() -> None:
    """Import now what the last messages need, while the trials run.

    The final model and the plots arrive after the last trial; importing scikit-learn
    (to unpickle the model), ``mlflow.sklearn`` and matplotlib only then put ~3 s on
    the sweep's critical path (measured: logging the final model took 2.4 s cold, 0.05 s warm).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import mlflow.sklearn  # noqa: F401
    import optuna.trial  # noqa: F401 - the final search's trials, for the importance plot
    import pyarrow.parquet  # noqa: F401 - the outer folds' predictions.parquet
    import sklearn.pipeline  # noqa: F401
    from mlflow.models import infer_signature  # noqa: F401


def _trial_logged(msg: Mapping[str, Any]) -> None:
    """The timeline's mark for a trial now in the store, with its lag from the trial's end (benchmarks/timeline.py)."""
    if msg.get("end"):
        import time

        mark("sink: trial logged", lag=time.time() - msg["end"])


def _import_importance() -> None:
    import optuna.importance  # noqa: F401 - 0.6 s: its fANOVA module imports scikit-learn's ensembles and scipy


def _next_message(queue: Queue[dict[str, Any]]) -> dict[str, Any] | None:
    """The next message; None once the sweep process is gone (nothing more can come)."""
    while True:
        try:
            return queue.get(timeout=1.0)
        except Empty:
            if not parent_alive():
                return None


class Inbox:
    """The queue's messages, a trial before a fold's evaluation: each finished trial in the store within a second.

    A fold's evaluation (permutation importance, plots) or the sweep's closing takes the sink ~0.4 s; trials that
    queued behind it waited, and most of a small sweep's trials reached the store 1.5 s after they ended. Here
    every message already in the queue is read, and a light one (a run opened, a trial) goes before a heavy one
    (:attr:`Background.HEAVY`). Nothing moves past an ``op`` message (stop, rescan, the dataset): what came before
    it is handled before it. The sink opens a run whose parent has not come yet when the parent comes
    (:meth:`Sink.handle`), so the order of runs is safe to change; a unit's own messages keep their order.
    """

    def __init__(self, queue: Queue[dict[str, Any]]) -> None:
        import collections

        self.queue = queue
        self.pending: collections.deque[dict[str, Any]] = collections.deque()

    def next(self) -> dict[str, Any] | None:
        if not self.pending:
            msg = _next_message(self.queue)
            if msg is None:
                return None
            self.pending.append(msg)
        while True:
            try:
                self.pending.append(self.queue.get_nowait())
            except Empty:
                break
        light = self._take(lambda msg: not any(msg.get(k) for k in Background.HEAVY), 1)
        return light[0] if light else self.pending.popleft()

    def next_batch(self, whole: Callable[[dict[str, Any]], bool], limit: int = 100) -> list[dict[str, Any]] | None:
        """The next message; when it is a whole run (``whole``: a trial), every other one already read that may
        go now too, for one transaction. None once the sweep process is gone."""
        first = self.next()
        if first is None or not whole(first):
            return None if first is None else [first]
        keys = {first["key"]}

        def another(msg: dict[str, Any]) -> bool:
            if msg["key"] in keys or not whole(msg):
                return False
            keys.add(msg["key"])
            return True

        return [first, *self._take(another, limit - 1)]

    def _take(self, wanted: Callable[[dict[str, Any]], bool], limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` pending messages that are ``wanted`` and may go before what precedes them, in order: not
        past an op, nor past a message for the same run or for their unit (one pass: a long queue stays cheap)."""
        taken: list[dict[str, Any]] = []
        earlier: set[str] = set()  # the keys of the messages left in place before the current one
        kept: list[dict[str, Any]] = []
        while self.pending and len(taken) < limit:
            msg = self.pending.popleft()
            if "op" in msg:
                self.pending.appendleft(msg)
                break
            key = msg["key"]
            if key not in earlier and key.partition("/")[0] not in earlier and wanted(msg):
                taken.append(msg)
            else:
                kept.append(msg)
                earlier.add(key)
        self.pending.extendleft(reversed(kept))
        return taken


def _configuration(queue: Queue[dict[str, Any]]) -> tuple[str, str, str, bool, str | None] | None:
    """A sink started before its sweep existed: import MLflow now, then wait for the store to log to (``None``:
    the sweep was refused, or its process died)."""
    from mlflow import MlflowClient  # noqa: F401 - the imports are the point: they overlap the sweep's own start
    from mlflow.store.tracking import sqlalchemy_store  # noqa: F401 - opening a database store

    from expt.sweep import coordination  # noqa: F401 - run claims: optuna's storages
    from expt.tracking import client  # noqa: F401

    mark("sink: mlflow imported")
    while True:
        msg = _next_message(queue)
        if msg is None:  # the sweep process died
            return None
        if msg.get("op") == "configure":
            return tuple(msg["args"])
        if msg.get("op") == "stop":
            return None


class Background:
    """Work the sink does beside its writes, in one thread of its own: :func:`warm_up`, then the dataset's
    meta-features for the records (``submit``).

    The run tree comes first: the sweep and fold runs are created as soon as the store is open, and trials are
    logged while the heavy imports and the meta-features run beside them (imports, fits and SQLite writes
    interleave under the GIL). Before a message that needs what this thread imports or computes (a model, an
    evaluation, plots, records) the sink waits for it to finish, so that no module is imported by two threads at
    once; a failure here is raised there.
    """

    HEAVY = ("model", "evaluation", "plots", "records")

    def __init__(self) -> None:
        import queue
        import threading

        self.jobs: queue.Queue[Callable[[], object]] = queue.Queue()
        self.failure: BaseException | None = None
        self.submit(warm_up)
        threading.Thread(target=self._run, name="expt-sink-background", daemon=True).start()

    def submit(self, job: Callable[[], object]) -> None:
        self.jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                if self.failure is None:
                    job()
                    mark(f"sink: {getattr(getattr(job, 'func', job), '__name__', 'job')} done (background)")
            except BaseException as exc:  # noqa: BLE001 - raised in the sink's thread by wait()
                self.failure = exc
            finally:
                self.jobs.task_done()

    def wait(self) -> None:
        self.jobs.join()
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    def before(self, msg: Mapping[str, Any]) -> None:
        if any(msg.get(k) for k in self.HEAVY):
            self.wait()


def sink_main(queue: Queue[dict[str, Any]], errors: Queue[str], uri: str | None = None, experiment: str = "",
              sweep_id: str = "", sqlite_wal: bool = True, storage_url: str | None = None) -> None:
    """Process entry: consume messages until ``stop``; report the first failure on ``errors``.

    Without ``uri`` the first message names the store (``SinkProcess.configure``)."""
    import logging
    import signal

    # Ctrl-C reaches the whole process group; the parent decides, then sends `stop` after the last message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(10)  # logging may lag; the trials on the critical path may not
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mark("sink: started")
    sink = None
    try:
        if uri is None:
            configured = _configuration(queue)
            if configured is None:
                _leave_now()
            uri, experiment, sweep_id, sqlite_wal, storage_url = configured
        sink = Sink(uri, experiment, sweep_id, sqlite_wal, storage_url)
        mark("sink: store open")
        from expt.tracking.client import import_bulk_writer

        import_bulk_writer()  # this thread's last imports before the background thread's (see Background)
        background = Background()
        inbox = Inbox(queue)
        while True:
            batch = inbox.next_batch(sink.whole)
            if batch is None:
                return  # the sweep process died (SIGKILL): everything it sent is logged; resume replays the rest
            if sink.whole(batch[0]):
                sink.handle_whole(batch)
                continue
            msg = batch[0]
            if msg.get("op") == "rescan":
                sink.rescan()
                continue
            if msg.get("op") == "importance":  # a search over several parameters: see expt.sweep.plots
                background.submit(_import_importance)
                continue
            if msg.get("op") == "dataset":
                background.submit(functools.partial(sink.set_dataset, msg["dataset"], msg["seed"]))
                continue
            if msg.get("op") == "stop":
                background.wait()  # a failure there is this sink's failure
                mark("sink: stop received")
                if msg.get("close"):
                    sink.close_open(msg["close"])
                sink.tracker.checkpoint()
                if sink.waiting:  # a bug, not a user's mistake: say so rather than lose the runs quietly
                    errors.put(f"runs never opened for {sorted(sink.waiting)}; their messages were not logged")
                    errors.close()
                    errors.join_thread()  # os._exit would drop what the queue's feeder thread still holds
                mark("sink: leaving")
                _leave_now()
            background.before(msg)
            sink.handle(msg)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which prints one line
        from expt.core.errors import ExptError

        errors.put(str(exc) if isinstance(exc, ExptError) else f"{type(exc).__name__}: {exc}")
        if os.environ.get("EXPT_DEBUG"):
            traceback.print_exc()
