"""Paired differences between recommenders, with bootstrap intervals over groups: one at a time, and
simultaneous over a family of comparisons (max-|t|), shared by :mod:`expt.meta.evaluate` and
:mod:`expt.meta.probe_eval` (its own module so that neither imports the other).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

MEASURES = ("top1", "best3", "best5", "hit1")
DRAWS = 10_000


def compare(values: np.ndarray, reference: np.ndarray, groups: np.ndarray, *, name: str, against: str, seed: int,
            draws: int = DRAWS, measures: tuple[str, ...] = MEASURES[:3]) -> dict[str, Any]:
    """Paired differences (values - reference) per measure, with a 95% bootstrap interval over groups."""
    return _compare(values, reference, groups, name=name, against=against, seed=seed, draws=draws,
                    measures=measures)[0]


def _compare(values: np.ndarray, reference: np.ndarray, groups: np.ndarray, *, name: str, against: str, seed: int,
             draws: int, measures: tuple[str, ...]) -> tuple[dict[str, Any], np.ndarray]:

    """:func:`compare`, and its bootstrap means (draws x measures): the same group draws for every call with the
    same groups and seed, which the simultaneous intervals need."""
    import numpy as np

    m = len(measures)
    diff = values[:, :m] - reference[:, :m]
    labels, index = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.zeros((len(labels), m))
    np.add.at(sums, index, diff)
    counts = np.bincount(index, minlength=len(labels)).astype(float)
    rng = np.random.default_rng(seed)
    draw = rng.multinomial(len(labels), np.full(len(labels), 1 / len(labels)), size=draws).astype(float)
    means = (draw @ sums) / (draw @ counts)[:, None]
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    out: dict[str, Any] = {"recommender": name, "against": against, "n": len(diff)}
    for i, key in enumerate(measures):
        out[key] = {"diff": float(diff[:, i].mean()), "low": float(low[i]), "high": float(high[i]),
                    "better": int((diff[:, i] < -1e-9).sum()), "worse": int((diff[:, i] > 1e-9).sum())}
    return out, means


def compare_all(pairs: list[tuple[str, str]], results: dict[str, np.ndarray], groups: np.ndarray, *, seed: int,
                draws: int = DRAWS, measures: tuple[str, ...] = MEASURES[:3]) -> list[dict[str, Any]]:
    """:func:`compare` for each (recommender, reference) pair, each difference also with its simultaneous 95%
    interval over all of them (``sim_low``, ``sim_high``; max-|t| bootstrap) and the family's size."""
    import numpy as np

    done = [_compare(results[a], results[b], groups, name=a, against=b, seed=seed, draws=draws, measures=measures)
            for a, b in pairs if a in results and b in results]
    if not done:
        return []
    point = np.array([[c[m]["diff"] for m in measures] for c, _ in done])  # comparisons x measures
    boot = np.stack([means for _, means in done], axis=1)  # draws x comparisons x measures
    sd = boot.std(axis=0)
    live = sd > 1e-12
    t = np.where(live, np.abs(boot - boot.mean(axis=0)) / np.where(live, sd, 1.0), 0.0)
    crit = float(np.percentile(t.reshape(len(boot), -1).max(axis=1), 95)) if live.any() else 0.0
    family = int(live.sum())
    for (c, _), p, s in zip(done, point, sd, strict=True):
        for i, m in enumerate(measures):
            c[m].update(sim_low=float(p[i] - crit * s[i]), sim_high=float(p[i] + crit * s[i]))
        c["family"], c["crit"] = family, crit
    return [c for c, _ in done]
