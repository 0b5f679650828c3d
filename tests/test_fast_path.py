"""A sweep's inner folds on an all-numeric table fit on one float array instead of the frame (issue 26, part 4).

The promise is the same search, bit for bit: each trial's inner scores, and so the sampler's next suggestion, must
not depend on which path computed them. Both paths run here on the same machine in the same process, so exact
equality is the right test (a BLAS difference between CPUs would move both sides alike).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from expt.core.config import compose
from expt.sweep.plan import SweepPlan, make_plan

SMALL = ["search.outer_folds=2", "search.inner_folds=3", "search.n_trials=4"]


def searched(plan: SweepPlan, fast: bool, n_trials: int = 4) -> list[tuple[float, list[float], dict]]:
    """The first outer fold's search, on the array (fast) or on the frame."""
    plan.__dict__.pop("matrix", None)
    if not fast:
        plan.__dict__["matrix"] = None
    unit = plan.units[0]
    study = optuna.create_study(direction="maximize",  # scores are greater-is-better (losses negated), as expt does
                                sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=2))
    study.optimize(lambda trial: plan.objective(trial, unit), n_trials=n_trials)
    plan.__dict__.pop("matrix", None)
    return [(t.value, t.user_attrs["inner_scores"], t.params) for t in study.trials]


def same_search(overrides: list[str]) -> SweepPlan:
    plan = make_plan(compose([*SMALL, *overrides]))
    assert plan.matrix is not None, "an all-numeric table takes the array path"
    fast = searched(plan, fast=True)
    slow = searched(plan, fast=False)
    assert fast == slow  # values, every inner score, and so every suggested parameter
    return plan


@pytest.mark.parametrize("overrides", [
    ["data=breast_cancer", "model=logistic_regression"],
    ["data=wine", "model=svm", "learner.preprocessing.scale=minmax"],
    ["data=wine", "model=knn", "learner.preprocessing.scale=robust", "learner.preprocessing.impute=mean"],
    ["data=diabetes", "model=ridge", "learner.preprocessing.impute=none"],
    ["data=iris", "model=random_forest", "learner.preprocessing.scale=none", "learner.preprocessing.impute=none"],
], ids=["lr", "svm-minmax", "knn-robust-mean", "ridge-no-impute", "rf-passthrough"])
def test_the_array_path_searches_exactly_as_the_frame_path(overrides: list[str]) -> None:
    same_search(overrides)


def numeric_table(tmp_path: Path, *, categorical: bool = False) -> Path:
    """Integer and float columns, missing values, a group column: what a user's CSV looks like."""
    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame({
        "age": rng.integers(18, 90, n),  # an integer column
        "dose": rng.normal(5, 2, n).round(3),
        "score": rng.normal(size=n),
        "site": np.repeat(np.arange(30), 4),
    })
    frame.loc[rng.choice(n, 15, replace=False), "dose"] = np.nan
    frame["y"] = (frame["score"] + 0.1 * frame["age"] / 10 + rng.normal(scale=0.5, size=n) > 0.4).astype(int)
    if categorical:
        frame["colour"] = rng.choice(["red", "green", "blue"], n)
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    return path


def test_missing_values_integer_columns_and_a_group_column_search_the_same(tmp_path: Path) -> None:
    path = numeric_table(tmp_path)
    plan = same_search(["data=file", f"data.path={path}", "data.target=y", "model=logistic_regression",
                        "learner.cv.groups=site"])
    assert plan.matrix is not None
    assert plan.matrix.shape == (120, 3)  # the group column is never a feature, on either path
    assert np.isnan(plan.matrix).sum() == 15


def test_a_categorical_column_keeps_the_frame_path(tmp_path: Path) -> None:
    path = numeric_table(tmp_path, categorical=True)
    plan = make_plan(compose([*SMALL, "data=file", f"data.path={path}", "data.target=y",
                              "model=logistic_regression"]))
    assert plan.matrix is None
    assert searched(plan, fast=True, n_trials=2)  # the frame's pipeline, one-hot columns and all
