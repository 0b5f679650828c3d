"""What a train run writes to MLflow, and writing it in the train process.

Every write a train run makes is a method of :class:`TrainWriter`, called in the order the run tree is
written: the parent run with its config, each fold's run, the summary, the final model, the record, the
evaluation's files, the end. :class:`LocalWriter` runs each here as it is called; :mod:`expt.train.process`
runs the same methods in a process of its own, and chooses between the two (``start_writer``). The train
process draws the evaluation plots itself, in a thread (:mod:`expt.core.offload`), and hands their files
over; a grid's writer draws each cell's evaluation instead (:meth:`TrainWriter.evaluate`).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from expt.core.timeline import mark
from expt.tracking.tags import ERROR_TAG, FOLD_RUN, FOLD_TAG, RECORDS_TAG, RUN_TYPE_TAG

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from expt.core.cv import FoldResult
    from expt.core.offload import InlineEvaluator

ENDS = ("end", "abort")  # the calls that end a run: each has one reply
MODE_ENV = "EXPT_EVALUATION"  # side | inline: a writer process, or writes from the train process (tests, benchmarks)
R = TypeVar("R")


class Writer(Protocol):
    """Where a train run's writes go: :class:`LocalWriter` (here) or :class:`expt.train.process.WriterProcess`.

    ``call(method, *args)`` runs the :class:`TrainWriter` method of that name; ``on_store(fn, *args)`` runs
    ``fn(tracker, *args)`` on its store."""

    evaluates: bool  # it draws each run's evaluation itself (TrainWriter.evaluate)

    def configure(self, uri: str, experiment: str, sqlite_wal: bool) -> None: ...

    def call(self, method: str, *args: object) -> int | None: ...

    def on_store(self, fn: Callable[..., R], *args: object) -> R: ...

    def check(self) -> None: ...

    def wait(self, ticket: int | None = None) -> tuple[str, str, str]: ...

    def drain(self) -> None: ...

    def close(self) -> None: ...


class TrainWriter:
    """The writes of train runs, one run after another, to one store; raises on the first failed write."""

    def __init__(self, uri: str, experiment: str, sqlite_wal: bool) -> None:
        from expt.tracking.client import Tracker

        self.tracker = Tracker(uri, experiment, sqlite_wal=sqlite_wal)
        self.run_id = ""
        self.evaluator: InlineEvaluator | None = None
        self.on_open: Callable[[str], None] | None = None  # told each run's id as soon as it exists

    def open(self, name: str, tags: Mapping[str, str], params: Mapping[str, Any], texts: Mapping[str, str]) -> None:
        self.run_id = self.tracker.start(name, tags)
        if self.on_open is not None:
            self.on_open(self.run_id)
        self.tracker.log(self.run_id, params=params)
        for path, text in texts.items():
            self.tracker.log_text(self.run_id, text, path)
        mark("writer: parent run started, config logged")

    def fold(self, tags: Mapping[str, str], metric: str, fold: FoldResult) -> None:
        """A fold's run, written after the fold ended: RUNNING only between these three store calls (a grid's
        ``--resume`` ends one a SIGKILL left there KILLED)."""
        from expt.models.hooks import epoch_series

        tracker = self.tracker
        child_tags = {**tags, RUN_TYPE_TAG: FOLD_RUN, FOLD_TAG: str(fold.index)}
        child = tracker.start(f"fold-{fold.index}", child_tags, parent_id=self.run_id, start_time=fold.started)
        metrics = {"fit_time": fold.fit_time, "score_time": fold.score_time}
        if fold.error is None:
            assert fold.train_score is not None  # a fold without an error was scored on its training part too
            metrics.update(fold.scores)
            metrics[metric] = fold.score
            metrics[f"train_{metric}"] = fold.train_score
        extra = {ERROR_TAG: fold.error[:5000]} if fold.error else {}
        try:
            tracker.log(child, metrics=metrics, params={"fold": fold.index, "n_train": fold.n_train,
                                                        "n_test": fold.n_test}, tags=extra,
                        series=epoch_series(fold.history, metric))  # a torch model's epochs, in the same batch
        except BaseException:
            tracker.end_quietly([child], "FAILED")
            raise
        tracker.end(child, "FAILED" if fold.error else "FINISHED",
                    end_time=fold.started + fold.fit_time + fold.score_time)

    def evaluate(self, payload: Mapping[str, Any]) -> None:
        """Draw the evaluation here, in a thread, while this writer logs the rest (a grid's writer: the grid
        process is the busy one); its files are logged at the run's end."""
        from expt.core.offload import InlineEvaluator

        self.evaluator = InlineEvaluator()
        self.evaluator.submit(payload)

    def summary(self, metrics: Mapping[str, float], series: Mapping[str, list[float]]) -> None:
        self.tracker.log(self.run_id, metrics=metrics, series=series)

    def model(self, model: Pipeline, example: pd.DataFrame, fmt: str) -> None:
        self.tracker.log_sklearn_model(self.run_id, model, example, fmt)
        mark("writer: model logged")

    def record(self, record: dict[str, Any], path: str) -> None:
        """The record, whole or not at all: logged with the run, then appended to the records file (a file that
        cannot be written is a warning: the record stays with the run)."""
        import json
        import warnings

        from expt.meta.records import ARTIFACT, RecordStore, with_source

        record = with_source(record, self.run_id, self.tracker.experiment_id, self.tracker.uri)
        self.tracker.log_text(self.run_id, json.dumps(record, sort_keys=True) + "\n", ARTIFACT)
        self.tracker.log(self.run_id, tags={RECORDS_TAG: "1"})
        try:
            RecordStore(path).append([record])
        except OSError as exc:
            warnings.warn(f"record not appended to {path} ({exc.strerror or exc}); it is logged with the run as "
                          "records.jsonl", stacklevel=2)

    def evaluation(self, files: Mapping[str, Any], folder: str) -> None:
        """``predictions.parquet`` and ``plots/`` (:func:`expt.core.evaluation.evaluate_and_draw`'s files), then
        their folder, which this writer now owns, is removed."""
        import shutil

        try:
            self.tracker.log_files(self.run_id, [files["predictions"]])
            self.tracker.log_files(self.run_id, files["plots"], "plots")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        mark("writer: evaluation logged")

    def end(self, status: str = "FINISHED") -> tuple[str, str, str]:
        """The evaluation drawn here, if any, then the run's end; returns its id, its experiment's and the
        store's URI."""
        if self.evaluator is not None:
            evaluator, self.evaluator = self.evaluator, None
            try:
                handed = evaluator.handover()
                if handed is not None:
                    self.evaluation(*handed)
            finally:
                evaluator.close()
        self.tracker.end(self.run_id, status)
        self.tracker.checkpoint()
        return self.run_id, self.tracker.experiment_id, self.tracker.uri

    def abort(self, status: str) -> tuple[str, str, str]:
        """The run ends ``status`` after an error: best effort, the first error is the one to report."""
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None
        if self.run_id:
            self.tracker.end_quietly([self.run_id], status)
            self.tracker.checkpoint()
        return self.run_id, self.tracker.experiment_id, self.tracker.uri


def light(fold: FoldResult) -> FoldResult:
    """A fold as its run needs it: no model, no held-out rows, no predictions (they go to the evaluation)."""
    return replace(fold, model=None, test_index=None, outputs=None)


@contextmanager
def whole_writes() -> Iterator[None]:
    """Ctrl-C waits for the store call in progress: an interrupt inside SQLAlchemy's fetch leaves a closed
    cursor whose clean-up prints a traceback (seen in CI), and a half-made write. The KeyboardInterrupt is raised
    as the call returns, so the run still ends KILLED at once."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    before = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
    if caught:
        raise KeyboardInterrupt


class LocalWriter:
    """:class:`TrainWriter` in this process: each call writes now and raises as it fails."""

    evaluates = False  # the train process draws the evaluation

    def __init__(self) -> None:
        self.writer: TrainWriter | None = None
        self.ended: list[tuple[str, str, str]] = []

    def configure(self, uri: str, experiment: str, sqlite_wal: bool) -> None:
        if self.writer is None:
            with whole_writes():
                self.writer = TrainWriter(uri, experiment, sqlite_wal)
            mark("train: store open")

    def call(self, method: str, *args: object) -> int | None:
        """Write now; for a run's end (``end``, ``abort``) the ticket :meth:`wait` takes."""
        assert self.writer is not None
        with whole_writes():
            out = getattr(self.writer, method)(*args)
        if method in ENDS:
            self.ended.append(out)
            return len(self.ended) - 1
        return None

    def on_store(self, fn: Callable[..., R], *args: object) -> R:
        """``fn(tracker, *args)``, here."""
        assert self.writer is not None
        with whole_writes():
            return fn(self.writer.tracker, *args)

    def check(self) -> None:
        """Nothing pending here: a failed write has raised already."""

    def wait(self, ticket: int | None = None) -> tuple[str, str, str]:
        """The ended run's (run id, experiment id, URI); the last one's without a ticket."""
        return self.ended[-1 if ticket is None else ticket]

    def drain(self) -> None:
        """Every run is written already."""

    def close(self) -> None:
        pass
