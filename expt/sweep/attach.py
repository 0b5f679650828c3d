"""A sweep in its storage: attach to it (create, join or resume), build the engine, replay, summarize.

The Optuna storage holds everything needed to continue: the resolved config, the
outer-fold manifest, one study per outer fold and one for the final search on all
data. Starting, joining (the same ``--sweep-id``) and resuming are one code path:
the plan is rebuilt from the stored config, stale trials are failed (resume only),
finished work is replayed to the MLflow sink (which skips what it already has),
and the workers take what budget is left.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from expt.core.config import Composed, compose, logged_yaml
from expt.core.errors import ConfigError, UsageError
from expt.sweep.engine import Engine, Unit, UnitResult, counts, fail_stale_trials, finalized, result_of
from expt.sweep.plan import SweepPlan, make_plan
from expt.sweep.storage import META_CONFIG, META_FAMILIES, META_MANIFEST, open_storage

if TYPE_CHECKING:
    from optuna import Study
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial


class Reporting(Protocol):
    """Where trials and finished units go: :class:`expt.sweep.reporter.Reporter` (which imports what imports this
    module, so it is not named here)."""

    def trial(self, unit: Unit, frozen: FrozenTrial) -> None: ...

    def unit_done(self, unit: Unit, result: UnitResult, study: Study) -> None: ...


def _study(storage: BaseStorage, name: str, *, create: bool, sampler: BaseSampler | None = None,
           pruner: BasePruner | None = None) -> Study:
    import optuna

    if create:
        return optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                   sampler=sampler, pruner=pruner)
    return optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)


def _exists(storage: BaseStorage, name: str) -> bool:
    return any(s.study_name == name for s in storage.get_all_studies())


@dataclass
class Sweep:
    sweep_id: str
    storage_url: str
    plan: SweepPlan
    studies: dict[str, Study]  # one per unit, in the plan's order
    choices: dict[str, str]


def attach(sweep_id: str, storage_url: str, *, composed: Composed | None = None, resume: bool = False,
           config_dir: str | None = None, worker: int = 0, check: Callable[[SweepPlan], None] | None = None) -> Sweep:
    """Create the sweep's studies, or load them and rebuild the plan from the stored config."""
    import logging

    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    journal = Path(storage_url) if "://" not in storage_url else None
    made = [p for p in (journal, *journal.parents) if not p.exists()] if journal else []  # innermost first
    storage = open_storage(storage_url)
    exists = _exists(storage, sweep_id)
    if resume and not exists:
        from expt.tracking.client import mask_credentials

        raise UsageError(f"no sweep {sweep_id!r} in the storage {mask_credentials(storage_url)}; check the id and "
                         "--storage")
    if exists:
        meta = _study(storage, sweep_id, create=False)
        stored = _from_stored(meta.user_attrs[META_CONFIG])
        if composed is not None and not resume and (
                _config_text(composed, make_plan(composed, config_dir=config_dir)) != meta.user_attrs[META_CONFIG]):
            raise ConfigError(f"sweep {sweep_id!r} already exists with another config; resume it with "
                              f"--resume {sweep_id}, or start a new one with another --sweep-id")
        composed = stored
        plan = make_plan(composed, family_models=meta.user_attrs.get(META_FAMILIES))
        if plan.manifest["hash"] != meta.user_attrs[META_MANIFEST]:
            raise UsageError(f"the data or folds of sweep {sweep_id!r} changed since it started (fold manifest "
                             "differs); restore the data or start a new sweep")
    else:
        assert composed is not None
        try:
            plan = make_plan(composed, config_dir=config_dir)
            if check is not None:
                check(plan)
        except BaseException:
            for path in made:  # a config refused before the sweep existed leaves no empty journal behind
                path.unlink() if path.is_file() else path.rmdir() if not any(path.iterdir()) else None
            raise
        meta = _study(storage, sweep_id, create=True)
        meta.set_user_attr(META_CONFIG, _config_text(composed, plan))
        meta.set_user_attr(META_MANIFEST, plan.manifest["hash"])
        meta.set_user_attr(META_FAMILIES, plan.family_models)
    studies: dict[str, Study] = {}
    for unit in plan.units:
        existing = _exists(storage, f"{sweep_id}/{unit.key}")
        n_seen = len(_study(storage, f"{sweep_id}/{unit.key}", create=False).trials) if existing else 0
        studies[unit.key] = _study(storage, f"{sweep_id}/{unit.key}", create=True,
                                   sampler=_sampler(plan, unit, worker, n_seen), pruner=_pruner(plan))
    return Sweep(sweep_id, storage_url, plan, studies, composed.choices)


def _sampler(plan: SweepPlan, unit: Unit, worker: int, n_seen: int) -> BaseSampler:
    """Seeded per unit, per worker and per restart, so no two processes propose the same points."""
    from expt.core.space import make_sampler

    return make_sampler(plan.settings.sampler, plan.seed * 1_000_003 + unit.index * 1009 + worker * 101 + n_seen)


def _pruner(plan: SweepPlan) -> BasePruner:
    from expt.core.space import make_pruner

    epochs = plan.epochs_per_fold
    if epochs is None:
        return make_pruner(plan.settings.pruner, plan.settings.inner_folds)
    return make_pruner(plan.settings.pruner, plan.settings.inner_folds * epochs, warmup=min(5, epochs // 4))


def _config_text(composed: Composed, plan: SweepPlan) -> str:
    """The config kept in the storage (which anyone with the journal file or database can read): no password;
    the processes that log get it back with :func:`expt.tracking.uri.with_credentials`."""
    from expt.tracking.uri import masked_config

    return logged_yaml(masked_config(plan.values), composed.choices)


def _from_stored(text: str) -> Composed:
    """The stored config is untrusted input like any logged config: it goes through compose and the allow-list."""
    with tempfile.TemporaryDirectory(prefix="expt-sweep-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text)
        return compose([f"conf={path}"])


def make_engine(sweep: Sweep, reporter: Reporting, on_progress: Callable[[], None] | None = None,
                keep_going: Callable[[], bool] = lambda: True) -> Engine:
    plan = sweep.plan

    def on_trial(unit: Unit, frozen: FrozenTrial) -> None:
        reporter.trial(unit, frozen)
        if on_progress is not None:
            on_progress()

    def on_unit(unit: Unit, result: UnitResult) -> None:
        reporter.unit_done(unit, result, sweep.studies[unit.key])
        if on_progress is not None:
            on_progress()

    return Engine(units=plan.units, studies=sweep.studies, n_trials=plan.settings.n_trials,
                  max_failure_rate=plan.settings.max_failure_rate, objective=plan.objective, refit=plan.refit,
                  on_trial=on_trial, on_unit=on_unit, keep_going=keep_going)


def fail_stale(sweep: Sweep) -> list[tuple[Unit, FrozenTrial]]:
    """--resume: every trial left RUNNING is a dead worker's (the user says none is at work)."""
    return [(u, t) for u in sweep.plan.units for t in fail_stale_trials(sweep.studies[u.key])]


def reap(sweep: Sweep) -> list[tuple[Unit, FrozenTrial]]:
    """Joining: only trials whose heartbeat stopped are a dead worker's (RDB storages; none on a journal)."""
    from expt.sweep.coordination import reap_stale

    reason = "worker died mid-trial (no heartbeat); its configuration is re-run"
    return [(u, t) for u in sweep.plan.units for t in reap_stale(sweep.studies[u.key], reason)]


def replay(sweep: Sweep, reporter: Reporting) -> None:
    """Send everything already in the storage to the sink; it logs only what MLflow lacks."""
    from optuna.trial import TrialState

    from expt.sweep.storage import SURPLUS

    for unit in sweep.plan.units:
        study = sweep.studies[unit.key]
        for t in study.get_trials(deepcopy=False):
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
                    t.state == TrialState.FAIL and not t.user_attrs.get(SURPLUS)):
                reporter.trial(unit, t)
        stored = result_of(study)
        if stored is not None:
            # The final model may have died with the process before the sink logged it; refitting is
            # deterministic, and the sink drops it again if the final run already ended with it.
            model = None
            if unit.test is None and sweep.plan.config.tracking.log_model:
                model, _ = sweep.plan.refit(stored["best_params"], unit)
            reporter.unit_done(unit, UnitResult(unit.key, stored["outer_score"], stored["inner_best"],
                                                stored["best_params"], stored["best_number"], model), study)


def summary(sweep: Sweep) -> dict[str, Any]:
    import numpy as np

    folds = [_finished(sweep.studies[u.key]) for u in sweep.plan.units if u.test is not None]
    outer = [f["outer_score"] for f in folds]
    inner = [f["inner_best"] for f in folds]
    return {"outer": outer, "inner": inner, "outer_mean": float(np.mean(outer)), "outer_std": float(np.std(outer)),
            "inner_mean": float(np.mean(inner)), "final": result_of(sweep.studies["final"]),
            "counts": {u.key: counts(sweep.studies[u.key]) for u in sweep.plan.units}}


def _finished(study: Study) -> dict[str, Any]:
    result = result_of(study)
    assert result is not None  # a summary is made of finalized units
    return result


def all_finalized(sweep: Sweep) -> bool:
    return all(finalized(sweep.studies[u.key]) for u in sweep.plan.units)


def manifest_json(plan: SweepPlan) -> str:
    return json.dumps(plan.manifest)
