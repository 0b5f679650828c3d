"""A sweep's plan: the checked config, the data, the outer folds and the search space.

Built the same way by the process that starts a sweep, by every worker and by a
resume: from the config stored with the sweep, so they all evaluate the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.build import build
from expt.core.config import Composed, model_configs
from expt.core.cv import build_pipeline, feature_matrix, rows_of
from expt.core.errors import ConfigError
from expt.core.folds import check_folds
from expt.core.prepare import Prepared, check_estimator_task, prepare
from expt.core.settings import Config, Search, settings_of
from expt.core.space import FAMILY_SEP, Param, SearchSpace, apply_params, check_paths, parse_space
from expt.sweep.engine import Unit

if TYPE_CHECKING:
    import numpy as np
    from optuna import Trial
    from sklearn.pipeline import Pipeline

    from expt.core.cv import Splitter


@dataclass
class SweepPlan:
    prepared: Prepared
    space: SearchSpace
    family_models: dict[str, Any]
    units: list[Unit]
    manifest: dict[str, Any]

    @property
    def values(self) -> dict[str, Any]:
        """The config as a plain dict: for what logs or stores it as composed."""
        return self.prepared.values

    @property
    def config(self) -> Config:
        return self.prepared.config

    @property
    def settings(self) -> Search:
        """The search group, typed (a sweep's config always has one: :func:`make_plan` checks)."""
        assert self.config.search is not None
        return self.config.search

    @property
    def seed(self) -> int:
        return self.config.seed

    def config_for(self, params: Mapping[str, Any]) -> Config:
        """The config a trial evaluates: this one with the trial's parameters set (its family's model, in a
        model_selection search)."""
        return settings_of(apply_params(self.values, params, self.family_models))

    def pipeline_for(self, params: Mapping[str, Any], *, arrays: bool = False) -> Pipeline:
        """The pipeline a trial's parameters give; ``arrays``: for :attr:`matrix` instead of the frame."""
        config = self.config_for(params)
        estimator = build(config.model.estimator, where="model.estimator")
        check_estimator_task(estimator, self.prepared.dataset.task)
        data = self.prepared.dataset
        return build_pipeline(estimator, data.numeric, data.categorical, config.learner.preprocessing.as_dict(),
                              arrays=arrays)

    @cached_property
    def matrix(self) -> np.ndarray | None:
        """The features as one float array when all are numeric: what the inner folds fit and score on
        (:func:`expt.core.cv.feature_matrix`); None otherwise, and the inner folds take the frame."""
        data = self.prepared.dataset
        return feature_matrix(data.X, data.numeric, data.categorical)

    @property
    def epochs_per_fold(self) -> int | None:
        """A torch model's most epochs per fit (a booster's most rounds), when its epochs (rounds) are the
        pruner's steps.

        Only in a one-family search: in model_selection, an early epoch's score would be
        compared with other families' whole-fold scores, so there every model reports per fold.
        """
        estimator = self.config.model.estimator
        if self.family_models or not str(estimator.get("_target_", "")).startswith("expt.models."):
            return None
        if isinstance(estimator.get("booster"), dict):
            return self._rounds_per_fold(estimator["booster"])
        searched = next((p for p in self.space.params if p.name == "model.estimator.max_epochs"), None)
        return _most(searched) if searched is not None else int(estimator.get("max_epochs") or 1)

    def _rounds_per_fold(self, booster: Mapping[str, Any]) -> int:
        """n_estimators (CatBoost: iterations, default 1000), or the most a search may choose."""
        for key in ("n_estimators", "iterations", "num_boost_round", "num_trees"):
            searched = next((p for p in self.space.params if p.name == f"model.estimator.booster.{key}"), None)
            if searched is not None:
                return _most(searched)
            if booster.get(key) is not None:
                return int(booster[key])
        return 1000 if str(booster.get("_target_", "")).startswith("catboost.") else 100

    def objective(self, trial: Trial, unit: Unit) -> float:
        """Mean inner-CV score on the unit's training part; each inner fold (or, for a torch model,
        each epoch's validation score) is an intermediate value for the pruner."""
        import numpy as np
        import optuna
        from sklearn.base import clone

        matrix = self.matrix
        pipeline = self.pipeline_for(self.space.suggest(trial), arrays=matrix is not None)
        data, scorer = self.prepared.dataset, self.prepared.scorer
        X: Any = matrix[unit.train] if matrix is not None else data.X.iloc[unit.train]
        y = data.y[unit.train]
        rows = (lambda part: rows_of(X, part)) if matrix is not None else (lambda part: X.iloc[part])
        inner = self.inner_splitter(unit)
        scores: list[float] = []
        epochs = self.epochs_per_fold
        # Without a pruner nothing reads an inner fold's intermediate value (the inner scores are the attribute
        # below), and each report is a write to the storage: 3 of a trial's 9 journal appends, each fsynced.
        reports = self.settings.pruner != "none"

        def prune(step: int, where: str) -> None:
            if trial.should_prune():
                trial.set_user_attr("inner_scores", scores)
                trial.set_user_attr("pruned_at", where)
                raise optuna.TrialPruned()

        for fold, (train, test) in enumerate(inner.split(X, y)):
            with self._epoch_reports(trial, fold, epochs, prune):
                model = clone(pipeline).fit(rows(train), y[train])
            if fold == 0 and unit.test is None and self.config.tracking.records:  # for the trial's record
                from expt.meta.model_features import n_parameters

                trial.set_user_attr("n_parameters", n_parameters(model))
            scores.append(float(scorer(model, rows(test), y[test])))
            if epochs is None and reports:
                trial.report(scores[-1], fold)
                prune(fold, f"inner fold {fold}")
        trial.set_user_attr("inner_scores", scores)
        return float(np.mean(scores))

    def inner_splitter(self, unit: Unit) -> Splitter:
        """The inner folds of a unit's training part: shuffled, grouped or time-ordered as the outer ones are
        (grouped by the groups there; in time order there)."""
        assert self.prepared.folds is not None
        return self.prepared.folds.splitter(self.settings.inner_folds, rows=unit.train, shuffle=True,
                                            key="search.inner_folds")

    def _epoch_reports(self, trial: Trial, fold: int, epochs: int | None,
                       prune: Callable[[int, str], None]) -> AbstractContextManager[object]:
        import contextlib

        from expt.models.hooks import epoch_hooks

        if epochs is None:
            return contextlib.nullcontext()

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            if "valid_score" in row:  # none without a validation split (validation_fraction=0)
                trial.report(row["valid_score"], fold * epochs + epoch)
                prune(fold * epochs + epoch, f"inner fold {fold} epoch {epoch}")

        return epoch_hooks(scorer=self.prepared.scorer, on_epoch=on_epoch, metric=self.prepared.metric)

    def refit(self, params: dict[str, Any], unit: Unit) -> tuple[Pipeline, float | None]:
        data = self.prepared.dataset
        model = self.pipeline_for(params).fit(data.X.iloc[unit.train], data.y[unit.train])
        if unit.test is None:
            return model, None
        return model, float(self.prepared.scorer(model, data.X.iloc[unit.test], data.y[unit.test]))


def _most(param: Param) -> int:
    """The largest value a searched count (epochs, boosting rounds) may take: its high bound, or its largest
    choice."""
    return int(param.high) if param.high is not None else int(max(param.choices))


def make_plan(composed: Composed, family_models: dict[str, Any] | None = None,
              config_dir: str | Path | None = None) -> SweepPlan:
    """Check everything a sweep needs before any study or run exists."""
    import numpy as np

    if "search" not in composed.cfg:
        raise ConfigError(f"no search space for model {composed.choices.get('model')!r}; choose one with search=NAME")
    prepared = prepare(composed, train_folds=False)
    values, data = prepared.values, prepared.dataset
    search = prepared.config.search
    assert search is not None  # "search" in composed.cfg, and prepare validated it
    space = parse_space(search)
    model_param = next((p for p in space.params if p.name == "model"), None)
    if model_param is not None:
        if family_models is None:
            family_models = model_configs(model_param.choices, values, config_dir)
        from expt.core.build import missing_libraries

        missing = missing_libraries()  # a booster family without its package (expt-runner[boosting]) is left out
        usable = tuple(f for f in model_param.choices if data.task in family_models[f]["tasks"]
                       and family_models[f].get("family", f) not in missing)
        if not usable:
            raise ConfigError(f"none of search.space.model's choices handles {data.task}; add a model that does")
        space.params = [Param("model", "categorical", choices=usable) if p is model_param else p for p in space.params]
        space.families = {f: ps for f, ps in space.families.items() if f in usable}
    family_models = family_models or {}
    check_paths(space, values, family_models)
    folds = prepared.folds
    assert folds is not None
    outer = folds.splitter(search.outer_folds, shuffle=True, key="search.outer_folds")
    check_folds(folds, outer, data.y, key="search.outer_folds")
    units = [Unit(f"fold-{k}", k, train, test) for k, (train, test) in enumerate(outer.split(data.X, data.y))]
    units.append(Unit("final", len(units), np.arange(data.n_rows), None))
    plan = SweepPlan(prepared, space, family_models, units, {})
    for unit in units:
        where = f" in outer fold {unit.index}'s training part" if unit.test is not None else ""
        check_folds(folds, plan.inner_splitter(unit), data.y[unit.train], key="search.inner_folds", where=where)
    tests = [u.test.tolist() for u in units if u.test is not None]
    plan.manifest = {"folds": len(tests), "rows": data.n_rows, "fingerprint": data.fingerprint,
                     "hash": folds.digest(tests), "test_indices": tests}
    if folds.split != "shuffled":  # a shuffled sweep's manifest stays as it was
        plan.manifest["split"] = folds.describe()
    return plan


def display_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Trial parameters without the family prefix, for tables and MLflow params."""
    return {(k.split(FAMILY_SEP, 1)[1] if FAMILY_SEP in k else k): v for k, v in params.items()}
