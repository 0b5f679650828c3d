"""Noise estimates, the oracle under noise, simultaneous intervals and thin rows, on synthetic tables with known
answers (no runs, no stores)."""

from __future__ import annotations

import numpy as np

from expt.meta.dataset_features import VERSION
from expt.meta.intervals import compare_all
from expt.meta.noise import copies, fresh_regret, full_search, row_noise
from expt.meta.recommend import Table, build_table, normalized_regret, table_regret

FOLDS = 3


def noisy_table(true: np.ndarray, sigma: float, seed: int = 0) -> Table:
    """Fold scores = truth + a fold effect shared by the row's configurations + independent noise of sd sigma."""
    rng = np.random.default_rng(seed)
    rows, configs = true.shape
    folds = true[:, :, None] + rng.normal(0, .05, (rows, 1, FOLDS)) + rng.normal(0, sigma, (rows, configs, FOLDS))
    per_fold = {(i, j): tuple(folds[i, j]) for i in range(rows) for j in range(configs)}
    return Table("classification", "accuracy", [{"name": f"d{i}", "group": f"g{i}"} for i in range(rows)],
                 [{"key": f"c{j}"} for j in range(configs)], np.zeros((rows, 1)), ["f"], folds.mean(axis=2),
                 fold_scores=per_fold)


def test_the_noise_estimate_recovers_the_known_noise_and_ignores_the_shared_fold_effect() -> None:
    true = np.tile(np.linspace(.6, .9, 20), (40, 1))
    table = noisy_table(true, sigma=.03)
    expected = .03 / np.sqrt(FOLDS)  # sd of a 3-fold mean; the fold effect (sd .05) cancels
    assert abs(np.median(row_noise(table, among="all")) - expected) < .2 * expected
    assert abs(np.median(row_noise(table)) - expected) < .25 * expected


def test_the_oracle_under_noise_comes_out_near_its_known_value() -> None:
    true = np.tile(np.linspace(.6, .9, 20), (60, 1))
    sigma = .06
    known = []  # the oracle's top-1 regret simulated from the truth itself
    rng = np.random.default_rng(5)
    for _ in range(40):
        view = true + rng.normal(0, sigma / np.sqrt(FOLDS), true.shape)
        fresh = true + rng.normal(0, sigma / np.sqrt(FOLDS), true.shape)
        pick = view.argmax(axis=1)
        known.append(normalized_regret(fresh)[np.arange(len(true)), pick].mean())
    table = noisy_table(true, sigma, seed=1)  # what we have: one recorded copy and its fold scores
    view, fresh = copies(table.scores, row_noise(table, among="all"), draws=40, seed=0)
    estimate = full_search(view, fresh, fresh_regret(fresh))[0].mean()
    assert 0.05 < np.mean(known) < 0.9  # noise matters here, and the estimate finds how much
    assert abs(estimate - np.mean(known)) < .1
    quiet = noisy_table(true, .001, seed=1)
    view, fresh = copies(quiet.scores, row_noise(quiet, among="all"), draws=10, seed=0)
    assert full_search(view, fresh, fresh_regret(fresh))[0].mean() < .05  # without noise the oracle is exact


def test_simultaneous_intervals_are_wider_than_the_per_comparison_ones() -> None:
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(30), 2)
    results = {name: rng.uniform(0, 1, (60, 3)) for name in ("a", "b", "c", "d")}
    pairs = [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d")]
    out = compare_all(pairs, results, groups, seed=0, draws=2000)
    assert out[0]["family"] == 15 and out[0]["crit"] > 2.2
    for c in out:
        for m in ("top1", "best3", "best5"):
            cell = c[m]
            assert cell["sim_low"] < cell["low"] < cell["diff"] < cell["high"] < cell["sim_high"]
    alone = compare_all(pairs[:1], results, groups, seed=0, draws=2000, measures=("top1",))
    assert 1.7 < alone[0]["crit"] < 2.3  # one difference: about the usual 1.96


def records(name: str, scores: dict[str, float]) -> list[dict]:
    dataset = {"name": name, "fingerprint": name, "task": "regression"}
    return [{"dataset": dataset, "meta_features": {"f": 1.0}, "meta_features_version": VERSION,
             "model": {"config_key": key}, "metric": {"name": "r2"}, "score": s, "scores": [s - .01, s, s + .01]}
            for key, s in scores.items()]


def test_a_thin_row_takes_its_scale_from_the_dense_rows_not_from_its_few_good_configurations() -> None:
    rng = np.random.default_rng(0)
    typical = np.linspace(0, 1.6, 20)  # each configuration's regret, the same shape on every dataset
    dense = []
    for i in range(10):
        best, spread = rng.uniform(.5, .9), rng.uniform(.05, .2)
        dense += records(f"d{i}", {f"c{j}": best - spread * (t + rng.normal(0, .05)) for j, t in enumerate(typical)})
    # A probe tried 4 good configurations (true regrets 0, .17, .25, .34) on a new dataset with spread .1.
    probe = records("probe", {f"c{j}": .8 - .1 * typical[j] for j in (0, 2, 3, 4)})
    table = build_table(dense + probe, "regression")
    row = [d["name"] for d in table.datasets].index("probe")
    cols = [int(c["key"][1:]) for c in table.configs]
    assert table.thin.tolist() == [False] * 10 + [True]
    truth = np.clip(typical[cols], 0, 1)
    own = normalized_regret(table.scores[row:row + 1])[0]  # its own best - median: the picks' spread
    seen = ~np.isnan(table.scores[row])
    assert np.nanmax(own) == 1.0  # the fourth-best good pick would read as "the median or worse"
    assert np.abs(table.regret[row, seen] - truth[seen]).max() < .1
    assert np.abs(own[seen] - truth[seen]).max() > .5
    assert table.spread[row] > .08  # the probe row's spread, estimated: .1 in truth (own: about .04)
    assert table.fold_scores[(row, cols.index(0))] == (.79, .8, .81)


def test_dense_rows_are_normalized_as_before() -> None:
    scores = np.random.default_rng(3).uniform(0, 1, (8, 12))
    scores[2, :4] = np.nan  # 8 of 12: still dense
    regret, _, thin = table_regret(scores)
    assert not thin.any()
    np.testing.assert_allclose(regret, normalized_regret(scores))
