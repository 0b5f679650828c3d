"""What a running fit reports at the end of each epoch, and to whom.

A context variable rather than an estimator parameter: the listener (a fold's
scorer, an Optuna trial) is not a hyperparameter, must not be cloned, pickled or
logged, and differs between the CV of ``expt train`` and a sweep's inner folds.
No torch here: the CV code imports this module for every model.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from sklearn.base import BaseEstimator

    Scorer = Callable[[BaseEstimator, ArrayLike, ArrayLike], float]  # (estimator, X, y) -> the run's metric



@dataclass(frozen=True)
class EpochHooks:
    """``scorer(estimator, X, y)`` scores the validation split each epoch (the run's metric);
    ``on_epoch(epoch, row)`` sees each epoch's history row and may raise (Optuna's TrialPruned); a booster
    calls it every few boosting rounds. ``metric`` names what ``scorer`` scores (CatBoost computes it itself)."""

    scorer: Scorer | None = None
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    metric: str | None = None


NO_HOOKS = EpochHooks()
_HOOKS: contextvars.ContextVar[EpochHooks | None] = contextvars.ContextVar("expt_epoch_hooks", default=None)


def current() -> EpochHooks:
    return _HOOKS.get() or NO_HOOKS


@contextlib.contextmanager
def epoch_hooks(scorer: Scorer | None = None,
                on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                metric: str | None = None) -> Iterator[EpochHooks]:
    hooks = EpochHooks(scorer, on_epoch, metric)
    token = _HOOKS.set(hooks)
    try:
        yield hooks
    finally:
        _HOOKS.reset(token)


def history_of(model: BaseEstimator) -> list[dict[str, float]] | None:
    """The per-epoch history of a fitted torch estimator, bare or as a Pipeline's last step."""
    steps = getattr(model, "steps", None)
    final = steps[-1][1] if steps else model
    return getattr(final, "history_", None)


def epoch_series(history: list[dict[str, float]] | None, metric: str) -> dict[str, list[float]]:
    """A torch model's per-epoch history as MLflow series (step = epoch): train_loss, valid_loss, valid_<metric>."""
    if not history:
        return {}
    names = {"train_loss": "train_loss", "valid_loss": "valid_loss", "valid_score": f"valid_{metric}"}
    return {names[k]: [row[k] for row in history] for k in names if k in history[0]}
