"""Nested cross-validation driven through Optuna studies, shared by any number of workers.

Each outer fold (and the final search on all data) is one study in the storage.
The storage is the coordinator: a worker takes the first unit with budget left,
runs one trial, and goes again, so no worker waits for the slowest trial of a batch;
a unit whose budget is met and has nothing running is finalized (best trial refit
on the outer training part, scored on the outer test part) by whoever sees it
first. Finalizing is deterministic, so doing it twice gives the same numbers.

Budget: COMPLETE + PRUNED trials count. A worker that asks for a trial when the
lower-numbered trials already fill the budget marks its own trial FAIL with the
attribute ``expt.surplus`` and runs nothing, so the budget is met exactly without a
lock, across processes and machines.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from expt.core.errors import ExptError, RunFailedError
from expt.sweep.storage import (
    ERROR,
    RESULT,
    SURPLUS,
    WORKER_ATTR,
    beat_seconds,
    fail_and_requeue,
    grace_period,
    has_heartbeat,
    storage_of,
    trial_id_of,
)

if TYPE_CHECKING:
    import numpy as np
    from optuna import Study, Trial
    from optuna.trial import FrozenTrial
    from sklearn.pipeline import Pipeline

MIN_TRIALS_FOR_FAILURE_RATE = 5


@dataclass
class Unit:
    """An outer fold, or the final search on all data (``test`` is None)."""

    key: str
    index: int
    train: np.ndarray  # row positions
    test: np.ndarray | None = None


@dataclass
class Counts:
    done: int = 0
    running: int = 0
    failed: int = 0
    pruned: int = 0
    first_error: str | None = None


@dataclass
class UnitResult:
    key: str
    outer_score: float | None
    inner_best: float
    best_params: dict[str, Any]
    best_number: int
    model: Pipeline | None = field(default=None, repr=False)


def run_order(units: list[Unit]) -> list[Unit]:
    """The final search first, then the outer folds.

    Its model is the one large thing to pickle and log; done first, the sink writes it
    while the outer folds run instead of after them (with it last, logging the model
    was the longest part of a cheap sweep's tail). Results do not depend on the order:
    each unit has its own study and seeded sampler.
    """
    return sorted(units, key=lambda u: u.test is not None)


def counts(study: Study) -> Counts:
    from optuna.trial import TrialState

    c = Counts()
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            c.done += 1
            c.pruned += t.state == TrialState.PRUNED
        elif t.state == TrialState.RUNNING:
            c.running += 1
        elif t.state == TrialState.FAIL and not t.user_attrs.get(SURPLUS):
            c.failed += 1
            c.first_error = c.first_error or t.user_attrs.get(ERROR)
    return c


def is_surplus(study: Study, number: int, n_trials: int) -> bool:
    """True when the trials numbered before this one already fill the budget."""
    from optuna.trial import TrialState

    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    ahead = sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and t.state in counted)
    return ahead >= n_trials


def finalized(study: Study) -> bool:
    return RESULT in study.user_attrs


class Engine:
    """What a worker needs: the units, their studies, and how to evaluate and refit a configuration."""

    def __init__(self, *, units: list[Unit], studies: dict[str, Study], n_trials: int, max_failure_rate: float,
                 objective: Callable[[Trial, Unit], float],
                 refit: Callable[[dict[str, Any], Unit], tuple[Pipeline, float | None]],
                 on_trial: Callable[[Unit, FrozenTrial], None], on_unit: Callable[[Unit, UnitResult], None],
                 keep_going: Callable[[], bool] = lambda: True) -> None:
        self.units, self.studies, self.n_trials = run_order(units), studies, n_trials
        self.keep_going = keep_going
        self.max_failure_rate = max_failure_rate
        self.objective, self.refit, self.on_trial, self.on_unit = objective, refit, on_trial, on_unit
        self._reaped: dict[str, float] = {}

    def run(self, poll: float = 0.2) -> None:
        """Work until every unit is finalized."""
        while self.keep_going():
            pending = [u for u in self.units if not finalized(self.studies[u.key])]
            if not pending:
                return
            if not any(self._step(u) for u in pending):
                time.sleep(poll)  # other workers hold the last trials; wait for them

    def _step(self, unit: Unit) -> bool:
        study = self.studies[unit.key]
        self._reap(unit)
        c = counts(study)
        self._check_failures(unit, c)
        if c.done + c.running < self.n_trials:
            self.run_trial(unit)
            return True
        if c.running == 0 and c.done >= self.n_trials:
            self.finalize(unit)
            return True
        return False

    def _reap(self, unit: Unit) -> None:
        """Every heartbeat interval: fail (and re-queue) the trials of workers that stopped beating."""
        from expt.sweep.coordination import reap_stale

        study = self.studies[unit.key]
        storage = storage_of(study)
        if not has_heartbeat(storage):
            return
        now = time.monotonic()
        if now - self._reaped.get(unit.key, 0.0) < beat_seconds(storage):
            return
        self._reaped[unit.key] = now
        grace = grace_period(storage)
        for t in reap_stale(study, f"worker died mid-trial (no heartbeat for {grace} s); its configuration is re-run"):
            self.on_trial(unit, t)

    def _check_failures(self, unit: Unit, c: Counts) -> None:
        finished = c.done + c.failed
        if finished >= MIN_TRIALS_FOR_FAILURE_RATE and c.failed > self.max_failure_rate * finished:
            raise RunFailedError(
                f"{c.failed} of {finished} trials of {unit.key} failed (more than search.max_failure_rate="
                f"{self.max_failure_rate}); first error: {c.first_error}. Fix the model or space config"
            )

    def run_trial(self, unit: Unit) -> None:
        import optuna
        from optuna.trial import TrialState

        from expt.sweep.coordination import heartbeat, worker_id

        study = self.studies[unit.key]
        with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize": we beat ourselves
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        if is_surplus(study, trial.number, self.n_trials):
            trial.set_user_attr(SURPLUS, True)
            study.tell(trial, state=TrialState.FAIL)
            return
        trial.set_user_attr(WORKER_ATTR, worker_id())
        try:
            with heartbeat(study, trial):
                value = self.objective(trial, unit)
            frozen = study.tell(trial, value)
        except optuna.TrialPruned:
            frozen = study.tell(trial, state=TrialState.PRUNED)
        except KeyboardInterrupt:
            trial.set_user_attr(ERROR, "interrupted")
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as exc:  # noqa: BLE001 - a failing configuration is a result of the search, not a crash
            message = str(exc) if isinstance(exc, ExptError) else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr(ERROR, message.splitlines()[0][:2000] if message else type(exc).__name__)
            frozen = study.tell(trial, state=TrialState.FAIL)
        self.on_trial(unit, frozen)

    def finalize(self, unit: Unit) -> UnitResult:
        from optuna.trial import TrialState

        study = self.studies[unit.key]
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            c = counts(study)
            raise RunFailedError(f"no trial of {unit.key} completed ({c.pruned} pruned, {c.failed} failed; first "
                                 f"error: {c.first_error}); loosen the pruner or fix the space")
        best = study.best_trial
        assert best.value is not None  # a completed trial's
        model, outer = self.refit(best.params, unit)
        result = UnitResult(unit.key, outer, float(best.value), dict(best.params), best.number, model)
        study.set_user_attr(RESULT, {"outer_score": outer, "inner_best": result.inner_best,
                                     "best_params": result.best_params, "best_number": best.number})
        self.on_unit(unit, result)
        return result


def stale_trials(study: Study) -> list[FrozenTrial]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def fail_stale_trials(study: Study) -> list[FrozenTrial]:
    """Mark trials left RUNNING by a dead process FAIL and queue their configurations to run again."""
    reason = "worker died mid-trial (re-run on resume)"
    return fail_and_requeue(study, [trial_id_of(t) for t in stale_trials(study)], reason)


def result_of(study: Study) -> dict[str, Any] | None:
    return study.user_attrs.get(RESULT)
