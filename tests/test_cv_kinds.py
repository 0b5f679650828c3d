"""Grouped and time-ordered folds (issue 23): where rows are not exchangeable, shuffled k-fold is optimistic.

The two demonstrations are the point: a table whose groups share a label-correlated effect (and whose features
carry the group's identity) scores high under shuffled folds and near chance under grouped ones; a drifting
series scores well under shuffled folds and badly on its future. Then the machinery: train, sweep (outer and
inner folds), grid (paired on the same folds only), rerun --check, records' protocol key, and every refusal.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import EXPT, all_runs, train
from mlflow import MlflowClient
from typer.testing import CliRunner

from expt.cli import app
from expt.core.config import compose
from expt.core.cv import cross_validate
from expt.core.errors import ConfigError, DataError, UsageError
from expt.core.prepare import prepare

FAST = ("tracking.log_model=false", "tracking.plots=false")


def grouped_table(n_groups: int = 40, per_group: int = 6, seed: int = 0) -> pd.DataFrame:
    """Rows of one group share an effect that drives their label; the features are the group's centroid plus a
    little noise, so they identify the group and say nothing else about the label."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(n_groups), per_group)
    effect = rng.normal(size=n_groups)
    label = (effect[group] + rng.normal(scale=0.3, size=group.size) > 0).astype(int)
    centroid = rng.normal(scale=3.0, size=(n_groups, 4))
    X = centroid[group] + rng.normal(scale=0.3, size=(group.size, 4))
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(4)])
    return frame.assign(site=[f"site-{g:02d}" for g in group], y=label)


def drifting_series(n_days: int = 120, per_day: int = 2, seed: int = 0) -> pd.DataFrame:
    """A target that drifts upward with a feature that drifts with it: near neighbours in time are near in the
    feature, so shuffled folds interpolate; the future lies outside everything the past saw."""
    rng = np.random.default_rng(seed)
    day = np.repeat(np.arange(n_days), per_day)
    level = day / n_days * 6
    frame = pd.DataFrame({"x0": level + rng.normal(scale=0.2, size=day.size), "x1": rng.normal(size=day.size)})
    frame["day"] = (pd.Timestamp("2024-01-01") + pd.to_timedelta(day, unit="D")).strftime("%Y-%m-%d")
    frame["y"] = level + np.sin(day / 7) + rng.normal(scale=0.3, size=day.size)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # the file's row order is not time's


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tables")
    grouped_table().to_csv(folder / "grouped.csv", index=False)
    drifting_series().to_csv(folder / "series.csv", index=False)
    regression = grouped_table()
    regression["y"] = regression["x0"] * 0.5 + np.random.default_rng(1).normal(size=len(regression))
    regression.to_csv(folder / "grouped_reg.csv", index=False)
    few = grouped_table(n_groups=3, per_group=10)
    few.to_csv(folder / "three_groups.csv", index=False)
    few.assign(site="one").to_csv(folder / "one_group.csv", index=False)
    holes = grouped_table()
    holes.loc[[3, 50], "site"] = None
    holes.to_csv(folder / "holes.csv", index=False)
    series = drifting_series()
    series.loc[[5], "day"] = None
    series.to_csv(folder / "series_holes.csv", index=False)
    series.assign(day="soon").to_csv(folder / "series_text.csv", index=False)
    drifting_series(n_days=4, per_day=5).to_csv(folder / "short_series.csv", index=False)
    numbered = drifting_series()
    numbered["day"] = pd.to_datetime(numbered["day"]).dt.dayofyear
    numbered.to_csv(folder / "numbered_series.csv", index=False)
    return folder


def on(tables: Path, name: str, *overrides: str, model: str | None = "knn") -> list[str]:
    return ["data=file", f"data.path={tables / name}", "data.target=y", *([f"model={model}"] if model else []),
            *overrides]


def cv_score(overrides: list[str]) -> float:
    prepared = prepare(compose(overrides))
    data = prepared.dataset
    return cross_validate(prepared.pipeline, data.X, data.y, cv=prepared.splitter, scoring=prepared.scorer,
                          metric=prepared.metric).mean


# --- why it matters -----------------------------------------------------------------------------------------------

def test_shuffled_folds_flatter_a_grouped_table_and_train_reports_the_grouped_figure(tables: Path, store: str) -> None:
    shuffled = cv_score(on(tables, "grouped.csv"))
    grouped = cv_score(on(tables, "grouped.csv", "learner.cv.groups=site"))
    assert shuffled > 0.8  # each test row's neighbours are its own group's rows, seen in training
    assert abs(grouped - 0.5) < 0.12  # a new group: the features say nothing about its label
    result = train(store, *on(tables, "grouped.csv", "learner.cv.groups=site"), *FAST)
    (run,) = [r for r in all_runs(store) if r.info.run_id == result.run_id]
    assert run.data.metrics["accuracy_mean"] == pytest.approx(grouped)
    assert run.data.tags["expt.split"] == "grouped by site" and run.data.params["learner.cv.groups"] == "site"
    assert "site" not in result.prepared.dataset.X.columns


def test_shuffled_folds_flatter_a_drifting_series_and_time_folds_score_its_future(tables: Path, store: str) -> None:
    shuffled = cv_score(on(tables, "series.csv"))
    ordered = cv_score(on(tables, "series.csv", "learner.cv.kind=time", "learner.cv.order=day"))
    assert shuffled > 0.6 and ordered < 0.0  # interpolation within the past vs the future outside it
    result = train(store, *on(tables, "series.csv", "learner.cv.kind=time", "learner.cv.order=day"), *FAST)
    (run,) = [r for r in all_runs(store) if r.info.run_id == result.run_id]
    assert run.data.metrics["r2_mean"] == pytest.approx(ordered)
    assert run.data.tags["expt.split"] == "time by day"


# --- the folds themselves -----------------------------------------------------------------------------------------

def test_grouped_folds_never_split_a_group_and_the_column_is_not_a_feature(tables: Path) -> None:
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    sites = pd.read_csv(tables / "grouped.csv")["site"].to_numpy()
    for name, base in (("grouped.csv", StratifiedGroupKFold), ("grouped_reg.csv", GroupKFold)):
        prepared = prepare(compose(on(tables, name, "learner.cv.groups=site", "learner.cv.folds=4")))
        data = prepared.dataset
        assert "site" not in data.X.columns and "site" not in data.numeric + data.categorical
        folds = list(prepared.splitter.split(data.X, data.y))
        assert len(folds) == 4 == prepared.splitter.get_n_splits()
        for train_rows, test_rows in folds:
            assert not set(sites[train_rows]) & set(sites[test_rows])
        assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(len(sites)))
        expected = base(n_splits=4, shuffle=True, random_state=0).split(data.X, data.y, sites)
        assert [t.tolist() for _, t in folds] == [t.tolist() for _, t in expected]
        fitted = prepared.pipeline.fit(data.X, data.y)
        assert "site" not in fitted[:-1].get_feature_names_out()


def test_time_folds_train_on_the_past_only_with_the_gap_and_days_kept_whole(tables: Path) -> None:
    days = pd.to_datetime(pd.read_csv(tables / "series.csv")["day"]).to_numpy()
    prepared = prepare(compose(on(tables, "series.csv", "learner.cv.kind=time", "learner.cv.order=day",
                                  "learner.cv.gap=3", "learner.cv.folds=4")))
    data = prepared.dataset
    assert "day" not in data.X.columns
    folds = list(prepared.splitter.split(data.X, data.y))
    assert len(folds) == 4
    unique = np.unique(days)
    for train_rows, test_rows in folds:
        last, first = days[train_rows].max(), days[test_rows].min()
        assert np.searchsorted(unique, first) - np.searchsorted(unique, last) == 4  # three days left out between
        assert not set(days[train_rows]) & set(days[test_rows])
    assert [len(t) for t, _ in folds] == sorted(len(t) for t, _ in folds)  # expanding windows
    again = list(prepare(compose(on(tables, "series.csv", "learner.cv.kind=time", "learner.cv.order=day",
                                    "learner.cv.gap=3", "learner.cv.folds=4", "seed=5"))).splitter.split(data.X))
    assert [t.tolist() for _, t in again] == [t.tolist() for _, t in folds]  # never shuffled: no seed in it


def test_a_numeric_order_column_may_stay_a_feature_with_the_same_folds(tables: Path) -> None:
    time = ["learner.cv.kind=time", "learner.cv.order=day", "learner.cv.folds=3"]
    out = prepare(compose(on(tables, "numbered_series.csv", *time)))
    kept = prepare(compose(on(tables, "numbered_series.csv", *time, "learner.cv.order_feature=true")))
    assert "day" not in out.dataset.X.columns and "day" in kept.dataset.numeric
    folds = [[t.tolist() for _, t in p.splitter.split(p.dataset.X, p.dataset.y)] for p in (out, kept)]
    assert folds[0] == folds[1]
    assert kept.folds.digest(folds[1]) == out.folds.digest(folds[0])  # the same folds: paired in a grid


def test_the_default_shuffle_and_stratify_adapt_and_shuffled_folds_are_what_they_were(tables: Path) -> None:
    from sklearn.model_selection import StratifiedKFold

    from expt.core.folds import Folds

    time = prepare(compose(on(tables, "series.csv", "learner.cv.kind=time", "learner.cv.order=day")))
    assert time.folds.split == "time" and time.values["learner"]["cv"]["shuffle"] is True
    fixed = prepare(compose(on(tables, "grouped.csv", "learner.cv.groups=site", "learner.cv.shuffle=false")))
    assert fixed.splitter.shuffle is False
    plain = prepare(compose(on(tables, "grouped.csv")))
    assert isinstance(plain.splitter, StratifiedKFold) and plain.folds.split == "shuffled"
    tests = [[1, 2], [0, 3]]
    import hashlib

    assert Folds("classification", 4).digest(tests) == hashlib.sha256(json.dumps(tests).encode()).hexdigest()[:16]
    assert Folds("classification", 4, split="grouped", column="site").digest(tests) != Folds(
        "classification", 4).digest(tests)


@pytest.mark.parametrize(("name", "overrides", "error", "message"), [
    ("grouped.csv", ["learner.cv.groups=clinic"], DataError, "learner.cv.groups=clinic is not a column"),
    ("grouped.csv", ["learner.cv.groups=y"], ConfigError, "is the target"),
    ("grouped.csv", ["learner.cv.groups=site", "data.drop=[site]"], ConfigError, "take it out of data.drop"),
    ("one_group.csv", ["learner.cv.groups=site"], DataError, "has a single group ('one')"),
    ("three_groups.csv", ["learner.cv.groups=site"], DataError, "has 3 groups, fewer than learner.cv.folds=5; "
                                                                "lower learner.cv.folds to 3"),
    ("holes.csv", ["learner.cv.groups=site"], DataError, "missing in 2 rows"),
    ("grouped.csv", ["learner.cv.groups=site", "learner.cv.repeats=2", "learner.cv.shuffle=false"], ConfigError,
     "needs learner.cv.shuffle=true"),
    ("series.csv", ["learner.cv.kind=time"], ConfigError, "set learner.cv.order=COLUMN"),
    ("series.csv", ["learner.cv.kind=time", "learner.cv.order=when"], DataError, "learner.cv.order=when is not a"),
    ("series_holes.csv", ["learner.cv.kind=time", "learner.cv.order=day"], DataError, "missing in 1 rows"),
    ("series_text.csv", ["learner.cv.kind=time", "learner.cv.order=day"], DataError, "neither numbers nor dates"),
    ("short_series.csv", ["learner.cv.kind=time", "learner.cv.order=day"], DataError,
     "has 4 distinct times, too few for learner.cv.folds=5"),
    ("series.csv", ["learner.cv.kind=time", "learner.cv.order=day", "learner.cv.stratify=true"], ConfigError,
     "cannot be stratified"),
    ("series.csv", ["learner.cv.kind=time", "learner.cv.order=day", "learner.cv.repeats=3"], ConfigError,
     "set learner.cv.repeats=1"),
    ("series.csv", ["learner.cv.kind=time", "learner.cv.order=day", "learner.cv.groups=x1"], ConfigError,
     "do not combine"),
    ("series.csv", ["learner.cv.order=day"], ConfigError, "set learner.cv.kind=time, or learner.cv.order=null"),
    ("series.csv", ["learner.cv.gap=2"], ConfigError, "gap applies to time-ordered folds only"),
    ("series.csv", ["learner.cv.order_feature=true"], ConfigError, "order_feature applies to time-ordered folds"),
    ("series.csv", ["learner.cv.kind=time", "learner.cv.order=day", "learner.cv.order_feature=true"], ConfigError,
     "keeps day a feature, but it is not a number"),
    ("series.csv", ["learner.cv.kind=rolling"], ConfigError, "learner.cv.kind must be one of kfold | time"),
    ("grouped_reg.csv", ["learner.cv.groups=site", "learner.cv.stratify=true"], ConfigError,
     "stratify=true needs a classification target"),
])
def test_every_refusal_names_its_fix(tables: Path, name: str, overrides: list[str], error: type,
                                     message: str) -> None:
    with pytest.raises(error) as caught:
        prepare(compose(on(tables, name, *overrides)))
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "overrides", "message"), [
    ("one_group.csv", ["learner.cv.groups=site"], "single group"),
    ("series_holes.csv", ["learner.cv.kind=time", "learner.cv.order=day"], "missing in 1 rows"),
])
def test_the_cli_refuses_in_one_line_and_writes_nothing(tables: Path, tmp_path: Path, name: str,
                                                        overrides: list[str], message: str) -> None:
    proc = subprocess.run([EXPT, "train", *on(tables, name, *overrides), "tracking.uri=sqlite:///mlruns.db"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "records.jsonl").exists()
    assert not (tmp_path / "mlruns.db").exists() or all_runs("sqlite:///mlruns.db") == []


# --- sweep, grid, rerun, records ----------------------------------------------------------------------------------

SWEEP = ("search.outer_folds=2", "search.inner_folds=2", "search.n_trials=2", *FAST)


def test_a_grouped_sweep_groups_outer_folds_and_inner_folds_within_each_outer_training_part(
        tables: Path, store: str, tmp_path: Path) -> None:
    from expt.meta.recommend import protocol_key, protocol_of
    from expt.sweep.plan import make_plan
    from expt.sweep.runner import SweepOptions, run_sweep

    overrides = [*on(tables, "grouped.csv", "learner.cv.groups=site"), *SWEEP, f"tracking.uri={store}",
                 f"tracking.records={tmp_path / 'records.jsonl'}",
                 "learner.cv.folds=50"]  # more than its 40 groups: a sweep's folds are search.*_folds
    plan = make_plan(compose(overrides))
    sites = pd.read_csv(tables / "grouped.csv")["site"].to_numpy()
    for unit in plan.units:
        if unit.test is not None:
            assert not set(sites[unit.train]) & set(sites[unit.test])
        y = plan.prepared.dataset.y[unit.train]
        inner = list(plan.inner_splitter(unit).split(np.empty((len(unit.train), 0)), y))
        assert len(inner) == 2
        for train_rows, test_rows in inner:
            assert not set(sites[unit.train][train_rows]) & set(sites[unit.train][test_rows])
    assert plan.manifest["split"] == "grouped by site"
    run_sweep(compose(overrides), SweepOptions(sweep_id="g1", storage=str(tmp_path / "optuna.journal")))
    (run,) = [r for r in all_runs(store) if r.data.tags.get("expt.run_type") == "sweep"]
    assert run.data.tags["expt.split"] == "grouped by site"
    assert run.data.tags["expt.folds_hash"] == plan.manifest["hash"]
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert records and all(r["protocol"]["split"] == "grouped" and r["protocol"]["split_by"] == "site"
                           for r in records)
    assert protocol_key(protocol_of(records[0])) == "inner 2, grouped by site"
    check_rerun(store, run.info.run_id, "grouped by site")


def test_a_time_sweep_keeps_every_fold_in_time_order(tables: Path, store: str, tmp_path: Path) -> None:
    from expt.sweep.plan import make_plan
    from expt.sweep.runner import SweepOptions, run_sweep

    overrides = [*on(tables, "series.csv", "learner.cv.kind=time", "learner.cv.order=day", "learner.cv.gap=1"),
                 *SWEEP, f"tracking.uri={store}"]
    plan = make_plan(compose(overrides))
    days = pd.to_datetime(pd.read_csv(tables / "series.csv")["day"]).to_numpy()
    for unit in plan.units:
        if unit.test is not None:
            assert days[unit.train].max() < days[unit.test].min()
        for train_rows, test_rows in plan.inner_splitter(unit).split(np.empty((len(unit.train), 0))):
            inner_days = days[unit.train]
            assert inner_days[train_rows].max() < inner_days[test_rows].min()
            assert set(inner_days[train_rows]) <= set(days[unit.train])
    run_sweep(compose(overrides), SweepOptions(sweep_id="t1", storage=str(tmp_path / "optuna.journal")))
    (run,) = [r for r in all_runs(store) if r.data.tags.get("expt.run_type") == "sweep"]
    assert run.data.tags["expt.split"] == "time by day (gap 1)" and run.info.status == "FINISHED"
    check_rerun(store, run.info.run_id, "time by day (gap 1)")


@pytest.mark.parametrize(("overrides", "message"), [
    (["search.outer_folds=4"], "has 3 groups, fewer than search.outer_folds=4; lower search.outer_folds to 3"),
    (["search.outer_folds=2"], "has 1 group in outer fold 0's training part, fewer than search.inner_folds=2; raise "
                               "search.outer_folds"),
    (["search.outer_folds=3"], None),  # two groups in each outer training part, two inner folds: fine
])
def test_a_sweep_checks_its_own_folds_not_learner_cv_folds(tables: Path, overrides: list[str],
                                                            message: str | None) -> None:
    from expt.sweep.plan import make_plan

    composed = compose([*on(tables, "three_groups.csv", "learner.cv.groups=site"), *overrides,
                        "search.inner_folds=2", "search.n_trials=2"])  # learner.cv.folds=5 > 3 groups: not a sweep's
    if message is None:
        assert len(make_plan(composed).units) == 4
        return
    with pytest.raises(DataError) as caught:
        make_plan(composed)
    assert message in str(caught.value)


def test_records_keep_grouped_and_shuffled_estimates_apart(tables: Path, store: str, tmp_path: Path) -> None:
    from expt.meta.recommend import build_table, protocol_key, protocol_of
    from expt.meta.records import RecordStore

    records = tmp_path / "records.jsonl"
    for extra in ([], ["learner.cv.groups=site"], ["learner.cv.groups=site", "model.estimator.n_neighbors=3"]):
        train(store, *on(tables, "grouped.csv", "learner.cv.folds=3", *extra), *FAST, f"tracking.records={records}")
    written = RecordStore(records).read()
    keys = [protocol_key(protocol_of(r)) for r in written]
    assert keys == ["cv 3x1", "cv 3x1, grouped by site", "cv 3x1, grouped by site"]
    assert "split" not in written[0]["protocol"] and written[1]["protocol"]["split"] == "grouped"
    assert written[1]["evaluation"] == "3-fold CV, grouped by site"
    assert protocol_of({"scores": [0.5, 0.6], "evaluation": "5-fold CV"})["split"] == "shuffled"  # an old record
    table = build_table(written, "classification", metric="accuracy")
    assert sorted(d["protocol"] for d in table.datasets) == ["cv 3x1", "cv 3x1, grouped by site"]


def test_a_grid_pairs_cells_on_grouped_folds_and_refuses_to_pair_them_with_shuffled_ones(
        tables: Path, store: str) -> None:
    from expt.grid.plan import plan_grid
    from expt.grid.runner import run_grid

    base = [*on(tables, "grouped.csv", "learner.cv.folds=3", model=None), *FAST, f"tracking.uri={store}"]
    with pytest.raises(UsageError, match="do not share their folds"):
        plan_grid("train", [*base, "model=knn", "learner.cv.groups=site,null"])
    plan = plan_grid("train", [*base, "model=knn,logistic_regression", "learner.cv.groups=site"])
    assert len({c.folds_hash for c in plan.runnable}) == 1
    outcome = run_grid(plan)
    (pair,) = outcome.comparison.pairs
    assert pair["paired_folds"] is True
    cells = [r for r in all_runs(store) if r.data.tags.get("expt.run_type") == "train"]
    assert {r.data.tags["expt.folds_hash"] for r in cells} == {plan.runnable[0].folds_hash}
    assert {r.data.tags["expt.split"] for r in cells} == {"grouped by site"}


def check_rerun(store: str, run_id: str, split: str) -> None:
    """``expt rerun --check`` passes, its folds compared: the same kind and the same fold manifest."""
    result = CliRunner().invoke(app, ["rerun", run_id, "--tracking-uri", store, "--check"], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    (folds,) = [line for line in lines if line.strip("│ ").startswith("folds ") and split in line]
    (hashed,) = [line for line in lines if "folds hash" in line]
    assert folds.rstrip(" │").endswith("same") and hashed.rstrip(" │").endswith("same"), result.output


def test_rerun_check_compares_the_folds_of_a_grouped_run(tables: Path, store: str) -> None:
    original = train(store, *on(tables, "grouped.csv", "learner.cv.groups=site", "learner.cv.folds=3"), *FAST)
    check_rerun(store, original.run_id, "grouped by site")
    client = MlflowClient(tracking_uri=store)
    reruns = [r for r in all_runs(store) if r.data.tags.get("expt.run_type") == "train"
              and r.info.run_id != original.run_id]
    assert client.get_run(reruns[0].info.run_id).data.tags["expt.split"] == "grouped by site"


@pytest.mark.slow
def test_expt_train_on_the_command_line_reports_the_grouped_figure(tables: Path, tmp_path: Path) -> None:
    grouped = cv_score(on(tables, "grouped.csv", "learner.cv.groups=site"))
    proc = subprocess.run([EXPT, "train", *on(tables, "grouped.csv", "learner.cv.groups=site"), *FAST,
                           "tracking.uri=sqlite:///mlruns.db"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    (run,) = [r for r in all_runs("sqlite:///mlruns.db") if r.data.tags.get("expt.run_type") == "train"]
    assert run.data.metrics["accuracy_mean"] == pytest.approx(grouped)
    assert f"{grouped:.4f}" in proc.stdout
