"""``expt train``: one configuration, k-fold cross-validated, refit, tracked.

Split in two so that nothing is written for bad input: :func:`expt.core.prepare.prepare`
composes, validates, loads the data and builds the estimator (every user mistake
surfaces there), and only then :func:`run_train` opens MLflow runs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from expt.core.build import trusted_prefixes
from expt.core.config import logged_yaml
from expt.core.cv import CVResult, FoldResult, cross_validate
from expt.core.prepare import Prepared
from expt.models.hooks import epoch_series
from expt.tracking.environment import mark
from expt.tracking.uri import masked_config


@dataclass
class TrainResult:
    run_id: str
    experiment_id: str
    uri: str
    cv: CVResult
    prepared: Prepared


def run_train(prepared: Prepared, *, on_fold: Callable[[FoldResult], None] | None = None,
              tags: dict[str, str] | None = None) -> TrainResult:
    """Cross-validate, refit on all data and log the run tree; runs end FAILED/KILLED on any error.

    With ``tracking.plots`` the fold models go to a side process that writes the out-of-fold
    predictions and draws the evaluation plots while this one refits and logs the final model
    (with no idle core, this process does it after logging the model: :mod:`expt.core.offload`).
    """
    import numpy as np

    from expt.tracking.client import Tracker, user_metadata

    values, data = prepared.values, prepared.dataset
    seed = values["seed"]
    random.seed(seed)
    np.random.seed(seed)
    tracking = values["tracking"]
    side = _start_side(tracking)  # first: its imports overlap MLflow's and the folds
    try:
        mark("train: side process spawned")
        tracker = Tracker(tracking["uri"], tracking["experiment"], sqlite_wal=tracking["sqlite_wal"])
        mark("train: store open")
        tags = _run_tags(prepared, tags)
        parent = tracker.start(tracking["run_name"] or f"{data.name}-{values['model']['name']}",
                               {**tags, **user_metadata(tracking)})
        result, record = _run(prepared, tracker, parent, tags, side, on_fold)
    finally:
        if side is not None:
            side.close()
            mark("train: side process closed")
    if record is not None:
        _append_record(tracking["records"], record)
    return TrainResult(parent, tracker.experiment_id, tracker.uri, result, prepared)


def _run_tags(prepared: Prepared, extra: dict[str, str] | None) -> dict[str, str]:
    from expt.tracking.environment import TRUSTED_TAG, environment_tags

    values, data = prepared.values, prepared.dataset
    return {**environment_tags(data.fingerprint, values["seed"]), "expt.run_type": "train", "expt.data": data.name,
            "expt.model": values["model"]["name"], "expt.family": values["model"]["family"],
            "expt.metric": prepared.metric,  # the selecting one of the metrics logged
            TRUSTED_TAG: ",".join(trusted_prefixes()), **(extra or {})}  # a rerun must trust them again


def _start_side(tracking: dict[str, Any]) -> Any:
    if not tracking.get("plots", True):
        return None
    from expt.core.offload import start_evaluator

    return start_evaluator()


def _run(prepared: Prepared, tracker: Any, parent: str, tags: dict[str, str], side: Any,
         on_fold: Callable[[FoldResult], None] | None) -> tuple[CVResult, dict[str, Any] | None]:
    from expt.tracking.client import flatten
    from expt.tracking.environment import ENVIRONMENT, environment_lock

    values, data, tracking = prepared.values, prepared.dataset, prepared.values["tracking"]
    try:
        shown = masked_config(values)
        tracker.log(parent, params=flatten({k: v for k, v in shown.items() if k != "search"}))  # sweep-only
        tracker.log_text(parent, logged_yaml(shown, prepared.choices), "config.yaml")
        tracker.log_text(parent, environment_lock(), ENVIRONMENT)
        mark("train: parent run started, config logged")

        def log_fold(fold: FoldResult) -> None:
            _log_fold(tracker, parent, tags, prepared.metric, fold)
            if on_fold is not None:
                on_fold(fold)

        sized = bool(tracking["records"]) and not tracking["log_model"]  # no final model: a fold model's size
        result = cross_validate(prepared.pipeline, data.X, data.y, cv=prepared.splitter, scoring=prepared.scorer,
                                metric=prepared.metric, on_fold=log_fold, return_models=side is not None or sized,
                                scorers=prepared.scorers)
        mark("train: folds done")
        fold_model = next((f.model for f in result.folds if f.error is None and f.model is not None), None)
        if side is not None:
            _submit(side, prepared, result)
        elif sized:
            for fold in result.folds:
                fold.model = None  # kept for its size only: the caller gets scores, not k fitted models
        tracker.log(parent, metrics=_summary_metrics(result),
                    series={f"fold_{m}": result.fold_scores(m) for m in result.metrics})
        final = None  # the refit model, when logged: the record's n_parameters come from it, else from a fold's
        if tracking["log_model"]:
            from sklearn.base import clone

            final = clone(prepared.pipeline).fit(data.X, data.y)
            mark("train: refit")
            tracker.log_sklearn_model(parent, final, data.X, tracking["model_format"])
            mark("train: model logged")
        record = _record(prepared, result, parent, tracker, final if final is not None else fold_model) \
            if tracking["records"] else None
        mark("train: record")
        if side is not None:
            _log_evaluation(tracker, parent, side)
            mark("train: evaluation logged")
    except KeyboardInterrupt:
        tracker.end_quietly([parent], "KILLED")
        tracker.checkpoint()
        raise
    except BaseException:
        tracker.end_quietly([parent], "FAILED")
        tracker.checkpoint()
        raise
    tracker.end(parent)
    tracker.checkpoint()
    return result, record


def _submit(side: Any, prepared: Prepared, result: CVResult) -> None:
    """The fold models and their held-out rows to the side process; this one no longer needs the models."""
    data = prepared.dataset
    folds = [(f.index, f.model, f.test_index, f.outputs) for f in result.folds
             if f.error is None and f.model is not None]
    side.submit({"folds": folds, "X": data.X, "y": data.y, "scorer": prepared.scorer, "metric": prepared.metric,
                 "task": data.task, "seed": prepared.values["seed"]})
    for fold in result.folds:
        fold.model = None


def _log_evaluation(tracker: Any, run_id: str, side: Any) -> None:
    """``predictions.parquet`` and ``plots/`` from the side process; one that failed is a warning, not a failed run."""
    import warnings

    try:
        files = side.result()
    except RuntimeError as exc:
        warnings.warn(f"no out-of-fold predictions or plots for this run: {exc}", stacklevel=2)
        return
    tracker.log_files(run_id, [files["predictions"]])
    tracker.log_files(run_id, files["plots"], "plots")


def _record(prepared: Prepared, result: CVResult, run_id: str, tracker: Any,
            final: Any = None) -> dict[str, Any] | None:
    """The run's record, also logged with it; a record that cannot be made is a warning, not a failed run."""
    import json
    import warnings

    from expt.meta.records import ARTIFACT, train_record

    if result.n_failed == len(result.folds):
        return None
    try:
        record = train_record(prepared, result, run_id, tracker.experiment_id, tracker.uri, final)
    except Exception as exc:  # noqa: BLE001 - the run itself is fine
        warnings.warn(f"no record for this run: {type(exc).__name__}: {exc}", stacklevel=2)
        return None
    tracker.log_text(run_id, json.dumps(record, sort_keys=True) + "\n", ARTIFACT)
    tracker.log(run_id, tags={"expt.records": "1"})
    return record


def _append_record(path: str, record: dict[str, Any]) -> None:
    import warnings

    from expt.meta.records import RecordStore

    try:
        RecordStore(path).append([record])
    except OSError as exc:
        warnings.warn(f"record not appended to {path} ({exc.strerror or exc}); it is logged with the run as "
                      "records.jsonl", stacklevel=2)


def _log_fold(tracker: Any, parent: str, tags: dict[str, str], metric: str, fold: FoldResult) -> None:
    """A fold's child run is written after the fold ends, so it is RUNNING only between the three store calls
    below; a grid's ``--resume`` ends one a SIGKILL left there KILLED."""
    child_tags = {**tags, "expt.run_type": "fold", "expt.fold": str(fold.index)}
    child = tracker.start(f"fold-{fold.index}", child_tags, parent_id=parent,
                          start_time=fold.started)
    metrics = {"fit_time": fold.fit_time, "score_time": fold.score_time}
    if fold.error is None:
        metrics.update(fold.scores)
        metrics[metric] = fold.score
        metrics[f"train_{metric}"] = fold.train_score
    extra = {"expt.error": fold.error[:5000]} if fold.error else {}
    try:
        tracker.log(child, metrics=metrics, params={"fold": fold.index, "n_train": fold.n_train,
                                                    "n_test": fold.n_test}, tags=extra,
                    series=epoch_series(fold.history, metric))  # a torch model's epochs, in the same batch
    except BaseException:
        tracker.end_quietly([child], "FAILED")
        raise
    tracker.end(child, "FAILED" if fold.error else "FINISHED",
                end_time=fold.started + fold.fit_time + fold.score_time)


def _summary_metrics(result: CVResult) -> dict[str, float]:
    import numpy as np

    m = result.metric
    ok = [f for f in result.folds if f.error is None]
    return {
        **result.summary(),  # <metric>_mean and _std of every metric, the selecting one first
        f"{m}_mean": result.mean,
        f"{m}_std": result.std,
        f"train_{m}_mean": float(np.mean([f.train_score for f in ok])),
        "fit_time_mean": float(np.mean([f.fit_time for f in result.folds])),
        "n_folds": float(len(result.folds)),
        "n_failed_folds": float(result.n_failed),
    }
