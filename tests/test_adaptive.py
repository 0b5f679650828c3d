"""The adaptive probe's choice on hand-made matrices (no runs, no stores: milliseconds)."""

from __future__ import annotations

import numpy as np

from expt.meta.adaptive import Adaptive, Setting, choose_many, explain, fit_adaptive, next_candidate
from expt.meta.recommend import Table


def clustered(n: int = 24, seed: int = 0) -> Table:
    """Two kinds of dataset. Landmarks 0 and 1: kind A scores 0 above 1, kind B 1 above 0. Candidate 2 is kind A's
    best, candidate 3 kind B's; 4 and 5 are middling everywhere. Scores at different levels and spreads per row."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        level, spread = rng.uniform(.5, .9), rng.uniform(.02, .1)
        pattern = [1.0, .2, 1.4, .0, .6, .5] if i % 2 == 0 else [.2, 1.0, .0, 1.4, .6, .5]
        rows.append(level + spread * (np.array(pattern) + rng.normal(0, .05, 6)))
    scores = np.array(rows)
    features = rng.normal(size=(n, 2))  # meta-features that say nothing
    return Table("classification", "accuracy", [{"name": f"d{i}", "group": f"g{i}"} for i in range(n)],
                 [{"key": f"c{j}"} for j in range(6)], features, ["f0", "f1"], scores)


def test_the_next_pick_follows_the_cluster_the_landmarks_reveal() -> None:
    table = clustered()
    model = Adaptive(table.scores, table.regret, table.spread, Setting(2, 5, "shape"))
    kind_a = {0: .81, 1: .74}  # the user's raw scores, at a level and spread of their own: 0 beat 1
    kind_b = {0: .62, 1: .66}
    for measured, expected in ((kind_a, 2), (kind_b, 3)):
        choice = explain(table, None, measured, fitted=model)
        assert choice.index == expected and choice.stage == "adaptive"
        assert len(choice.neighbors) == 5
        assert all((i % 2 == 0) == (expected == 2) for i, _ in choice.neighbors)  # neighbours of the user's kind
    units = Adaptive(table.scores, table.regret, table.spread, Setting(2, 5, "units"))
    assert explain(table, None, kind_a, fitted=units).index == 2
    assert explain(table, None, kind_b, fitted=units).index == 3


def six_kinds(n: int = 48, seed: int = 0) -> Table:
    """Six kinds of dataset, each with its own best candidate (2..7), more than a probe of 5 can cover blindly;
    landmarks 0 and 1 are good everywhere and their difference says the kind (-.3 .. +.3 spreads)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind = i % 6
        gap = (-.3, -.2, -.1, .1, .2, .3)[kind]
        pattern = np.full(8, .5)
        pattern[:2] = 1 + gap, 1 - gap
        pattern[2 + kind] = 1.5
        level, spread = rng.uniform(.5, .9), rng.uniform(.02, .1)
        rows.append(level + spread * (pattern + rng.normal(0, .01, 8)))
    return Table("classification", "accuracy", [{"name": f"d{i}", "group": f"g{i}"} for i in range(n)],
                 [{"key": f"c{j}"} for j in range(8)], rng.normal(size=(n, 1)), ["f0"], np.array(rows))


def test_the_inner_leave_one_group_out_adapts_where_the_landmarks_tell_and_not_where_they_do_not() -> None:
    table = six_kinds()
    fitted = fit_adaptive(table.scores, table.regret, table.spread, np.array(table.groups))
    assert fitted.setting.k > 0
    assert fitted.inner[fitted.setting] < fitted.inner[Setting(2, 0, "shape")]
    rng = np.random.default_rng(1)  # scores that are noise: nothing to adapt to
    noise = Table("classification", "accuracy", table.datasets, table.configs, table.features, ["f0"],
                  rng.uniform(.5, .9, size=table.scores.shape))
    assert fit_adaptive(noise.scores, noise.regret, noise.spread, np.array(noise.groups)).setting.k == 0


def test_first_picks_come_from_the_ranking_and_the_choice_keeps_to_what_is_open() -> None:
    table = clustered()
    model = Adaptive(table.scores, table.regret, table.spread, Setting(2, 5, "shape"))
    assert explain(table, None, {}, fitted=model, ranking=[4, 0, 1]).index == 4
    assert explain(table, None, {4: .7}, fitted=model, ranking=[4, 0, 1]).index == 0
    allowed = np.array([True, True, False, True, True, True])  # the cluster's best is not allowed
    choice = explain(table, None, {0: .81, 1: .74}, allowed, fitted=model)
    assert choice.index not in (0, 1, 2) and choice.index is not None
    assert explain(table, None, {j: .5 for j in range(6)}, fitted=model).index is None
    picks, _, _, _ = choose_many(model, np.array([[0, 1]]), np.array([[.81, .74]]), np.ones((1, 6), dtype=bool),
                                 np.zeros((1, len(table.datasets)), dtype=bool))
    assert picks[0] not in (0, 1)  # no usable row: nothing to condition on, still never a measured one


def test_next_candidate_is_the_index_of_explain() -> None:
    table = clustered()
    model = Adaptive(table.scores, table.regret, table.spread, Setting(2, 5, "shape"))
    assert next_candidate(table, None, {0: .81, 1: .74}, fitted=model) == 2
    assert next_candidate(table, None, {0: .62, 1: .66}, np.ones(6, dtype=bool), fitted=model) == 3
