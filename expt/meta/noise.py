"""How noisy a row of the table is, and the noisy copies the evaluation scores the probe and the references in.

A row's scores are one cross-validation each: run again on other folds, every configuration's score moves. The
per-fold scores in the records say by how much. Folds are shared by the configurations of a row (the same splits),
so a hard fold lowers them all, which changes no regret; what changes a regret is the part of a fold's score that
is the configuration's own. For two configurations c, c' the variance of their difference of means is
var_k(f_ck - f_c'k) / F over the F folds (the shared part cancels); its mean over the row's pairs, halved, is the
variance of one configuration's score about its expectation (:func:`row_noise`, one value per row: 2 degrees of
freedom per cell would make per-cell variances mostly noise themselves).

Which pairs: the better half of the row (scores at or above its median), by default. Pooled over all pairs, one
failing configuration dominates a row (chem_yield: an r2 of -177 on a fold makes the pooled sd 21 r2 units, where
the row's best - median is 0.22), and the configurations a pick is made among are the better ones, whose folds
agree more: on the 62 x 138 knowledge base the noise of a difference is 0.39 x (best - median) on the median
classification row among the better half, 0.53 x over all pairs (0.22 and 0.43 on regression). ``among="all"``
gives the all-pairs estimate (the one issue 24 quotes), which the evaluation shows beside it.

A noisy copy of a row is its recorded scores plus independent normal noise of that variance. The recorded table
is itself one such draw, so scoring a recommender on it and scoring the yardstick "an oracle that knew d's table"
on it are not the same regime: the oracle's pick would be scored on the very table it maximized. Here both the
oracle's view and the scoring table are fresh copies (the oracle knows one noisy copy of d's table, its pick is
scored in another), and the references and recommenders beside it are scored in the same fresh copies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from expt.meta.recommend import Table


def row_noise(table: Table, among: str = "upper") -> np.ndarray:
    """Per row: the sd of one configuration's CV mean score, from the per-fold scores; NaN where there are none.

    ``among``: "upper" (configurations scoring at or above the row's median) or "all". Only cells with the row's
    most common number of fold scores are used (their folds line up).
    """
    import numpy as np

    n_rows = table.scores.shape[0]
    with np.errstate(all="ignore"):
        median = np.nanmedian(table.scores, axis=1) if table.scores.size else np.zeros(n_rows)
    by_row: dict[int, list[tuple[float, ...]]] = {}
    for (i, j), cell in table.fold_scores.items():
        if among == "all" or table.scores[i, j] >= median[i]:
            by_row.setdefault(i, []).append(cell)

    out = np.full(n_rows, np.nan)
    for i, cells in by_row.items():
        lengths = [len(c) for c in cells]
        folds = max(set(lengths), key=lambda n: (lengths.count(n), n))
        if folds < 2:
            continue
        g = np.array([c for c in cells if len(c) == folds], dtype=float)
        n = len(g)
        if n < 2:
            continue
        g = g - g.mean(axis=1, keepdims=True)
        pair_sq = (n * (g ** 2).sum(axis=0) - g.sum(axis=0) ** 2).sum()  # sum over pairs and folds of (g_c - g_c')^2
        mean_pair_var = pair_sq / (folds - 1) / (n * (n - 1) / 2)
        out[i] = np.sqrt(mean_pair_var / folds / 2)
    return out


def difference_noise(table: Table, noise: np.ndarray | None = None) -> np.ndarray:
    """Per row: the sd of a difference between two configurations' scores, in units of the row's spread."""
    import numpy as np

    noise = row_noise(table) if noise is None else noise
    with np.errstate(all="ignore"):
        return np.sqrt(2) * noise / np.where(table.spread > 1e-12, table.spread, np.nan)


def copies(scores: np.ndarray, sd: np.ndarray, *, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent sets of ``draws`` noisy copies of the rows: the user's (or oracle's) view, and the fresh
    copies picks are scored in. NaN stays NaN; a row without a noise estimate is copied exactly."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sd = np.nan_to_num(np.asarray(sd, dtype=float))[None, :, None]
    view = scores[None] + rng.normal(size=(draws, *scores.shape)) * sd
    fresh = scores[None] + rng.normal(size=(draws, *scores.shape)) * sd
    return view, fresh


def fresh_regret(fresh: np.ndarray) -> np.ndarray:
    """Normalized regret within each fresh copy (its own best and median)."""
    from expt.meta.recommend import normalized_regret

    d, r, c = fresh.shape
    return normalized_regret(fresh.reshape(d * r, c)).reshape(d, r, c)


def best_of(view: np.ndarray, fresh: np.ndarray, regret: np.ndarray, candidates: np.ndarray,
            k: int) -> tuple[np.ndarray, np.ndarray]:
    """The user's CV picks the best-looking of the first ``k`` candidates (its ``view``); that pick's regret and
    loss in score units (fresh best - fresh score) in the fresh copy. ``candidates``: draws x rows x depth, or
    rows x depth (the same in every draw); -1 or a configuration not evaluated on the row: not tried."""
    import numpy as np

    d = view.shape[0]
    cand = np.broadcast_to(candidates, (d, *candidates.shape[-2:]))[:, :, :k]
    safe = np.maximum(cand, 0)
    looks = np.take_along_axis(view, safe, axis=2)
    looks = np.where((cand >= 0) & ~np.isnan(looks), looks, -np.inf)
    pick = np.take_along_axis(safe, np.argmax(looks, axis=2)[:, :, None], axis=2)
    t = np.take_along_axis(regret, pick, axis=2)[:, :, 0]
    with np.errstate(all="ignore"):
        loss = np.nanmax(fresh, axis=2) - np.take_along_axis(fresh, pick, axis=2)[:, :, 0]
    return t, loss


def full_search(view: np.ndarray, fresh: np.ndarray, regret: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every configuration evaluated on the row tried, the best-looking kept: the oracle under noise."""
    import numpy as np

    with np.errstate(all="ignore"):
        pick = np.nanargmax(np.where(np.isnan(view), -np.inf, view), axis=2)[:, :, None]
        t = np.take_along_axis(regret, pick, axis=2)[:, :, 0]
        loss = np.nanmax(fresh, axis=2) - np.take_along_axis(fresh, pick, axis=2)[:, :, 0]
    return t, loss


def time_share(fit_seconds: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Per row: fit time of the first ``k`` candidates over that of every configuration evaluated on the row (mean
    over draws where the candidates differ by draw); NaN where the row has no fit times."""
    import numpy as np

    cand = candidates if candidates.ndim == 3 else candidates[None]
    cand = cand[:, :, :k]
    secs = np.take_along_axis(np.broadcast_to(fit_seconds, (cand.shape[0], *fit_seconds.shape)),
                              np.maximum(cand, 0), axis=2)
    spent = np.nansum(np.where(cand >= 0, secs, 0.0), axis=2).mean(axis=0)
    with np.errstate(all="ignore"):
        total = np.nansum(fit_seconds, axis=1)
        return np.where(total > 0, spent / total, np.nan)
