"""Leave-one-group-out evaluation of the recommenders, in code, so that nobody's figures are hand-made.

For each group (related tables; most groups are one dataset), every recommender is fitted
on the other groups' rows only, hyper-parameters included (its own inner leave-one-group-out
on those rows), and recommends for each row d of the held-out group among the configurations
evaluated on d. With t_d the normalized regret on d: mean t_d of the first recommendation,
of the best of the first 3 and of the first 5, and hit@1 (the first is d's best).

Baselines: the single best configuration by mean regret fitted without d's group
(``single-best``), the same in hindsight with d included (a yardstick, not a recommender),
the static greedy portfolio (``portfolio``), random forest defaults (then the single best
order), and random choice (its exact expectation over d's configurations, not a draw).

Paired differences (recommender minus reference, per row) get 95% percentile intervals from a
bootstrap over groups (rows of one group are resampled together), seeded; and simultaneous 95%
intervals over every difference a table shows (all comparisons x measures), by the max-|t| bootstrap:
each difference +- c x its bootstrap sd, c the 95th percentile over draws of the largest studentized
deviation of any of them (the same group draws for all), so that all of them cover at once. The
learning curve refits everything on a random sample of 10, 25, 50 training groups (10 seeds) and on all.

Thin rows (a probe's few configurations, :func:`expt.meta.recommend.table_regret`) train the
recommenders but are never held out as test rows: their regrets are partly estimated.

Under noise (:mod:`expt.meta.noise`, :mod:`expt.meta.probe_eval`): the oracle that knows a noisy copy of d's
table, and every recommender's first pick, scored in fresh noisy copies; and the probe simulated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from expt.meta.intervals import DRAWS, MEASURES, compare_all
from expt.meta.rankers import DEFAULT_METHOD, METHODS, fit

if TYPE_CHECKING:
    import numpy as np

    from expt.meta.recommend import Table

REFERENCES = ("single-best", "portfolio", "hindsight")
CURVE_SIZES = (10, 25, 50)  # and all
CURVE_SEEDS = 10
DEPTH = 5


@dataclass
class Evaluation:
    task: str
    metric: str
    n_datasets: int  # rows evaluated (datasets x protocols with at least 2 configurations)
    n_groups: int
    n_configs: int
    rows: dict[str, dict[str, float]]  # recommender or baseline -> mean of each measure, and n
    comparisons: list[dict[str, Any]] = field(default_factory=list)  # paired bootstrap differences
    curve: list[dict[str, Any]] = field(default_factory=list)  # mean t_d by number of training groups
    chosen: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # method -> param -> value -> folds
    seed: int = 0
    draws: int = DRAWS
    noise: dict[str, Any] = field(default_factory=dict)  # the fresh-copy regime and the probe (probe_eval.evaluate)
    subset: dict[str, Any] = field(default_factory=dict)  # the same figures on some held-out groups alone (``only``)


def evaluate(table: Table, *, rf_key: str | None = None, seed: int = 0, draws: int = DRAWS, curve: bool = True,
             curve_sizes: tuple[int, ...] = CURVE_SIZES, curve_seeds: int = CURVE_SEEDS, noise: bool = True,
             default: str = DEFAULT_METHOD, only: Iterable[str] | None = None) -> Evaluation:
    """``only`` (group names): also the figures on those held-out groups alone (every fit still uses all the
    other groups), as the confirmation of a method fixed before those groups existed (issue 24)."""
    import numpy as np

    regret, features = table.regret, table.features
    groups = np.array(table.groups)
    results, rows, chosen = _logo(regret, features, groups, METHODS, queries=~np.asarray(table.thin, dtype=bool))
    if not rows:
        return Evaluation(table.task, table.metric, 0, 0, len(table.configs), {}, seed=seed, draws=draws)
    truth = regret[rows]
    seen = ~np.isnan(truth)
    hindsight = fit("single-best", regret, features, groups)  # d included: a yardstick
    picks = results.pop("_picks")
    picks["hindsight"] = hindsight.rank(features[rows], seen, DEPTH)[0]
    results["hindsight"] = _measures(truth, picks["hindsight"])
    rf = next((j for j, c in enumerate(table.configs) if c["key"] == rf_key), None)
    if rf is None and rf_key:  # its hyperparameters, whatever the preprocessing (scaling does nothing to a forest)
        rf = next((j for j, c in enumerate(table.configs) if c["key"].split("|", 1)[0] == rf_key.split("|", 1)[0]),
                  None)
    if rf is not None:
        keep = seen[:, rf]
        order = results.pop("_single_best_picks")
        rf_picks = np.array([[rf, *[j for j in p if j != rf and j >= 0]][:DEPTH] for p in order])
        results["rf_defaults"] = _measures(truth[keep], rf_picks[keep])
        picks["rf_defaults"] = np.where(keep[:, None], rf_picks, -1)
    results.pop("_single_best_picks", None)
    results["random"] = _random_expectation(truth)
    g = groups[rows]
    summary = {name: {**{m: float(np.mean(v[:, i])) for i, m in enumerate(MEASURES)}, "n": len(v)}
               for name, v in results.items()}
    for name, row in summary.items():  # the same first pick in score units: best_d - s_d(pick)
        row["loss1"] = _loss(table.scores[rows], picks.get(name))
    comparisons = compare_all([(name, ref) for name in METHODS for ref in REFERENCES if ref != name], results, g,
                              seed=seed, draws=draws)
    points = learning_curve(regret, features, groups, sizes=curve_sizes, seeds=curve_seeds,
                            full={m: results[m] for m in METHODS}) if curve else []
    ev = Evaluation(table.task, table.metric, len(rows), len(set(g)), len(table.configs), summary, comparisons,
                    points, chosen, seed, draws)
    mask = np.isin(g, list(only or ()))
    if mask.any():
        part = {name: v[mask] for name, v in results.items() if len(v) == len(g)}
        ev.subset = {"n": int(mask.sum()), "groups": len(set(g[mask])),
                     "rows": {name: {m: float(np.mean(v[:, i])) for i, m in enumerate(MEASURES)}
                              for name, v in part.items()},
                     "comparisons": compare_all([(default, ref) for ref in REFERENCES if ref != default], part,
                                                g[mask], seed=seed, draws=draws)}
    if noise and table.fold_scores:
        from expt.meta.probe_eval import evaluate_noise

        ev.noise = evaluate_noise(table, rows, picks, default=default if default in picks else METHODS[0],
                                  seed=seed, draws=draws)
        ev.chosen["adaptive"] = ev.noise.pop("chosen")
    return ev


def _loss(scores: np.ndarray, picks: np.ndarray | None) -> float:
    """Mean best_d - s_d(first pick) over rows, in the metric's units; for random choice (no picks) its expectation."""
    import numpy as np

    with np.errstate(all="ignore"):
        best = np.nanmax(scores, axis=1)
        if picks is None:
            return float(np.mean(best - np.nanmean(scores, axis=1)))
        first = picks[:, 0]
        ok = first >= 0
        return float(np.mean(best[ok] - scores[np.flatnonzero(ok), first[ok]])) if ok.any() else float("nan")


def _logo(regret: np.ndarray, features: np.ndarray, groups: np.ndarray, methods: tuple[str, ...], *,
          size: int | None = None, rng: np.random.Generator | None = None,
          queries: np.ndarray | None = None) -> tuple[dict[str, Any], list[int], dict[str, Any]]:
    """Per evaluated row (among ``queries``), each method's measures, fitted without the row's group (on ``size``
    sampled groups); ``results["_picks"]``: each method's first DEPTH picks per row."""
    import numpy as np

    seen = ~np.isnan(regret)
    evaluable = seen.sum(axis=1) >= 2
    if queries is not None:
        evaluable &= queries
    out: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    all_picks: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    sb_picks: list[np.ndarray] = []
    rows: list[int] = []
    chosen: dict[str, dict[str, dict[str, int]]] = {m: {} for m in methods}
    for g in dict.fromkeys(groups[evaluable]):  # first-seen order: deterministic
        test = np.flatnonzero(evaluable & (groups == g))
        others = [h for h in dict.fromkeys(groups) if h != g]
        if size is not None:
            if size >= len(others):
                continue
            assert rng is not None  # passed with size

            others = list(rng.choice(np.array(others, dtype=object), size, replace=False))
        train = np.flatnonzero(np.isin(groups, others))
        if len(set(groups[train])) < 2:
            continue
        rows.extend(int(i) for i in test)
        for m in methods:
            fitted = fit(m, regret[train], features[train], groups[train])
            depth = DEPTH + 1 if m == "single-best" else DEPTH
            picks = fitted.rank(features[test], seen[test], depth)[0]
            if m == "single-best":
                sb_picks.extend(picks)
            out[m].append(_measures(regret[test], picks[:, :DEPTH]))
            all_picks[m].append(picks[:, :DEPTH])
            for k, v in fitted.params.items():  # how often each value of each hyper-parameter was chosen
                chosen[m].setdefault(k, {})
                chosen[m][k][f"{v:g}"] = chosen[m][k].get(f"{v:g}", 0) + 1
    results: dict[str, Any] = {m: np.concatenate(v) if v else np.zeros((0, len(MEASURES))) for m, v in out.items()}
    if "single-best" in methods:
        results["_single_best_picks"] = sb_picks
    results["_picks"] = {m: np.concatenate(v) if v else np.zeros((0, DEPTH), dtype=int) for m, v in all_picks.items()}
    return results, rows, chosen


def _measures(truth: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Per row: regret of the first pick, best of the first 3 and 5, and whether the first is the row's best."""
    import numpy as np

    t = np.where(picks >= 0, np.take_along_axis(truth, np.maximum(picks, 0), axis=1), np.nan)
    first = t[:, 0]
    return np.column_stack([first, np.nanmin(t[:, :3], axis=1), np.nanmin(t[:, :5], axis=1),
                            (first == 0).astype(float)])


def _random_expectation(truth: np.ndarray) -> np.ndarray:
    """Exact expected measures of a uniformly random order of each row's configurations.

    The best of j drawn without replacement from n sorted regrets t_(1) <= ... <= t_(n) is t_(i)
    with probability C(n - i, j - 1) / C(n, j).
    """
    from math import comb

    import numpy as np

    out = []
    for row in truth:
        t = np.sort(row[~np.isnan(row)])
        n = len(t)
        best = []
        for j in (3, 5):
            j = min(j, n)
            best.append(sum(t[i - 1] * comb(n - i, j - 1) for i in range(1, n + 1)) / comb(n, j))
        out.append([t.mean(), *best, float(np.mean(t == 0))])
    return np.array(out)


def learning_curve(regret: np.ndarray, features: np.ndarray, groups: np.ndarray, *,
                   sizes: tuple[int, ...] = CURVE_SIZES, seeds: int = CURVE_SEEDS,
                   full: dict[str, Any] | None = None) -> list[dict[str, Any]]:

    """Mean top-1 and best-of-3 regret of every method trained on ``size`` random groups (the held-out one never
    among them), averaged over seeds; and on all the other groups (``full``: those results, already made)."""
    import numpy as np

    n_groups = len(set(groups))
    points = []
    for size in [*sizes, None]:
        if size is not None and size >= n_groups - 1:
            continue
        runs = []
        for s in range(seeds if size is not None else 1):
            if size is None and full is not None:
                runs.append({m: full[m].mean(axis=0) for m in METHODS})
                continue
            rng = np.random.default_rng([s, size or 0])
            results, rows, _ = _logo(regret, features, groups, METHODS, size=size, rng=rng)
            if rows:
                runs.append({m: results[m].mean(axis=0) for m in METHODS})
        for m in METHODS if runs else ():
            top1 = [r[m][0] for r in runs]
            points.append({"method": m, "size": size if size is not None else n_groups - 1, "all": size is None,
                           "top1": float(np.mean(top1)), "top1_sd": float(np.std(top1)),
                           "best3": float(np.mean([r[m][1] for r in runs])), "seeds": len(runs)})
    return points
