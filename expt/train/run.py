"""``expt train``: one configuration, k-fold cross-validated, refit, tracked.

Split in two so that nothing is written for bad input: :func:`expt.core.prepare.prepare`
composes, validates, loads the data and builds the estimator (every user mistake
surfaces there), and only then :func:`run_train` opens MLflow runs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from expt.core.build import trusted_prefixes
from expt.core.config import logged_yaml
from expt.core.cv import CVResult, FoldResult, cross_validate
from expt.core.prepare import Prepared
from expt.core.timeline import mark
from expt.tracking.tags import (
    DATA_TAG,
    FAMILY_TAG,
    FOLDS_TAG,
    METRIC_TAG,
    MODEL_TAG,
    RUN_TYPE_TAG,
    SPLIT_TAG,
    TRAIN_RUN,
    TRUSTED_TAG,
)
from expt.tracking.uri import masked_config

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from expt.core.offload import InlineEvaluator
    from expt.train.writer import Writer


@dataclass
class TrainResult:
    run_id: str
    experiment_id: str
    uri: str
    cv: CVResult
    prepared: Prepared


def run_train(prepared: Prepared, *, on_fold: Callable[[FoldResult], None] | None = None,
              tags: dict[str, str] | None = None, writer: Writer | None = None) -> TrainResult:
    """Cross-validate, refit on all data and log the run tree; runs end FAILED/KILLED on any error.

    The writes go to ``writer`` (:mod:`expt.train.process`): one the caller started early (``expt train`` starts
    it before composing), else one started here; either way every write is done when this returns.
    """
    from expt.train.process import start_writer

    own = writer is None
    used = start_writer() if writer is None else writer
    try:
        result = queue_train(prepared, used, on_fold=on_fold, tags=tags)
        run_id, experiment_id, uri = used.wait()
    finally:
        if own:
            used.close()
    return TrainResult(run_id, experiment_id, uri, result, prepared)


def queue_train(prepared: Prepared, writer: Writer, *, on_fold: Callable[[FoldResult], None] | None = None,
                tags: dict[str, str] | None = None) -> CVResult:
    """The run's work here and its writes sent to ``writer``, which may still be writing when this returns
    (``writer.wait()`` says when the run is written, and raises if a write failed)."""
    import numpy as np

    from expt.tracking.client import flatten, user_metadata
    from expt.tracking.environment import ENVIRONMENT, environment_lock
    from expt.train.writer import light

    config, data = prepared.config, prepared.dataset
    random.seed(config.seed)
    np.random.seed(config.seed)
    tracking = config.tracking
    writer.configure(tracking.uri, tracking.experiment, tracking.sqlite_wal)
    tags = _run_tags(prepared, tags)
    plots = tracking.plots
    evaluator = None  # the evaluation: drawn by the writer (a grid's), else in a thread here (expt.core.offload)
    if plots and not writer.evaluates:
        from expt.core.offload import InlineEvaluator

        evaluator = InlineEvaluator()
    try:
        shown = masked_config(prepared.values)
        writer.call("open", tracking.run_name or f"{data.name}-{config.model.name}",
                    {**tags, **user_metadata(tracking)},
                    flatten({k: v for k, v in shown.items() if k != "search"}),  # search: a sweep's
                    {"config.yaml": logged_yaml(shown, prepared.choices), ENVIRONMENT: environment_lock()})

        def log_fold(fold: FoldResult) -> None:
            writer.call("fold", tags, prepared.metric, light(fold))
            writer.check()  # a store that cannot be written stops the run here, not after the last fold
            if on_fold is not None:
                on_fold(fold)

        sized = bool(tracking.records) and not tracking.log_model  # no final model: a fold model's size
        result = cross_validate(prepared.pipeline, data.X, data.y, cv=prepared.splitter, scoring=prepared.scorer,
                                metric=prepared.metric, on_fold=log_fold, return_models=plots or sized,
                                scorers=prepared.scorers)
        mark("train: folds done")
        fold_model = next((f.model for f in result.folds if f.error is None and f.model is not None), None)
        if evaluator is not None:
            evaluator.submit(_evaluation(prepared, result))
        elif plots:
            writer.call("evaluate", _evaluation(prepared, result))
        for fold in result.folds:
            fold.model = None  # the caller gets scores, not k fitted models
        writer.call("summary", _summary_metrics(result), {f"fold_{m}": result.fold_scores(m) for m in result.metrics})
        final = None  # the refit model, when logged: the record's n_parameters come from it, else from a fold's
        if tracking.log_model:
            from sklearn.base import clone

            final = clone(prepared.pipeline).fit(data.X, data.y)
            mark("train: refit")
            writer.call("model", final, data.X, tracking.model_format)
        if tracking.records:
            record = _record(prepared, result, final if final is not None else fold_model)
            if record is not None:
                writer.call("record", record, tracking.records)
        mark("train: record")
        if evaluator is not None:
            _hand_evaluation(writer, evaluator)
        writer.call("end", "FINISHED")
    except KeyboardInterrupt:
        _abort(writer, "KILLED")
        raise
    except BaseException:
        _abort(writer, "FAILED")
        raise
    finally:
        if evaluator is not None:
            evaluator.close()
    return result


def _hand_evaluation(writer: Writer, evaluator: InlineEvaluator) -> None:
    """The evaluation's files to the writer, which removes them once logged."""
    handed = evaluator.handover()
    if handed is not None:
        mark("train: evaluation done")
        writer.call("evaluation", *handed)


def _abort(writer: Writer, status: str) -> None:
    """End the run ``status`` and wait for it; the error on the way in is the one reported."""
    from expt.core.errors import TrackingError

    try:
        writer.wait(writer.call("abort", status))
    except TrackingError:
        pass


def _run_tags(prepared: Prepared, extra: dict[str, str] | None) -> dict[str, str]:
    from expt.tracking.environment import environment_tags

    config, data = prepared.config, prepared.dataset
    folds = {}  # the folds (their kind and their hash): a rerun --check compares them, a grid pairs by them
    if prepared.folds is not None:
        folds = {SPLIT_TAG: prepared.folds.describe(),
                 FOLDS_TAG: prepared.folds.manifest_hash(prepared.splitter, data.X, data.y)}
    return {**environment_tags(data.fingerprint, config.seed), RUN_TYPE_TAG: TRAIN_RUN, DATA_TAG: data.name,
            MODEL_TAG: config.model.name, FAMILY_TAG: config.model.family,
            METRIC_TAG: prepared.metric,  # the selecting one of the metrics logged
            TRUSTED_TAG: ",".join(trusted_prefixes()), **folds, **(extra or {})}  # a rerun must trust them again


def _evaluation(prepared: Prepared, result: CVResult) -> dict[str, Any]:
    """The evaluation's job (:func:`expt.core.evaluation.evaluate_and_draw`): the fold models, their held-out
    rows and predictions."""
    data = prepared.dataset
    folds = [(f.index, f.model, f.test_index, f.outputs) for f in result.folds
             if f.error is None and f.model is not None]
    return {"folds": folds, "X": data.X, "y": data.y, "scorer": prepared.scorer, "metric": prepared.metric,
            "task": data.task, "seed": prepared.config.seed}


def _record(prepared: Prepared, result: CVResult, final: Pipeline | None = None) -> dict[str, Any] | None:
    """The run's record, without its run (the writer adds it); one that cannot be made is a warning, not a
    failed run."""
    import warnings

    from expt.meta.records import train_record

    if result.n_failed == len(result.folds):
        return None
    try:
        return train_record(prepared, result, final)
    except Exception as exc:  # noqa: BLE001 - the run itself is fine
        warnings.warn(f"no record for this run: {type(exc).__name__}: {exc}", stacklevel=2)
        return None


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
