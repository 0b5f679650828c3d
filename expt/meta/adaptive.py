"""The adaptive probe's choice: which configuration to try next on the user's data, given the scores so far.

A probe runs K candidates on the user's own data. The first ``static`` come from the default recommender's
ranking (:func:`expt.meta.rankers.rank`); each one after them is chosen given what was measured: the measured
configurations act as landmarks. Datasets of the table that scored the landmarks the way the user's data did are
its neighbours, and the next candidate is the one that most lowers, over those neighbours, the regret of the best
configuration tried so far (the greedy portfolio's step, conditioned on the scores: the probe keeps the best of
its K, so what a candidate adds is its improvement over the best so far, not its own regret).

Comparing a user's raw scores with a row of the table. Scores of two datasets differ by a level (accuracy 0.95 on
one, 0.70 on another) and by a spread (how far configurations lie apart), and the user's spread is not known: it
takes the whole portfolio to measure. The level is removed by centering the landmarks' scores (only their
differences count). For the spread, two similarities, chosen between by the inner leave-one-group-out:

- ``shape``: the cosine between the user's centered scores and the row's. Blind to the spread on both sides:
  only which landmarks did better and in what proportion. With two landmarks, it is which of the two won.
- ``units``: the distance between the user's centered scores and the row's, in units of the row's spread (its
  best - median): the hypothesis "the user's dataset is this row", spread included. Rows where the landmarks'
  gap is small beside their spread say the landmarks tie; the user's gap says how much the user's data
  separates them, in that row's units.

Hyper-parameters (``static``: the recommender's picks before adapting; ``k``: neighbours, 0 for all rows, which is
the static greedy portfolio's continuation and never adapts; the similarity) are chosen on the training rows
only, by an inner leave-one-group-out that simulates the probe: each dense training row in turn is the user,
its scores on the landmarks measured with the noise its per-fold scores show (``INNER_DRAWS`` draws), its first
picks the greedy portfolio of the other groups, and the criterion the mean regret of the best of the first 3 and
first 5 tried. The best setting is kept only if it beats no adaptation by more than one standard error of the
paired difference over the held-out rows (13 settings compared on ~100 rows: the best of them wins by chance
otherwise, and adapting on noise costs the probe what it would have had from the ranking).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from expt.meta.recommend import Table

STATIC_CHOICES = (2, 3)
K_CHOICES = (5, 10, 20)
SIMILARITIES = ("shape", "units")
INNER_DRAWS = 4
INNER_DEPTHS = (3, 5)
INNER_QUERIES = 100  # held-out rows of the inner selection at most
PRIOR_WEIGHT = 3.0  # pseudo-rows of no improvement in every expected gain (as the recommenders' prior)


@dataclass(frozen=True)
class Setting:
    static: int  # picks from the recommender's ranking before adapting
    k: int  # neighbours; 0: every row (no adaptation)
    similarity: str  # "shape" or "units"


NO_ADAPTATION = Setting(STATIC_CHOICES[0], 0, "shape")


@dataclass
class Adaptive:
    """The training rows the choice conditions on and the setting their inner leave-one-group-out chose."""

    scores: np.ndarray  # rows x configurations (recorded mean scores)
    regret: np.ndarray  # rows x configurations (normalized regret)
    spread: np.ndarray  # per row: the score difference of regret 1
    setting: Setting = NO_ADAPTATION
    inner: dict[Setting, float] = field(default_factory=dict)  # inner criterion per setting tried


@dataclass
class Choice:
    """What the probe prints beside its next candidate."""

    index: int | None  # configuration column; None: nothing left
    stage: str  # "ranking" (one of the recommender's first picks), "adaptive", or "none"
    setting: Setting
    neighbors: list[tuple[int, float]] = field(default_factory=list)  # (table row, distance) the choice used
    expected_best: float | None = None  # neighbours' mean regret of the best so far once this one is tried


# --- the choice, for many queries at once -------------------------------------------------------------------


def similarity(fitted: Adaptive, probed: np.ndarray, measured: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each query (landmarks ``probed``, Q x p, scored ``measured``) to each row; and which rows have
    every landmark (the others cannot be compared)."""
    import numpy as np

    rows = fitted.scores.shape[0]
    landmarks = fitted.scores[np.arange(rows)[None, :, None], probed[:, None, :]]  # Q x rows x p
    usable = ~np.isnan(landmarks).any(axis=2)
    v = np.nan_to_num(landmarks - np.nanmean(np.where(usable[:, :, None], landmarks, 0.0), axis=2, keepdims=True))
    u = (measured - measured.mean(axis=1, keepdims=True))[:, None, :]
    if kind == "shape":
        norms = np.linalg.norm(u, axis=2) * np.linalg.norm(v, axis=2)
        cos = np.where(norms > 1e-12, (u * v).sum(axis=2) / np.maximum(norms, 1e-12), 0.0)
        return 1.0 - cos, usable
    spread = np.maximum(np.nan_to_num(fitted.spread, nan=1.0), 1e-12)
    return np.sqrt(((u - v) ** 2).mean(axis=2)) / spread[None, :], usable


def choose_many(fitted: Adaptive, probed: np.ndarray, measured: np.ndarray, allowed: np.ndarray, usable: np.ndarray,
                setting: Setting | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The next configuration per query (-1: none left), with its neighbours, their distances and the expected
    regret of the best so far once it is tried. ``usable``: rows each query may condition on (Q x rows)."""
    import numpy as np

    setting = setting or fitted.setting
    q = probed.shape[0]
    if probed.shape[1] == 0:
        dist, has = np.zeros((q, fitted.scores.shape[0])), np.ones((q, fitted.scores.shape[0]), dtype=bool)
    else:
        dist, has = similarity(fitted, probed, measured, setting.similarity)
    usable = usable & has
    near, w = _neighbours(dist, usable, setting.k)
    regret = fitted.regret[near]  # Q x k x configurations
    seen = ~np.isnan(regret)
    filled = np.where(seen, regret, 1.0)
    best = np.ones(near.shape)
    if probed.shape[1]:
        best = np.min(np.take_along_axis(filled, np.repeat(probed[:, None, :], near.shape[1], axis=1), axis=2), axis=2)
    gain = np.einsum("qi,qic->qc", w, np.maximum(best[:, :, None] - filled, 0.0))
    evidence = np.einsum("qi,qic->qc", w, seen)
    own = (np.einsum("qi,qic->qc", w, np.where(seen, regret, 0.0)) + PRIOR_WEIGHT) / (evidence + PRIOR_WEIGHT)
    score = gain / (evidence + PRIOR_WEIGHT) - 1e-9 * own  # ties: the better configuration alone
    open_ = allowed.copy()
    np.put_along_axis(open_, probed, False, axis=1)
    score = np.where(open_, score, -np.inf)
    pick = np.argmax(score, axis=1)
    ok = np.isfinite(score[np.arange(q), pick])
    after = np.minimum(best, filled[np.arange(q), :, pick])
    expected = (w * after).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)
    return np.where(ok, pick, -1), near, np.take_along_axis(dist, near, axis=1), np.where(ok, expected, np.nan)


def _neighbours(dist: np.ndarray, usable: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest usable rows per query (all usable rows for k = 0), weight 1 each (0: not usable)."""
    import numpy as np

    d = np.where(usable, dist, np.inf)
    kk = d.shape[1] if k <= 0 else min(k, d.shape[1])
    near = np.argsort(d, axis=1, kind="stable")[:, :kk]
    w = np.isfinite(np.take_along_axis(d, near, axis=1)).astype(float)
    return near, w


def greedy(fitted: Adaptive, allowed: np.ndarray, usable: np.ndarray, depth: int) -> np.ndarray:
    """The static greedy portfolio over each query's usable rows (the inner simulation's first picks)."""
    import numpy as np

    q = allowed.shape[0]
    probed = np.zeros((q, 0), dtype=int)
    setting = Setting(0, 0, "shape")
    for _ in range(depth):
        pick = choose_many(fitted, probed, np.zeros(probed.shape), allowed, usable, setting)[0]
        probed = np.column_stack([probed, np.maximum(pick, 0)])
    return probed


# --- fitting: the setting, by an inner leave-one-group-out that simulates the probe ---------------------------


def settings() -> list[Setting]:
    """No adaptation first (ties keep it), then every static x similarity x k."""
    return [NO_ADAPTATION] + [Setting(s, k, sim) for s in STATIC_CHOICES for sim in SIMILARITIES for k in K_CHOICES]


def fit_adaptive(scores: np.ndarray, regret: np.ndarray, spread: np.ndarray, groups: np.ndarray,
                 noise: np.ndarray | None = None, *, seed: int = 0, thin: np.ndarray | None = None) -> Adaptive:
    """Choose the setting on these rows: each dense row held out with its group, the probe simulated on it.

    ``noise``: per row, the sd of one configuration's CV score (:func:`expt.meta.noise.row_noise`); the held-out
    row's landmarks are measured with it, as a user's CV measures them. None or NaN: measured exactly.
    """
    import numpy as np

    fitted = Adaptive(scores, regret, spread)
    groups = np.asarray(groups)
    seen = ~np.isnan(regret)
    dense = seen.sum(axis=1) >= max(INNER_DEPTHS) + 1
    if thin is not None:
        dense &= ~np.asarray(thin, dtype=bool)
    test = np.flatnonzero(dense)
    if len(np.unique(groups)) < 4 or len(test) < 4:
        return fitted
    if len(test) > INNER_QUERIES:
        test = test[np.linspace(0, len(test) - 1, INNER_QUERIES).astype(int)]
    rng = np.random.default_rng(seed)
    draws = INNER_DRAWS if noise is not None else 1
    rows = np.repeat(test, draws)
    sd = np.zeros(len(rows)) if noise is None else np.nan_to_num(np.asarray(noise, dtype=float)[rows])
    view = scores[rows] + rng.normal(size=(len(rows), scores.shape[1])) * sd[:, None]
    usable = groups[None, :] != groups[rows][:, None]
    allowed = seen[rows]
    first = greedy(fitted, allowed, usable, max(STATIC_CHOICES))
    truth = regret[rows]
    depth = max(INNER_DEPTHS)
    results: dict[Setting, float] = {}
    per_query: dict[Setting, np.ndarray] = {}
    for setting in settings():
        probed = first[:, :setting.static]
        while probed.shape[1] < depth:
            measured = np.take_along_axis(view, probed, axis=1)
            pick = choose_many(fitted, probed, measured, allowed, usable, setting)[0]
            probed = np.column_stack([probed, np.where(pick >= 0, pick, probed[:, -1])])
        t = np.take_along_axis(truth, probed, axis=1)
        per_query[setting] = np.mean([np.nanmin(t[:, :d], axis=1) for d in INNER_DEPTHS], axis=0)
        results[setting] = float(per_query[setting].mean())
    fitted.inner = results
    best = min(results, key=lambda s: (round(results[s], 12), settings().index(s)))
    diff = per_query[best] - per_query[NO_ADAPTATION]  # adapting must beat not adapting by one standard error
    se = diff.std() / np.sqrt(max(len(diff) - 1, 1))
    fitted.setting = best if -diff.mean() > se else NO_ADAPTATION
    return fitted


# --- the probe's call ---------------------------------------------------------------------------------------


def next_candidate(table: Table, query: np.ndarray, measured: Mapping[int, float],
                   allowed: np.ndarray | None = None, *, method: str | None = None, ranking: list[int] | None = None,
                   fitted: Adaptive | None = None) -> int | None:
    """The configuration column to try next (never one measured, only allowed ones), or None when none is left."""
    return explain(table, query, measured, allowed, method=method, ranking=ranking, fitted=fitted).index


def explain(table: Table, query: np.ndarray, measured: Mapping[int, float], allowed: np.ndarray | None = None, *,
            method: str | None = None, ranking: list[int] | None = None, fitted: Adaptive | None = None) -> Choice:

    """:func:`next_candidate` with what supports it. ``ranking`` (the recommender's order) and ``fitted`` (from
    :func:`fit_table`) may be passed in so that a probe computes them once, not once per candidate."""
    import numpy as np

    n = len(table.configs)
    allowed = np.ones(n, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool).copy()
    done = {int(j) for j in measured}
    fitted = fitted if fitted is not None else fit_table(table)
    setting = fitted.setting
    open_ = [j for j in range(n) if allowed[j] and j not in done]
    if not open_:
        return Choice(None, "none", setting)
    if len(done) < setting.static:
        if ranking is None:
            from expt.meta.rankers import DEFAULT_METHOD, rank

            ranking = rank(table, query, method or DEFAULT_METHOD, allowed=allowed).order
        first = [j for j in ranking if j not in done and allowed[j]]
        if first:
            return Choice(int(first[0]), "ranking", setting)
    probed = np.array([sorted(done)], dtype=int)
    values = np.array([[float(measured[j]) for j in sorted(done)]])
    usable = np.ones((1, table.scores.shape[0]), dtype=bool)
    pick, near, dist, expected = choose_many(fitted, probed, values, allowed[None, :], usable)
    if pick[0] < 0:
        return Choice(int(open_[0]), "ranking", setting)
    shown = [(int(i), float(d)) for i, d in zip(near[0], dist[0], strict=True) if np.isfinite(d)]
    return Choice(int(pick[0]), "adaptive", setting, shown[: setting.k or 10], float(expected[0]))


def fit_table(table: Table, *, seed: int = 0) -> Adaptive:
    """:func:`fit_adaptive` on a whole table, its noise from the per-fold scores."""
    import numpy as np

    from expt.meta.noise import row_noise

    return fit_adaptive(table.scores, table.regret, table.spread, np.array(table.groups), row_noise(table),
                        seed=seed, thin=table.thin)
