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

import os
import pickle
import traceback
from collections.abc import Mapping
from queue import Empty
from typing import Any

TERMINAL = ("FINISHED", "FAILED", "KILLED")


def parent_alive() -> bool:
    import multiprocessing

    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()


class Sink:
    def __init__(self, uri: str, experiment: str, sweep_id: str) -> None:
        from expt.tracking import Tracker

        self.tracker = Tracker(uri, experiment)
        self.client = self.tracker.client
        self.runs: dict[str, tuple[str, str]] = {}  # key -> (run id, status)
        filt = f"tags.`expt.sweep_id` = '{sweep_id}'"
        for run in self.client.search_runs([self.tracker.experiment_id], filt, max_results=50_000):
            key = run.data.tags.get("expt.key")
            if key:
                self.runs[key] = (run.info.run_id, run.info.status)

    def handle(self, msg: Mapping[str, Any]) -> None:
        key = msg["key"]
        status = msg.get("status")
        known = self.runs.get(key)
        if known and known[1] in TERMINAL and status in TERMINAL and not msg.get("update"):
            return  # already logged in full: a replay after resume
        if known is None:
            parent = self.runs[msg["parent"]][0] if msg.get("parent") else None
            run_id = self.tracker.start(msg["name"], {**msg.get("tags", {}), "expt.key": key}, parent_id=parent,
                                        start_time=msg.get("start"))
        else:
            run_id = known[0]
            if status == "RUNNING" and known[1] != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            if msg.get("tags"):
                self.tracker.log(run_id, tags=msg["tags"])
        # One batch for metrics, series and params: each SQLite write costs ~14 ms of this process's CPU.
        self.tracker.log(run_id, metrics=msg.get("metrics", {}), params=msg.get("params", {}),
                         series=msg.get("steps", {}))
        for path, text in msg.get("texts", {}).items():
            self.tracker.log_text(run_id, text, path)
        for artifact_dir, local in msg.get("files", []):
            self.client.log_artifact(run_id, local, artifact_dir or None)
        if msg.get("model"):
            with open(msg["model"], "rb") as fh:  # written by this sweep's own worker a moment ago
                model, example, fmt = pickle.load(fh)  # noqa: S301
            os.unlink(msg["model"])
            self.tracker.log_sklearn_model(run_id, model, example, fmt)
        if status in TERMINAL:
            self.tracker.end(run_id, status, end_time=msg.get("end"))
        self.runs[key] = (run_id, status or (known[1] if known else "RUNNING"))

    def close_open(self, status: str) -> None:
        for key, (run_id, state) in self.runs.items():
            if state == "RUNNING":
                self.tracker.end(run_id, status)
                self.runs[key] = (run_id, status)


def sink_main(queue: Any, errors: Any, uri: str, experiment: str, sweep_id: str) -> None:
    """Process entry: consume messages until ``stop``; report the first failure on ``errors``."""
    import logging
    import signal

    # Ctrl-C reaches the whole process group; the parent decides, then sends `stop` after the last message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(10)  # logging may lag; the trials on the critical path may not
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

    logging.getLogger("alembic").setLevel(logging.WARNING)
    sink = None
    try:
        sink = Sink(uri, experiment, sweep_id)
        while True:
            try:
                msg = queue.get(timeout=1.0)
            except Empty:
                if parent_alive():
                    continue
                return  # the sweep process died (SIGKILL): everything it sent is logged; resume replays the rest
            if msg.get("op") == "stop":
                if msg.get("close"):
                    sink.close_open(msg["close"])
                return
            sink.handle(msg)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which prints one line
        from expt.errors import ExptError

        errors.put(str(exc) if isinstance(exc, ExptError) else f"{type(exc).__name__}: {exc}")
        if os.environ.get("EXPT_DEBUG"):
            traceback.print_exc()
