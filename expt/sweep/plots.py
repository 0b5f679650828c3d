"""A sweep's plots, drawn by the MLflow sink process from plain data.

They used to be drawn in the sweep process after the last trial: 0.5 s on the
critical path, most of it importing matplotlib. The sink imports matplotlib while
the trials run (see ``expt.sweep.sink.warm_up``) and draws them from what
``plot_data`` and ``importance_data`` collect. The importance plot needs only the
final search, which runs first, so it is drawn while the outer folds run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from optuna import Study
    from optuna.trial import FrozenTrial

    from expt.sweep.attach import Sweep


def plot_data(sweep: Sweep, result: Mapping[str, Any]) -> dict[str, Any]:
    """What the end-of-sweep plots need, picklable: best-so-far series per unit, outer and inner scores."""
    from optuna.trial import TrialState

    histories = {}
    for unit in sweep.plan.units:
        trials = sweep.studies[unit.key].get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        histories[unit.key] = [t.value for t in sorted(trials, key=lambda t: t.number)]
    return {"metric": sweep.plan.prepared.metric, "histories": histories, "outer": result["outer"],
            "inner": result["inner"]}


def importance_data(study: Study) -> dict[str, Any]:
    """The final search's completed trials, for the parameter importance plot."""
    from optuna.trial import TrialState

    return {"final_trials": study.get_trials(deepcopy=True, states=(TrialState.COMPLETE,))}


def render(data: Mapping[str, Any], out: Path) -> list[tuple[str, str]]:
    """The plots ``data`` has what it takes for, as (artifact folder, file) pairs."""
    files = []
    if "histories" in data:
        files += _history_plots(data, out)
    if "final_trials" in data:
        importance = _importance_plot(data["final_trials"], out)
        files += [("plots", importance)] if importance else []
    return files


def _one_parameter(trials: list[FrozenTrial]) -> dict[str, float] | None:
    """A search over one parameter: its importance is 1.0, which is what Optuna's normalized importances give for
    one parameter whatever the evaluator says (1.0 / 1 when it says 0; tests/test_live_tree.py checks it), without
    importing ``optuna.importance``: its fANOVA module imports scikit-learn's ensembles and scipy (0.6 s of the
    sink's CPU in a logistic regression sweep). None when there are several parameters, or too few trials."""
    names = {name for t in trials for name, dist in t.distributions.items() if not dist.single()}
    if len(names) != 1 or len(trials) < 2 or any(set(t.params) != names for t in trials):
        return None
    return {names.pop(): 1.0}


def _history_plots(data: Mapping[str, Any], out: Path) -> list[tuple[str, str]]:
    """Optimization history per unit, and inner best vs outer score per fold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    metric = data["metric"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, values in data["histories"].items():
        if values:
            ax.plot(range(1, len(values) + 1), np.maximum.accumulate(values), label=key)
    ax.set(xlabel="completed trial", ylabel=f"best inner {metric}", title="optimization history")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7)
    _save(fig, out / "optimization_history.png")
    fig, ax = plt.subplots(figsize=(6, 4))
    k = np.arange(len(data["outer"]))
    ax.bar(k - 0.2, data["inner"], 0.4, label="inner best (optimistic)")
    ax.bar(k + 0.2, data["outer"], 0.4, label="outer test (unbiased)")
    ax.set(xlabel="outer fold", ylabel=metric, title="selection bias: inner best vs outer score")
    ax.legend(fontsize=7)
    _save(fig, out / "outer_vs_inner.png")
    return [("plots", str(out / "optimization_history.png")), ("plots", str(out / "outer_vs_inner.png"))]


def _save(fig: Figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()  # long metric and parameter names; fixed margins clipped them for 0.03 s saved
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _importance_plot(trials: list[FrozenTrial], out: Path) -> str | None:
    import logging
    import warnings

    import matplotlib.pyplot as plt

    importances = _one_parameter(trials)
    if importances is None:
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        study = optuna.create_study(direction="maximize")  # in memory: the final study's completed trials
        study.add_trials(trials)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "too few trials per regime" on small budgets: the plot says enough
                importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):
            return None  # too few completed trials
    if not importances:
        return None
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(importances) + 1.5))
    ax.barh(list(importances)[::-1], list(importances.values())[::-1])
    ax.set(xlabel="importance (Optuna's default evaluator)", title="parameter importances (final search)")
    path = out / "param_importances.png"
    _save(fig, path)
    return str(path)
