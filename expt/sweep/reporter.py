"""What a sweep tells MLflow, as messages to the sink process (see ``expt.sweep.sink``)."""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.errors import TrackingError
from expt.models.hooks import epoch_series, history_of
from expt.sweep.engine import Unit, UnitResult, counts
from expt.sweep.plan import SweepPlan, display_params
from expt.sweep.plots import importance_data
from expt.sweep.storage import ERROR
from expt.tracking.tags import (
    BEST_TRIAL_TAG,
    DATA_TAG,
    ERROR_TAG,
    FINAL_RUN,
    FINGERPRINT_TAG,
    FOLDS_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    METRIC_TAG,
    MODEL_TAG,
    OUTER_FOLD_RUN,
    OUTER_FOLD_TAG,
    RUN_TYPE_TAG,
    SEARCH_TAG,
    SEED_TAG,
    SPLIT_TAG,
    SWEEP_ID_TAG,
    SWEEP_RUN,
    TRIAL_NUMBER_TAG,
    TRIAL_RUN,
    TRIAL_STATE_TAG,
    VERSION_TAG,
)

if TYPE_CHECKING:
    import datetime as dt
    from multiprocessing.queues import Queue

    from optuna import Study
    from optuna.trial import FrozenTrial
    from sklearn.pipeline import Pipeline

STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
# A trial run carries what identifies its code, data and sweep; package and Python versions stay on
# the sweep and fold runs above it. Each tag is a row MLflow writes per trial (25 tags: ~26 ms of
# the sink's CPU per trial run; 13: ~20 ms).
TRIAL_TAGS = (VERSION_TAG, GIT_COMMIT_TAG, GIT_DIRTY_TAG, FINGERPRINT_TAG, SEED_TAG,
              SWEEP_ID_TAG, DATA_TAG)


def _seconds(moment: dt.datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


class Reporter:
    """Builds the run tree's messages: sweep → outer fold (and final) → trial."""

    def __init__(self, queue: Queue[dict[str, Any]], plan: SweepPlan, sweep_id: str,
                 base_tags: dict[str, str]) -> None:
        self.queue, self.plan, self.sweep_id = queue, plan, sweep_id
        self.metric = plan.prepared.metric
        self.tags = {**base_tags, SWEEP_ID_TAG: sweep_id, DATA_TAG: plan.prepared.dataset.name,
                     MODEL_TAG: plan.config.model.name, SEARCH_TAG: plan.settings.name}
        self.trial_tags = {k: self.tags[k] for k in TRIAL_TAGS}

    def put(self, msg: dict[str, Any]) -> None:
        self.queue.put(msg)

    def open_sweep(self, config_text: str, manifest: str, params: dict[str, str],
                   shape: dict[str, str] | None = None) -> None:
        """``shape``: what shaped the sweep beyond its config (workers, warm start, resumes, trusted prefixes),
        as known when this process joined; the closing process logs them again, complete."""
        from expt.tracking.client import user_metadata
        from expt.tracking.environment import ENVIRONMENT, environment_lock

        tracking = self.plan.config.tracking
        # Started now, not when the sink gets to it: the first trials (stamped with their own start) would
        # otherwise start before the sweep run, which the MLflow UI then lists after them.
        self.put({"key": "sweep", "name": tracking.run_name or f"sweep-{self.sweep_id}", "status": "RUNNING",
                  "params": params, "start": time.time(),
                  "tags": {**self.tags, RUN_TYPE_TAG: SWEEP_RUN, FOLDS_TAG: self.plan.manifest["hash"],
                           SPLIT_TAG: self.plan.manifest.get("split", "shuffled"),
                           METRIC_TAG: self.metric, **(shape or {}), **user_metadata(tracking)},
                  "texts": {"config.yaml": config_text, "folds.json": manifest, ENVIRONMENT: environment_lock()}})
        if len(self.plan.space.params) > 1:  # the importance plot evaluates them: the sink imports it meanwhile
            self.put({"op": "importance"})
        if tracking.records:  # the sink computes its meta-features while trials run
            self.put({"op": "dataset", "dataset": self.plan.prepared.dataset, "seed": self.plan.seed})

    def open_unit(self, unit: Unit) -> None:
        name = "final" if unit.test is None else f"outer-fold-{unit.index}"
        self.put({"key": unit.key, "parent": "sweep", "name": name, "status": "RUNNING", "start": time.time(),
                  "tags": {**self.tags, RUN_TYPE_TAG: FINAL_RUN if unit.test is None else OUTER_FOLD_RUN,
                           OUTER_FOLD_TAG: str(unit.index)}})

    def trial(self, unit: Unit, frozen: FrozenTrial) -> None:
        state = frozen.state.name
        scores = frozen.user_attrs.get("inner_scores", [])
        metrics = {"duration_s": frozen.duration.total_seconds()} if frozen.duration else {}
        if state == "COMPLETE":
            assert frozen.value is not None  # a completed trial's
            metrics[f"inner_{self.metric}_mean"] = float(frozen.value)
        tags = {**self.trial_tags, RUN_TYPE_TAG: TRIAL_RUN, OUTER_FOLD_TAG: str(unit.index),
                TRIAL_NUMBER_TAG: str(frozen.number), TRIAL_STATE_TAG: state}
        if frozen.user_attrs.get(ERROR):
            tags[ERROR_TAG] = str(frozen.user_attrs[ERROR])[:5000]
        self.put({"key": f"{unit.key}/trial-{frozen.number}", "parent": unit.key, "name": f"trial-{frozen.number}",
                  "tags": tags, "start": _seconds(frozen.datetime_start), "end": _seconds(frozen.datetime_complete),
                  "status": STATUS.get(state, "KILLED"), "params": display_params(frozen.params),
                  "metrics": metrics, "steps": {f"inner_{self.metric}": scores} if scores else {}})

    def unit_done(self, unit: Unit, result: UnitResult, study: Study) -> None:
        c = counts(study)
        metrics = {f"inner_best_{self.metric}": result.inner_best, "n_done": c.done, "n_pruned": c.pruned,
                   "n_failed": c.failed}
        if result.outer_score is not None:
            metrics[f"outer_{self.metric}"] = result.outer_score
        msg = {"key": unit.key, "parent": "sweep", "status": "FINISHED", "metrics": metrics,
               "params": {f"best.{k}": v for k, v in display_params(result.best_params).items()},
               "tags": {BEST_TRIAL_TAG: str(result.best_number)},
               "steps": epoch_series(history_of(result.model), self.metric)}  # a torch refit's epochs
        if result.model is not None and unit.test is None and self.plan.config.tracking.log_model:
            fd, path = tempfile.mkstemp(prefix="expt-model-", suffix=".pkl")
            with os.fdopen(fd, "wb") as fh:
                example = self.plan.prepared.dataset.X.head(5)
                pickle.dump((result.model, example, self.plan.config.tracking.model_format), fh)
            msg["model"] = path
        if result.model is not None and unit.test is not None and self.plan.config.tracking.plots:
            msg["evaluation"] = self._evaluation_file(unit, result.model)
        self.put(msg)
        if unit.test is None:  # the final search runs first: its importance plot is drawn while the folds run
            self.put({"key": "sweep", "update": True, "plots": importance_data(study)})

    def _evaluation_file(self, unit: Unit, model: Pipeline) -> str:
        """The outer fold's refit model and held-out part, for the sink to predict, score on every metric and
        draw from (off the trials' critical path: here it costs a pickle of the model)."""
        prepared = self.plan.prepared
        data = prepared.dataset
        assert unit.test is not None  # an outer fold's
        payload = {"model": model, "X": data.X.iloc[unit.test], "y": data.y[unit.test], "rows": unit.test,
                   "fold": unit.index, "scorer": prepared.scorer, "scorers": prepared.scorers or
                   {prepared.metric: prepared.scorer}, "metric": prepared.metric, "task": data.task,
                   "seed": self.plan.seed}
        fd, path = tempfile.mkstemp(prefix="expt-eval-", suffix=".pkl")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
        return path

    def close_sweep(self, metrics: dict[str, float], plots: dict[str, Any], records: list[dict[str, Any]],
                    status: str = "FINISHED", tags: dict[str, str] | None = None) -> None:
        """The sink draws the plots (``expt.sweep.plots``) and logs them under ``plots/``, completes the records
        with the dataset's meta-features, logs them and appends them to the records file, then ends the run."""
        msg = {"key": "sweep", "status": status, "metrics": metrics, "plots": plots, "update": True}
        if tags:
            msg["tags"] = tags
        path = self.plan.config.tracking.records
        if records and path is not None:  # a sweep makes records only where tracking.records names their file
            msg["records"], msg["records_path"] = records, str(Path(path).resolve())
        self.put(msg)


class SinkProcess:
    """The MLflow sink in its own process, fed through a queue that worker processes share.

    Started with no store (``SinkProcess()``), it imports MLflow while this process composes, loads the data
    and creates the studies, and opens the store when :meth:`configure` names it: measured on 2 cores, starting
    it first took ~1.5 s off the end of a short sweep, whose wall time is the sink's. Nothing is logged before
    ``configure``; :meth:`abandon` ends a sink that never got one.
    """

    def __init__(self, uri: str | None = None, experiment: str = "", sweep_id: str = "", sqlite_wal: bool = True,
                 storage_url: str | None = None) -> None:
        import multiprocessing as mp

        from expt.sweep.sink import sink_main

        ctx = mp.get_context("spawn")
        self.queue, self.errors = ctx.Queue(), ctx.Queue()
        args = (self.queue, self.errors) + ((uri, experiment, sweep_id, sqlite_wal, storage_url) if uri else ())
        self.process = ctx.Process(target=sink_main, args=args, name="expt-mlflow-sink", daemon=False)
        self.process.start()
        self.configured = bool(uri)

    def configure(self, uri: str, experiment: str, sweep_id: str, sqlite_wal: bool = True,
                  storage_url: str | None = None) -> None:
        """The store to log to: the first message of a sink started without one."""
        self.queue.put({"op": "configure", "args": (uri, experiment, sweep_id, sqlite_wal, storage_url)})
        self.configured = True

    def abandon(self) -> None:
        """End a sink that was never configured (the sweep was refused before it existed): nothing to drain."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(30)
        self.queue.cancel_join_thread()

    def stop(self, close: str | None = None, timeout: float = 600) -> None:
        """Flush: the sink drains every message sent before ``stop``, then exits."""
        if self.process.is_alive():
            self.queue.put({"op": "stop", "close": close})
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
        # Whatever a dead sink did not read must not hold this process at exit (the queue's feeder thread).
        self.queue.cancel_join_thread()
        self.check()

    def check(self) -> None:
        """Raise if the sink failed; called while trials run, so a dead store stops the sweep early."""
        if not self.errors.empty():
            self.queue.cancel_join_thread()
            raise TrackingError(f"MLflow logging failed: {self.errors.get()}")
        if self.process.exitcode not in (0, None):
            self.queue.cancel_join_thread()
            raise TrackingError(f"the MLflow logging process exited with code {self.process.exitcode}; "
                                "run with --debug (EXPT_DEBUG=1) to see why")
