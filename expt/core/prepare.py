"""From a composed config to everything a run needs, checked: shared by train, sweep and rerun.

Nothing is tracked here: every user mistake (config, data, a model that cannot take the
data) surfaces before any MLflow run or Optuna study exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from expt.core.build import build
from expt.core.config import Composed, resolve_values
from expt.core.cv import build_pipeline, check_class_counts
from expt.core.data import Dataset, load_dataset
from expt.core.errors import ConfigError
from expt.core.folds import CV_DEFAULTS, Folds, check_folds, folds_of
from expt.core.metrics import multiclass_name, resolve_metrics
from expt.core.schema import DATA, check_records_path, check_user_metadata, fill_data_defaults, validate
from expt.core.settings import Config, settings_of

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline

    from expt.core.cv import Splitter
    from expt.models.hooks import Scorer


@dataclass
class Prepared:
    """Everything a run needs, checked.

    ``config`` is what code reads; ``values`` is the same config as a plain dict, for what logs or hashes it as
    composed (``config.yaml``, params, a sweep's stored config) and for :func:`expt.core.space.apply_params`.
    """

    values: dict[str, Any]
    config: Config
    choices: dict[str, str]
    dataset: Dataset
    pipeline: Pipeline
    splitter: Splitter
    scorer: Scorer
    metric: str
    scorers: dict[str, Scorer] = field(default_factory=dict)  # every metric reported (name -> scorer), ``metric`` first
    folds: Folds | None = None  # how the rows may be split: every splitter of the run (a sweep's inner ones too)


def prepare(composed: Composed, *, train_folds: bool = True) -> Prepared:
    """Validate config and data and build the pipeline; raise ExptError before anything is tracked.

    ``train_folds=False``: a sweep's, whose folds are ``search.outer_folds`` and ``inner_folds`` (checked by
    :func:`expt.sweep.plan.make_plan`), not ``learner.cv.folds``: grouped or time-ordered folds are not checked
    against the latter.
    """
    import numpy as np
    from omegaconf import OmegaConf, open_dict

    cfg = composed.cfg
    data_spec = fill_data_defaults(resolve_values(cfg.data))
    validate(data_spec, DATA, "data")
    dataset = load_dataset(data_spec)
    with open_dict(cfg):
        cfg.data = OmegaConf.create({**data_spec, "task": dataset.task, "name": dataset.name})
    values = resolve_values(cfg)
    if isinstance(values.get("learner"), dict) and isinstance(values["learner"].get("cv"), dict):
        values["learner"]["cv"] = {**CV_DEFAULTS, **values["learner"]["cv"]}  # a learner config older than them
    validate(values)
    check_records_path(values["tracking"]["records"])
    check_user_metadata(values["tracking"])
    if not values["tracking"]["experiment"].strip():
        raise ConfigError("tracking.experiment is empty; name the MLflow experiment (tracking.experiment=expt)")
    model = values["model"]
    if dataset.task not in model["tasks"]:
        raise ConfigError(
            f"model {model['name']!r} handles {' and '.join(model['tasks'])}, but {dataset.name} is a "
            f"{dataset.task} task; pick another model (e.g. model=random_forest)"
        )
    estimator = build(model["estimator"], where="model.estimator")
    check_estimator_task(estimator, dataset.task)
    tracking = values["tracking"]
    if tracking["log_model"] and tracking["model_format"] == "skops" and type(estimator).__module__.startswith(
            "expt.models"):
        raise ConfigError(f"tracking.model_format=skops cannot save {type(estimator).__name__} (a torch network); set "
                          "tracking.model_format=cloudpickle")
    learner = values["learner"]
    cv = learner["cv"]
    folds = folds_of(dataset, cv, seed=one_seed(values), dropped=data_spec["drop"])  # its column out of the features
    check_network_input(estimator, dataset, learner["preprocessing"])
    splitter = folds.splitter(cv["folds"], repeats=cv["repeats"])
    if train_folds:
        check_folds(folds, splitter, dataset.y, key="learner.cv.folds")
    if dataset.task == "classification":
        check_class_counts(dataset.y, cv["folds"], stratified=cv["stratify"] is not False and folds.split == "shuffled")
    n_classes = int(len(np.unique(dataset.y))) if dataset.task == "classification" else 0
    metric = multiclass_name(learner["metric"][dataset.task], n_classes)
    scorers = resolve_metrics(learner["metrics"], task=dataset.task, selection=metric, estimator=estimator,
                              n_classes=n_classes)
    pipeline = build_pipeline(estimator, dataset.numeric, dataset.categorical, learner["preprocessing"])
    return Prepared(values, settings_of(values), dict(composed.choices), dataset, pipeline, splitter, scorers[metric],
                    metric, scorers, folds)


def one_seed(values: Mapping[str, Any]) -> int:
    """The top-level ``seed``: the one seed of train and sweep alike (splits, estimators, numpy, samplers).

    ``learner.seed`` is kept as ``${seed}`` so that configs logged when train split its folds with it
    still compose; one that says another seed is refused rather than silently ignored or obeyed.
    """
    seed = values["seed"]
    legacy = values["learner"].get("seed", seed)
    if legacy != seed:
        raise ConfigError(f"learner.seed={legacy} differs from seed={seed}, but the top-level seed is the one seed; "
                          f"set both to one value (seed={legacy} learner.seed={legacy}), or remove learner.seed")
    return int(seed)


def check_estimator_task(estimator: BaseEstimator, task: str) -> None:
    from sklearn.base import is_classifier, is_regressor

    name = type(estimator).__name__
    if task == "classification" and is_regressor(estimator):
        raise ConfigError(f"model.estimator {name} is a regressor but the data is a classification task; "
                          "choose a classifier or set data.task=regression")
    if task == "regression" and is_classifier(estimator):
        raise ConfigError(f"model.estimator {name} is a classifier but the data is a regression task; "
                          "choose a regressor or set data.task=classification")


def check_network_input(estimator: BaseEstimator, dataset: Dataset, preprocessing: Mapping[str, Any]) -> None:
    """What a torch network cannot take, named before any run exists (inside a fold it would be a NaN score)."""
    if not type(estimator).__module__.startswith("expt.models") or type(estimator).__module__ == "expt.models.boosting":
        return  # a booster routes missing values itself
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


