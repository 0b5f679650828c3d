"""The evaluation under noise: the oracle's reference, first picks in fresh copies, and the probe simulated.

Every figure here is scored in fresh noisy copies of the held-out row (:mod:`expt.meta.noise`), ``COPIES`` of
them, the same copies for every strategy (paired):

- the oracle under noise: it knows one noisy copy of d's table (every configuration evaluated on d, as a full
  search on the user's data would measure them) and keeps the best-looking; its pick is scored in another. This
  is the best any recommender can do top-1 in this regime, and a full search's result.
- each recommender's first pick (from the leave-one-group-out), scored in the same copies: SBS, the default and
  the others beside the oracle, like with like.
- the probe: the user tries K candidates, their own CV (the first copy) keeps the best-looking, scored in the
  second; for the static greedy portfolio's first K, the default recommender's first K, and the adaptive probe
  (:mod:`expt.meta.adaptive`: the default's first picks, then each next chosen given the first copy's scores of
  those tried, its setting chosen by an inner leave-one-group-out on the training groups of each outer fold).
  With each, the share of a full search's fit time it spends (fit seconds of the K over those of every
  configuration on d, from the records).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from expt.meta.recommend import Table

COPIES = 50
KS = (1, 3, 5)
PROBE_PAIRS = (("default", "single-best"), ("adaptive", "portfolio"), ("adaptive", "default"),
               ("portfolio", "full search"), ("default", "full search"), ("adaptive", "full search"))


def evaluate_noise(table: Table, rows: list[int], picks: dict[str, np.ndarray], *, default: str, seed: int,
                   draws: int) -> dict[str, Any]:
    """The figures above for the evaluated ``rows`` (those with per-fold scores), as plain dicts for the renderer."""
    import numpy as np

    from expt.meta.intervals import compare_all
    from expt.meta.noise import copies, difference_noise, fresh_regret, full_search, row_noise, time_share

    sd = row_noise(table)
    rows_arr = np.asarray(rows)
    keep = np.isfinite(sd[rows_arr])
    if not keep.any():
        return {"n": 0, "chosen": {}}
    sub = rows_arr[keep]
    scores, seconds = table.scores[sub], table.fit_seconds[sub]
    view, fresh = copies(scores, sd[sub], draws=COPIES, seed=seed)
    regret = fresh_regret(fresh)
    ours = {name: p[keep] for name, p in picks.items()}
    adaptive, chosen = _adaptive_picks(table, sub, ours[default], view, sd, seed)
    strategies = {"portfolio": ours.get("portfolio"), "default": ours[default], "adaptive": adaptive,
                  "single-best": ours.get("single-best")}
    oracle_t, oracle_loss = full_search(view, fresh, regret)
    per_row: dict[str, np.ndarray] = {"full search": np.repeat(oracle_t.mean(axis=0)[:, None], len(KS), axis=1)}
    probe: dict[str, dict[int, dict[str, float | None]]] = {"full search": {
        k: {"t": float(oracle_t.mean()), "loss": float(oracle_loss.mean()), "time": 1.0} for k in KS}}
    for name, cand in strategies.items():
        if cand is None:
            continue
        cols, probe[name] = [], {}
        for k in KS:
            t, loss = _best_of(view, fresh, regret, cand, k)
            cols.append(t.mean(axis=0))
            share = time_share(seconds, cand, k)
            probe[name][k] = {"t": float(t.mean()), "loss": float(loss.mean()),  # time None: no fit times on record
                              "time": float(np.nanmean(share)) if np.isfinite(share).any() else None}
        per_row[name] = np.column_stack(cols)
    every = row_noise(table, among="all")[sub]  # the estimate: every pair of the row pooled
    view_all, fresh_all = copies(scores, every, draws=COPIES, seed=seed + 1)
    regret_all = fresh_regret(fresh_all)
    top1 = {"oracle under noise": {"t": float(oracle_t.mean()), "loss": float(oracle_loss.mean()),
                                   "t_all": float(full_search(view_all, fresh_all, regret_all)[0].mean())}}
    for name, p in ours.items():
        ok = p[:, 0] >= 0
        t, loss = _best_of(view[:, ok], fresh[:, ok], regret[:, ok], p[ok], 1)
        t_all = _best_of(view_all[:, ok], fresh_all[:, ok], regret_all[:, ok], p[ok], 1)[0]
        top1[name] = {"t": float(t.mean()), "loss": float(loss.mean()), "t_all": float(t_all.mean()),
                      "recorded": float(np.nanmean(table.regret[sub[ok], p[ok, 0]])), "n": int(ok.sum())}
    groups = np.array(table.groups)[sub]
    comparisons = compare_all([(a, b) for a, b in PROBE_PAIRS if a in per_row and b in per_row], per_row, groups,
                              seed=seed, draws=draws, measures=tuple(f"k{k}" for k in KS))
    ratio, ratio_all = difference_noise(table, sd)[sub], difference_noise(table, row_noise(table, among="all"))[sub]
    return {"n": len(sub), "copies": COPIES, "default": default, "difference_noise": float(np.nanmedian(ratio)),
            "difference_noise_all": float(np.nanmedian(ratio_all)),
            "top1": top1, "probe": probe, "comparisons": comparisons, "chosen": chosen}


def _best_of(view: np.ndarray, fresh: np.ndarray, regret: np.ndarray, cand: np.ndarray,
             k: int) -> tuple[np.ndarray, np.ndarray]:

    from expt.meta.noise import best_of

    return best_of(view, fresh, regret, cand, k)


def _adaptive_picks(table: Table, sub: np.ndarray, default_picks: np.ndarray, view: np.ndarray, sd: np.ndarray,
                    seed: int) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Per copy and row, the adaptive probe's first KS[-1] candidates, each outer fold's setting chosen on its
    training groups; and how often each value of the setting was chosen."""
    import numpy as np

    from expt.meta.adaptive import Adaptive, choose_many, fit_adaptive

    depth = max(KS)
    groups = np.array(table.groups)
    n_draws = view.shape[0]
    out = np.full((n_draws, len(sub), depth), -1)
    chosen: dict[str, dict[str, int]] = {"static": {}, "k": {}, "similarity": {}}
    for g in dict.fromkeys(groups[sub]):
        train = np.flatnonzero(groups != g)
        fitted = fit_adaptive(table.scores[train], table.regret[train], table.spread[train], groups[train], sd[train],
                              seed=seed, thin=table.thin[train])
        for key, value in (("static", fitted.setting.static), ("k", fitted.setting.k),
                           ("similarity", fitted.setting.similarity)):
            chosen[key][str(value)] = chosen[key].get(str(value), 0) + 1
        at = np.flatnonzero(groups[sub] == g)
        model = Adaptive(table.scores[train], table.regret[train], table.spread[train], fitted.setting)
        first = default_picks[at, :fitted.setting.static]
        first = np.where(first >= 0, first, first[:, :1])
        probed = np.repeat(first, n_draws, axis=0)  # (row, draw) pairs, row-major
        allowed = np.repeat(~np.isnan(table.scores[sub[at]]), n_draws, axis=0)
        measured_all = view[:, at].transpose(1, 0, 2).reshape(len(at) * n_draws, -1)
        usable = np.ones((len(probed), len(train)), dtype=bool)
        while probed.shape[1] < depth:
            measured = np.take_along_axis(measured_all, probed, axis=1)
            pick = choose_many(model, probed, measured, allowed, usable)[0]
            probed = np.column_stack([probed, np.where(pick >= 0, pick, -1)])
            if (pick < 0).any():
                probed[:, -1] = np.where(pick >= 0, pick, probed[:, 0])
        out[:, at] = probed.reshape(len(at), n_draws, depth).transpose(1, 0, 2)
    return out, chosen
