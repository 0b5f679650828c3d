"""Recommenders over a regret table: which configurations to try first on a new dataset.

All weigh the training rows (datasets), estimate each configuration's regret from
the rows that evaluated it, and differ in the weights and in how the list is built:

- ``ridge`` (the default): the first pick by a per-configuration ridge regression of regret on
  z-scored meta-features, or the single best where the inner leave-one-group-out finds that
  the regression does not help (its penalty ``alpha`` = infinity); the picks after it are the
  static greedy portfolio's, given the first. See :func:`ridge_coefs`.

- ``single-best``: uniform weights, configurations by expected regret (the k best on average).
- ``portfolio``: uniform weights, a static greedy portfolio (TabRepo, FLAML-Zero): the next
  configuration is the one that most lowers the expected regret of the best one so far, so
  ``--top k`` is a complementary set, not k near-copies of the best.
- ``knn``: the k datasets nearest in meta-feature space (z-scored, clipped at +-5), weighted by
  closeness, configurations by expected regret.
- ``conditioned``: the greedy portfolio over similarity-weighted datasets: weights
  (1 - lam) uniform + lam nearest-k closeness. lam = 0 is the static portfolio, lam = 1
  pure neighbours.

Evidence prior: an estimate is shrunk towards regret 1 (a dataset's median or worse) by
``PRIOR_WEIGHT`` = 3 pseudo-datasets, (sum_i w_i t_i + 3) / (sum_i w_i + 3), and a greedy step's
expected improvement towards 0. Pessimistic on purpose, and it guarantees this: a configuration
with less (weighted) evidence never outranks one with more whose raw estimate is at least as good
(the thinner one is pulled harder towards the worst value). The weight 3 makes a configuration
seen on one dataset, even as that dataset's best (regret 0), expected at 0.75: no better than a
random configuration (mean regret ~0.7 on the knowledge base), so one-off sweep configurations do
not crowd out well-tested ones. (The old prior, one pseudo-dataset at 0.5, put a configuration
seen once with a good score above one evaluated on 34 datasets.) Where every configuration was
evaluated on every dataset, as in the knowledge base, the prior changes no ranking.

Hyper-parameters are chosen by leave-one-group-out on the training rows only, each for what it
decides: the weights of the first pick (k of ``knn``; k1, lam1 of ``conditioned``) by inner top-1
regret, the weights of the greedy picks after it (k, lam of ``conditioned``) by inner best-of-3
regret given that first pick; ties go to the simpler setting. Weights are normalized to their effective sample size
(Kish: (sum w)^2 / sum w^2), so one pseudo-dataset of prior weighs the same against
35 uniform datasets as it does against 5 neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from expt.meta.recommend import Table

METHODS = ("ridge", "conditioned", "portfolio", "knn", "single-best")
# Pre-registered on 2026-12-07 (see docs/guides/recommend.md, "The default recommender, fixed in advance"),
# before the knowledge
# base grew: on the 62 x 138 one, ridge's first pick was the only method that beat the single best on regression
# (leave-one-group-out), and on classification its inner selection falls back to the single best (alpha = inf).
DEFAULT_METHOD = "ridge"
COMPLEMENTARY = {"ridge": True, "conditioned": True, "portfolio": True, "knn": False, "single-best": False}
PRIOR_REGRET = 1.0  # pessimistic: unevaluated means "as bad as a dataset's median or worse"
PRIOR_WEIGHT = 3.0  # pseudo-datasets of PRIOR_REGRET in every estimate
K_CHOICES = (3, 5, 7, 10, 15)
LAM_CHOICES = (0.25, 0.5, 0.75, 1.0)  # plus lam = 0 (the static portfolio), tried first
INNER_DEPTH = 3
INNER_QUERIES = 100  # held-out rows of the inner selection at most (10,000 records: 500 datasets)
# ridge: the penalty per training row of the regression (alpha x rows), strongest first so that a tie keeps the
# simpler model; infinity, tried first of all, is no regression: the single best.
RIDGE_ALPHAS = (float("inf"), 30.0, 10.0, 3.0, 1.0, 0.3, 0.1)
RIDGE_MIN_ROWS = 20  # a configuration evaluated on fewer rows gets its shrunk mean, not a regression on ~30 features


@dataclass
class Ranked:
    """Configurations best first, with what supports each."""

    order: list[int]  # configuration indices
    expected_regret: list[float]  # each configuration's own shrunk estimate
    expected_best: list[float]  # estimated regret of the best of the first j (weighted, unshrunk)
    evidence: list[float]  # effective number of datasets behind each estimate
    neighbors: list[tuple[int, float]] = field(default_factory=list)  # (row, distance) of the nearest rows
    params: dict[str, float] = field(default_factory=dict)  # hyper-parameters chosen on the training rows


# --- the shared machinery: weights and rankings for many queries at once ------------------------------


def scale_features(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over the training rows (a constant feature: scale 1, so it stays 0).

    z-scores, not median/IQR: a feature that is 0 on most datasets (the two missing-value ratios) has an IQR near
    0, and dividing by it let those two carry about a quarter of every distance; its standard deviation does not
    (knn's top-1 regret on regression: 0.395 with median/IQR, 0.303 with z-scores at the same k, issue 24).
    """
    import numpy as np

    center = features.mean(axis=0) if len(features) else np.zeros(features.shape[1])
    scale = features.std(axis=0) if len(features) else np.ones(features.shape[1])
    return center, np.where(scale > 1e-9, scale, 1.0)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square distance between rows of a and rows of b, both already scaled."""
    import numpy as np

    sa, sb = (a ** 2).sum(axis=1), (b ** 2).sum(axis=1)
    return np.sqrt(np.clip(sa[:, None] + sb[None, :] - 2 * a @ b.T, 0, None) / max(a.shape[1], 1))


def weights(dist: np.ndarray, usable: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Row weights per query: (1 - lam) uniform + lam closeness 1/(d + 0.1) over the k nearest, at their ESS."""
    import numpy as np

    q, n = usable.shape
    count = usable.sum(axis=1, keepdims=True)
    w = usable / np.maximum(count, 1)
    if lam > 0 and n:
        d = np.where(usable, dist, np.inf)
        kk = min(k, n)
        near = np.argsort(d, axis=1, kind="stable")[:, :kk]
        dn = np.take_along_axis(d, near, axis=1)
        closeness = np.where(np.isfinite(dn), 1.0 / (dn + 0.1), 0.0)
        c = np.zeros((q, n))
        np.put_along_axis(c, near, closeness, axis=1)
        c /= np.maximum(c.sum(axis=1, keepdims=True), 1e-12)
        w = (1 - lam) * w + lam * c
    total = w.sum(axis=1, keepdims=True)
    ess = total ** 2 / np.maximum((w ** 2).sum(axis=1, keepdims=True), 1e-12)
    return np.where(total > 0, w / np.maximum(total, 1e-12) * ess, 0.0)


def shrunk_mean(regret: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Expected regret per query and configuration: (sum w t + PRIOR_WEIGHT * PRIOR_REGRET) / (sum w + PRIOR_WEIGHT)."""
    import numpy as np

    seen = ~np.isnan(regret)
    return (w @ np.where(seen, regret, 0.0) + PRIOR_WEIGHT * PRIOR_REGRET) / (w @ seen + PRIOR_WEIGHT)


def rank_many(regret: np.ndarray, w: np.ndarray, allowed: np.ndarray, depth: int, complementary: bool,
              w_first: np.ndarray | None = None,
              first_own: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``depth`` configurations per query (-1 past the allowed ones); their own estimates and the
    estimated regret of the best so far.

    The first pick, and every pick of a non-complementary ranking, is the configuration of lowest shrunk mean
    regret under ``w_first`` (default ``w``). Greedy step: with b_i the best regret so far on row i, the expected
    improvement of c is sum_i w_i max(b_i - t_ic, 0) / (sum_i w_i [c seen on i] + PRIOR_WEIGHT): shrunk towards
    no improvement, so thin evidence never buys a place either. ``first_own`` (queries x configurations), where
    given, are the first pick's expected regrets instead (ridge's predictions).
    """
    import numpy as np

    w_first = w if w_first is None else w_first
    q, n = w.shape
    seen = ~np.isnan(regret)
    filled = np.where(seen, regret, PRIOR_REGRET)
    evidence = w @ seen
    own = shrunk_mean(regret, w_first)
    first_own = own if first_own is None else first_own
    picks = np.full((q, depth), -1)
    own_out, best_out = np.full((q, depth), np.nan), np.full((q, depth), np.nan)
    open_ = allowed.copy()
    best = np.full((q, n), PRIOR_REGRET)
    rows = np.arange(q)
    for step in range(depth):
        if complementary and step > 0:
            gain = np.einsum("qi,qic->qc", w, np.maximum(best[:, :, None] - filled[None, :, :], 0.0))
            score = gain / (evidence + PRIOR_WEIGHT) - 1e-9 * own  # ties: the better configuration alone
        else:
            score = -(first_own if step == 0 else own)
        score = np.where(open_, score, -np.inf)
        pick = np.argmax(score, axis=1)
        ok = np.isfinite(score[rows, pick])
        picks[ok, step] = pick[ok]
        open_[rows[ok], pick[ok]] = False
        best[ok] = np.minimum(best[ok], filled[:, pick[ok]].T)
        own_out[ok, step] = (first_own if step == 0 else own)[rows[ok], pick[ok]]
        best_out[ok, step] = (w[ok] * best[ok]).sum(axis=1) / np.maximum(w[ok].sum(axis=1), 1e-12)
    return picks, own_out, best_out


# --- ridge: the first pick as a regression of regret on the meta-features -----------------------------


def ridge_coefs(regret: np.ndarray, scaled: np.ndarray, alphas: tuple[float, ...] = RIDGE_ALPHAS) -> np.ndarray:
    """Per penalty and configuration, the coefficients (intercept first) of regret ~ scaled meta-features.

    One ridge regression per configuration, on the rows that evaluated it, penalty ``alpha`` x those rows on the
    slopes only (the intercept is free, so a strong penalty tends to the configuration's mean regret: the single
    best's estimate). Configurations that share the rows they were evaluated on share one Gram matrix, so the
    knowledge base (every configuration on every row) costs one solve per penalty. NaN where alpha is infinite or
    the configuration has fewer than ``RIDGE_MIN_ROWS`` rows: :func:`ridge_expected` then falls back to its
    shrunk mean. Shape: (len(alphas), features + 1, configurations).
    """
    return _RidgeParts(regret, scaled).coefs(alphas)


class _RidgeParts:
    """The Gram matrices of :func:`ridge_coefs`, one per set of rows configurations share, made once: a held-out
    group's rows are subtracted from them (``without``) instead of building every matrix again, which made the
    inner leave-one-group-out over 500 user datasets cost seconds."""

    def __init__(self, regret: np.ndarray, scaled: np.ndarray) -> None:
        import numpy as np

        n, d = scaled.shape
        self.regret, self.shape = regret, (d + 1, regret.shape[1])
        self.xa = np.column_stack([np.ones(n), scaled])
        self.penalty = np.eye(d + 1)
        self.penalty[0, 0] = 0.0
        seen = ~np.isnan(regret)
        cols = np.flatnonzero(seen.sum(axis=0) >= RIDGE_MIN_ROWS)
        self.parts = []  # (columns, rows mask, Gram, right-hand side)
        if len(cols):
            patterns, inverse = np.unique(seen[:, cols].T, axis=0, return_inverse=True)
            for k, rows in enumerate(patterns):
                group = cols[np.asarray(inverse).ravel() == k]
                x = self.xa[rows]
                self.parts.append((group, rows, x.T @ x, x.T @ regret[np.ix_(rows, group)]))

    def coefs(self, alphas: tuple[float, ...], without: np.ndarray | None = None) -> np.ndarray:
        """Coefficients per penalty; ``without``: a row mask left out of every regression."""
        import numpy as np

        coef = np.full((len(alphas), *self.shape), np.nan)
        finite = np.flatnonzero(np.isfinite(alphas))
        for group, rows, gram, rhs in self.parts if len(finite) else ():
            n = int(rows.sum())
            if without is not None:
                out = rows & without
                if out.any():
                    x = self.xa[out]
                    gram, rhs, n = gram - x.T @ x, rhs - x.T @ self.regret[np.ix_(out, group)], n - int(out.sum())
            if n < RIDGE_MIN_ROWS:
                continue
            lhs = gram + (np.asarray(alphas)[finite] * n)[:, None, None] * self.penalty
            solved = np.linalg.solve(lhs, np.broadcast_to(rhs, (len(finite), *rhs.shape)))
            for i, a in enumerate(finite):
                coef[a][:, group] = solved[i]
        return coef


def ridge_expected(coef: np.ndarray, regret: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Expected regret per query and configuration: the regression's prediction (clipped to [0, 1]) shrunk by the
    evidence prior as every estimate is, (n x prediction + PRIOR_WEIGHT x PRIOR_REGRET) / (n + PRIOR_WEIGHT) over
    the n rows behind it; the single best's shrunk mean where the configuration has no regression."""
    import numpy as np

    seen = ~np.isnan(regret)
    n = seen.sum(axis=0).astype(float)
    uniform = shrunk_mean(regret, np.ones((len(queries), len(regret))))
    pred = np.clip(np.column_stack([np.ones(len(queries)), queries]) @ np.nan_to_num(coef), 0.0, 1.0)
    pred = (n * pred + PRIOR_WEIGHT * PRIOR_REGRET) / (n + PRIOR_WEIGHT)
    return np.where(np.isnan(coef).any(axis=0)[None, :], uniform, pred)


def ridge_inner_scores(regret: np.ndarray, scaled: np.ndarray, groups: np.ndarray,
                       alphas: tuple[float, ...] = RIDGE_ALPHAS) -> np.ndarray:
    """Mean inner top-1 regret per penalty: each training group held out in turn, the regressions refitted on the
    others (at most ``INNER_QUERIES`` held-out rows, evenly spaced, as for the other methods)."""
    import numpy as np

    seen = ~np.isnan(regret)
    test = np.flatnonzero(seen.sum(axis=1) >= 2)
    if len(test) > INNER_QUERIES:
        test = test[np.linspace(0, len(test) - 1, INNER_QUERIES).astype(int)]
    parts = _RidgeParts(regret, scaled)
    total, count = np.zeros(len(alphas)), 0
    for g in dict.fromkeys(groups[test]):
        held = test[groups[test] == g]
        train = groups != g
        coef = parts.coefs(alphas, without=~train)
        for a in range(len(alphas)):
            expected = np.where(seen[held], ridge_expected(coef[a], regret[train], scaled[held]), np.inf)
            pick = np.argmin(expected, axis=1)
            total[a] += regret[held, pick].sum()
        count += len(held)
    return total / max(count, 1) if count else np.full(len(alphas), np.inf)


# --- fitting: hyper-parameters by leave-one-group-out on the training rows -----------------------------


def grid(method: str, n_groups: int, stage: str = "first") -> list[tuple[int, float]]:
    """(k, lam) settings a stage of a method is chosen among, simplest first (ties keep the earlier).

    The first pick of ``knn`` weighs the k nearest datasets (lam = 1). The first pick of ``conditioned`` is
    either that or no conditioning at all, (0, 0): the single best configuration, tried first, so that a tie
    keeps it. On the 19 x 69 knowledge base knn's first pick led every single configuration; on the
    62 x 138 one the single best led knn's (0.598 vs 0.684 top-1 t_d, classification), so whether the
    meta-features help the first pick is now decided per training set by the inner leave-one-group-out,
    as lam is for the picks after it. (A 21-setting search for one pick would overfit; this one has 6.)
    The greedy picks after it search lam too (lam = 0: the static portfolio).
    """
    ks = [k for k in K_CHOICES if k < n_groups] or [max(n_groups - 1, 1)]
    if method == "knn":
        return [(k, 1.0) for k in ks]
    if method == "conditioned" and stage == "first":
        return [(0, 0.0)] + [(k, 1.0) for k in ks]
    if method == "conditioned":
        return [(0, 0.0)] + [(k, lam) for lam in LAM_CHOICES for k in ks]
    return [(0, 0.0)]


def inner_scores(regret: np.ndarray, dist: np.ndarray, groups: np.ndarray, settings: list[tuple[int, float]], *,
                 complementary: bool, first: tuple[int, float] | None = None) -> np.ndarray:
    """Mean inner top-1 regret (``first`` None) or best-of-3 regret (first pick by the ``first`` setting) per
    setting: each training row held out with its group, the other groups recommending."""
    import numpy as np

    seen = ~np.isnan(regret)
    test = seen.sum(axis=1) >= 2
    if test.sum() > INNER_QUERIES:  # evenly spaced held-out rows: the selection's cost stops growing with the rows
        keep = np.flatnonzero(test)[np.linspace(0, test.sum() - 1, INNER_QUERIES).astype(int)]
        test = np.zeros_like(test)
        test[keep] = True
    out = np.full(len(settings), np.inf)
    if not test.any():
        return out
    usable = (groups[None, :] != groups[:, None])[test]
    truth, d = regret[test], dist[test]
    w_first = weights(d, usable, *first) if first is not None else None
    for s, (k, lam) in enumerate(settings):
        w = weights(d, usable, k, lam)
        depth = 1 if first is None else INNER_DEPTH
        picks, _, _ = rank_many(regret, w, seen[test], depth, complementary, w_first)
        t = np.where(picks >= 0, np.take_along_axis(truth, np.maximum(picks, 0), axis=1), np.nan)
        out[s] = float(np.mean(np.nanmin(t, axis=1)))
    return out


@dataclass
class Fitted:
    """A recommender fitted on training rows: their regret, scaled features and chosen hyper-parameters.

    (k1, lam1) weigh the rows for the first pick, (k, lam) for the greedy picks after it: the first is chosen
    for top-1 regret, the rest for best-of-3 given the first, each by its own inner leave-one-group-out.
    """

    method: str
    regret: np.ndarray
    scaled: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    first: tuple[int, float] = (0, 0.0)
    rest: tuple[int, float] = (0, 0.0)
    alpha: float = float("inf")  # ridge's penalty; infinite: no regression, the single best first
    coef: np.ndarray | None = None  # ridge's coefficients at that penalty (features + 1, configurations)

    @property
    def params(self) -> dict[str, float]:
        def named(setting: tuple[int, float], suffix: str = "") -> dict[str, float]:
            k, lam = setting
            return {f"k{suffix}": k, f"lam{suffix}": lam} if lam > 0 else {f"lam{suffix}": 0.0}

        if self.method == "ridge":
            return {"alpha": self.alpha}
        if self.method == "knn":
            return {"k": self.first[0]}
        if self.method == "conditioned":
            return {"k1": self.first[0], **named(self.rest)}
        return {}

    def scaled_queries(self, queries: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.clip((queries - self.center) / self.scale, -5, 5)

    def query_distances(self, queries: np.ndarray) -> np.ndarray:
        return distances(self.scaled_queries(queries), self.scaled)

    def rank(self, queries: np.ndarray, allowed: np.ndarray,
             depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Picks, own estimates, best-so-far estimates and the first pick's weights, per query."""
        import numpy as np

        dist = self.query_distances(queries)
        usable = np.ones(dist.shape, dtype=bool)
        w1 = weights(dist, usable, *self.first)
        w = w1 if self.rest == self.first else weights(dist, usable, *self.rest)
        first_own = None
        if self.method == "ridge" and self.coef is not None:
            first_own = ridge_expected(self.coef, self.regret, self.scaled_queries(queries))
        return (*rank_many(self.regret, w, allowed, depth, COMPLEMENTARY[self.method], w1, first_own), w1)


def fit(method: str, regret: np.ndarray, features: np.ndarray, groups: np.ndarray) -> Fitted:
    """Scale on the training rows, and choose the method's hyper-parameters by leave-one-group-out on them."""
    import numpy as np

    center, scale = scale_features(features)
    scaled = np.clip((features - center) / scale, -5, 5)
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if method == "ridge":
        alpha = RIDGE_ALPHAS[0]
        if n_groups >= 4:
            alpha = RIDGE_ALPHAS[int(np.argmin(ridge_inner_scores(regret, scaled, groups, RIDGE_ALPHAS)))]
        coef = ridge_coefs(regret, scaled, (alpha,))[0] if np.isfinite(alpha) else None
        return Fitted(method, regret, scaled, center, scale, alpha=alpha, coef=coef)
    settings, later = grid(method, n_groups), grid(method, n_groups, "rest")
    first, rest = settings[0], later[0]
    if n_groups >= 4 and (len(settings) > 1 or len(later) > 1):
        dist = distances(scaled, scaled)
        complementary = COMPLEMENTARY[method]
        first = settings[int(np.argmin(inner_scores(regret, dist, groups, settings, complementary=complementary)))]
        rest = first
        if complementary and len(later) > 1:
            scores = inner_scores(regret, dist, groups, later, complementary=True, first=first)
            rest = later[int(np.argmin(scores))]
        elif complementary:
            rest = later[0]
    return Fitted(method, regret, scaled, center, scale, first, rest)


def rank(table: Table, query: np.ndarray, method: str, *, depth: int | None = None,
         allowed: np.ndarray | None = None) -> Ranked:
    """The ranking ``expt recommend`` shows: ``depth`` configurations (all by default) among ``allowed``."""
    import numpy as np

    n_configs = len(table.configs)
    depth = n_configs if depth is None else min(depth, n_configs)
    allowed = np.ones(n_configs, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    fitted = fit(method, table.regret, table.features, np.array(table.groups))
    picks, own, best, w = fitted.rank(query[None, :], allowed[None, :], depth)
    keep = picks[0] >= 0
    order = [int(j) for j in picks[0][keep]]
    evidence = (w @ ~np.isnan(table.regret))[0]
    neighbors: list[tuple[int, float]] = []
    k, lam = fitted.first
    if lam > 0:
        dist = fitted.query_distances(query[None, :])[0]
        near = np.argsort(dist, kind="stable")[:k]
        neighbors = [(int(i), float(dist[i])) for i in near]
    return Ranked(order, [float(v) for v in own[0][keep]], [float(v) for v in best[0][keep]],
                  [float(evidence[j]) for j in order], neighbors, fitted.params)
