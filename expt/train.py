"""``expt train``: one configuration, k-fold cross-validated, refit, tracked.

Split in two so that nothing is written for bad input: :func:`prepare` composes,
validates, loads the data and builds the estimator (every user mistake surfaces
here), and only then :func:`run_train` opens MLflow runs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from expt.config import Composed, build, logged_yaml, resolve_values
from expt.cv import CVResult, FoldResult, build_pipeline, check_class_counts, cross_validate, get_scorer, make_splitter
from expt.data import Dataset, load_dataset
from expt.errors import ConfigError
from expt.records import check_records_path
from expt.schema import DATA, fill_data_defaults, validate
from expt.tracking import mask_credentials


@dataclass
class Prepared:
    """Everything a run needs, checked."""

    values: dict[str, Any]
    choices: dict[str, str]
    dataset: Dataset
    pipeline: Any
    splitter: Any
    scorer: Any
    metric: str


@dataclass
class TrainResult:
    run_id: str
    experiment_id: str
    uri: str
    cv: CVResult
    prepared: Prepared


def prepare(composed: Composed) -> Prepared:
    """Validate config and data and build the pipeline; raise ExptError before anything is tracked."""
    from omegaconf import OmegaConf, open_dict

    cfg = composed.cfg
    data_spec = fill_data_defaults(resolve_values(cfg.data))
    validate(data_spec, DATA, "data")
    dataset = load_dataset(data_spec)
    with open_dict(cfg):
        cfg.data = OmegaConf.create({**data_spec, "task": dataset.task, "name": dataset.name})
    values = resolve_values(cfg)
    validate(values)
    check_records_path(values["tracking"]["records"])
    if not values["tracking"]["experiment"].strip():
        raise ConfigError("tracking.experiment is empty; name the MLflow experiment (tracking.experiment=expt)")
    model = values["model"]
    if dataset.task not in model["tasks"]:
        raise ConfigError(
            f"model {model['name']!r} handles {' and '.join(model['tasks'])}, but {dataset.name} is a "
            f"{dataset.task} task; pick another model (e.g. model=random_forest)"
        )
    estimator = build(model["estimator"], where="model.estimator")
    _check_estimator_task(estimator, dataset.task)
    learner = values["learner"]
    _check_network_input(estimator, dataset, learner["preprocessing"])
    cv = learner["cv"]
    splitter = make_splitter(dataset.task, dataset.n_rows, folds=cv["folds"], repeats=cv["repeats"],
                             shuffle=cv["shuffle"], stratify=cv["stratify"], seed=learner["seed"])
    if dataset.task == "classification":
        check_class_counts(dataset.y, cv["folds"], stratified=cv["stratify"] is not False)
    metric = learner["metric"][dataset.task]
    scorer = get_scorer(metric, dataset.task)
    pipeline = build_pipeline(estimator, dataset.numeric, dataset.categorical, learner["preprocessing"])
    return Prepared(values, dict(composed.choices), dataset, pipeline, splitter, scorer, metric)


def _check_estimator_task(estimator: Any, task: str) -> None:
    from sklearn.base import is_classifier, is_regressor

    name = type(estimator).__name__
    if task == "classification" and is_regressor(estimator):
        raise ConfigError(f"model.estimator {name} is a regressor but the data is a classification task; "
                          "choose a classifier or set data.task=regression")
    if task == "regression" and is_classifier(estimator):
        raise ConfigError(f"model.estimator {name} is a classifier but the data is a regression task; "
                          "choose a regressor or set data.task=classification")


def _check_network_input(estimator: Any, dataset: Dataset, preprocessing: dict[str, Any]) -> None:
    """What a torch network cannot take, named before any run exists (inside a fold it would be a NaN score)."""
    if not type(estimator).__module__.startswith("expt.models"):
        return
    name = type(estimator).__name__
    if preprocessing["impute"] == "none" and dataset.numeric and dataset.X[dataset.numeric].isna().to_numpy().any():
        raise ConfigError(f"{name} cannot take missing values, and learner.preprocessing.impute=none leaves those of "
                          f"{dataset.name} in; set learner.preprocessing.impute=median")
    if not getattr(estimator, "needs_image", False):
        return
    if estimator.image_shape is None:
        raise ConfigError(f"{name} reads rows as images, but {dataset.name} is a table ({dataset.X.shape[1]} columns, "
                          "no data.image_shape); use model=mlp, or set data.image_shape=[H,W] for image data")
    if dataset.categorical:
        raise ConfigError(f"{name} reads rows as images, but {dataset.name} has non-numeric columns "
                          f"({', '.join(dataset.categorical[:3])}); use model=mlp for tables")
    from expt.models.estimators import image_shape

    try:
        image_shape(estimator.image_shape, len(dataset.numeric), name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def run_train(prepared: Prepared, *, on_fold: Callable[[FoldResult], None] | None = None,
              tags: dict[str, str] | None = None) -> TrainResult:
    """Cross-validate, refit on all data and log the run tree; runs end FAILED/KILLED on any error."""
    import numpy as np

    from expt.tracking import ENVIRONMENT, Tracker, environment_lock, environment_tags, flatten

    values, data = prepared.values, prepared.dataset
    seed = values["seed"]
    random.seed(seed)
    np.random.seed(seed)
    tracking = values["tracking"]
    tracker = Tracker(tracking["uri"], tracking["experiment"], sqlite_wal=tracking["sqlite_wal"])
    tags = {**environment_tags(data.fingerprint, seed), "expt.run_type": "train", "expt.data": data.name,
            "expt.model": values["model"]["name"], "expt.family": values["model"]["family"], **(tags or {})}
    parent = tracker.start(f"{data.name}-{values['model']['name']}", tags)
    try:
        shown = _masked(values)
        tracker.log(parent, params=flatten({k: v for k, v in shown.items() if k != "search"}))  # sweep-only
        tracker.log_text(parent, logged_yaml(shown, prepared.choices), "config.yaml")
        tracker.log_text(parent, environment_lock(), ENVIRONMENT)

        def log_fold(fold: FoldResult) -> None:
            _log_fold(tracker, parent, tags, prepared.metric, fold)
            if on_fold is not None:
                on_fold(fold)

        result = cross_validate(prepared.pipeline, data.X, data.y, cv=prepared.splitter, scoring=prepared.scorer,
                                metric=prepared.metric, on_fold=log_fold)
        tracker.log(parent, metrics=_summary_metrics(result))
        tracker.log_steps(parent, f"fold_{prepared.metric}", result.scores)
        if tracking["log_model"]:
            from sklearn.base import clone

            final = clone(prepared.pipeline).fit(data.X, data.y)
            tracker.log_sklearn_model(parent, final, data.X, tracking["model_format"])
        record = _record(prepared, result, parent, tracker) if tracking["records"] else None
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
    if record is not None:
        _append_record(tracking["records"], record)
    return TrainResult(parent, tracker.experiment_id, tracker.uri, result, prepared)


def _record(prepared: Prepared, result: CVResult, run_id: str, tracker: Any) -> dict[str, Any] | None:
    """The run's record, also logged with it; a record that cannot be made is a warning, not a failed run."""
    import json
    import warnings

    from expt.records import ARTIFACT, train_record

    if result.n_failed == len(result.folds):
        return None
    try:
        record = train_record(prepared, result, run_id, tracker.experiment_id, tracker.uri)
    except Exception as exc:  # noqa: BLE001 - the run itself is fine
        warnings.warn(f"no record for this run: {type(exc).__name__}: {exc}", stacklevel=2)
        return None
    tracker.log_text(run_id, json.dumps(record, sort_keys=True) + "\n", ARTIFACT)
    tracker.log(run_id, tags={"expt.records": "1"})
    return record


def _append_record(path: str, record: dict[str, Any]) -> None:
    import warnings

    from expt.records import RecordStore

    try:
        RecordStore(path).append([record])
    except OSError as exc:
        warnings.warn(f"record not appended to {path} ({exc.strerror or exc}); it is logged with the run as "
                      "records.jsonl", stacklevel=2)


def _masked(values: dict[str, Any]) -> dict[str, Any]:
    tracking = {**values["tracking"], "uri": mask_credentials(values["tracking"]["uri"])}
    return {**values, "tracking": tracking}


def _log_fold(tracker: Any, parent: str, tags: dict[str, str], metric: str, fold: FoldResult) -> None:
    """A fold's child run is written after the fold ends: it is never seen RUNNING."""
    child_tags = {**tags, "expt.run_type": "fold", "expt.fold": str(fold.index)}
    child = tracker.start(f"fold-{fold.index}", child_tags, parent_id=parent,
                          start_time=fold.started)
    metrics = {"fit_time": fold.fit_time, "score_time": fold.score_time}
    if fold.error is None:
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


def epoch_series(history: list[dict[str, float]] | None, metric: str) -> dict[str, list[float]]:
    """A torch model's per-epoch history as MLflow series (step = epoch): train_loss, valid_loss, valid_<metric>."""
    if not history:
        return {}
    names = {"train_loss": "train_loss", "valid_loss": "valid_loss", "valid_score": f"valid_{metric}"}
    return {names[k]: [row[k] for row in history] for k in names if k in history[0]}


def _summary_metrics(result: CVResult) -> dict[str, float]:
    import numpy as np

    m = result.metric
    ok = [f for f in result.folds if f.error is None]
    return {
        f"{m}_mean": result.mean,
        f"{m}_std": result.std,
        f"train_{m}_mean": float(np.mean([f.train_score for f in ok])),
        "fit_time_mean": float(np.mean([f.fit_time for f in result.folds])),
        "n_folds": float(len(result.folds)),
        "n_failed_folds": float(result.n_failed),
    }
