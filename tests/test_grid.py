"""Grids (`expt train -m`): Hydra's sweep grammar, cells as ordinary runs under one grid run, paired folds, skips,
bad grids refused before anything is written, resume after SIGKILL, and the statistics on hand-computed examples."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import EXPT, all_runs
from typer.testing import CliRunner

from expt.cli import app
from expt.core.errors import UsageError
from expt.grid.plan import plan_grid
from expt.grid.report import cd_text
from expt.grid.spec import expand
from expt.grid.stats import CellScores, compare, corrected_t_test, nemenyi_cd

FAST = ("learner=quick", "tracking.log_model=false")  # 3 folds, no refit: the grid machinery is what is tested


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


# --- the grammar: Hydra's parser and sweep expansion -------------------------------------------------------------

def test_expand_uses_hydras_sweep_grammar() -> None:
    cells = expand(["data=wine,iris", "model.estimator.C=range(1,3)", "learner=quick", "seed=choice(0)"])
    assert [c.key for c in cells] == ["data=wine model.estimator.C=1 seed=0", "data=wine model.estimator.C=2 seed=0",
                                      "data=iris model.estimator.C=1 seed=0", "data=iris model.estimator.C=2 seed=0"]
    assert cells[1].overrides == ("data=wine", "model.estimator.C=2", "learner=quick", "seed=0")
    assert cells[1].column == (("model.estimator.C", "2"), ("seed", "0"))
    models = expand(["model=glob(*,exclude=[cnn,mlp,knn,catboost,lightgbm,xgboost])"])
    assert [c.key for c in models] == ["model=extra_trees", "model=hist_gradient_boosting",
                                       "model=logistic_regression", "model=random_forest", "model=ridge", "model=svm"]
    assert [c.key for c in expand(["+model.estimator.tol='1e-3',1e-4"])] == ["+model.estimator.tol='1e-3'",
                                                                           "+model.estimator.tol=0.0001"]


@pytest.mark.parametrize(("overrides", "expected"), [
    (["model=glob(zz*)"], "sweeps over no values"),
    (["learner.cv.folds=range(3,3)"], "sweeps over no values"),
    (["model.estimator.C=interval(0,1)"], "continuous interval"),
    (["model=svm,knn", "model=ridge"], "model is given twice"),
    (["data=wine,,iris"], "cannot parse override"),
])
def test_bad_sweeps_are_one_line_errors(overrides: list[str], expected: str) -> None:
    with pytest.raises(UsageError, match=expected):
        expand(overrides)


# --- planning: skips and bad grids, before anything is written ---------------------------------------------------

def test_a_cell_that_cannot_run_is_skipped_with_its_reason(store: str) -> None:
    plan = plan_grid("train", ["data=iris,diabetes", "model=logistic_regression,knn", *FAST, f"tracking.uri={store}"])
    assert [c.cell.key for c in plan.skipped] == ["data=diabetes model=logistic_regression"]
    assert plan.skipped[0].skip == "logistic_regression handles classification only; diabetes is a regression task"
    assert len(plan.runnable) == 3 and plan.rows == ["iris", "diabetes"]
    assert plan.columns == ["logistic_regression", "knn"]


@pytest.mark.parametrize(("args", "expected"), [
    (["data=iris,wine", "model=svm,svn"], "grid cell data=iris model=svn: unknown model 'svn'; did you mean 'svm'?"),
    (["model=svm,knn", "learner.cv.foldz=3"], "grid cell model=svm: unknown config key 'learner.cv.foldz'"),
    (["model=glob(nothing*)"], "sweeps over no values"),
    (["data=iris,diabetes", "model=logistic_regression"],
     "mixes classification (iris) and regression (diabetes) datasets, and no model in it runs on all of them"),
    (["data=diabetes", "model=logistic_regression"], "no cell of this grid can run"),
    (["model=svm,knn", "seed=0,1"], "do not share their folds on iris"),
    (["model=svm,knn", "learner.metric.classification=accuracy,f1_macro"], "do not share their metric on iris"),
    (["model=svm,knn", "tracking.experiment=a,b"], "different tracking stores or experiments"),
    (["model=svm", "--resume", "x1"], "drop the overrides"),
    (["--workers", "2", "model=svm"], "add -m"),
])
def test_bad_grids_fail_in_one_line_before_any_run(store: str, tmp_path: Path, args: list[str], expected: str) -> None:
    multirun = [] if "--workers" in args else ["-m"]
    result = run_cli("train", *multirun, *args, f"tracking.uri={store}")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert all_runs(store) == []
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "records.jsonl").exists()


def test_sweep_m_refuses_options_that_name_one_sweep(store: str) -> None:
    result = run_cli("sweep", "-m", "model=svm,knn", "--sweep-id", "s1", f"tracking.uri={store}")
    assert result.exit_code == 2 and "--sweep-id names one sweep" in result.stderr
    assert all_runs(store) == []


def test_a_sweep_without_m_says_to_add_it(store: str) -> None:
    result = run_cli("train", "data=wine,iris", "model=svm", f"tracking.uri={store}")
    assert result.exit_code == 2
    assert "'data=wine,iris' lists several values; add -m" in result.stderr
    assert "expt train -m data=wine,iris model=svm" in result.stderr


def test_cfg_lists_the_cells_and_runs_nothing(store: str, tmp_path: Path) -> None:
    result = run_cli("train", "-m", "data=iris,diabetes", "model=logistic_regression,knn", "--cfg",
                     f"tracking.uri={store}")
    assert result.exit_code == 0, result.output
    assert "4 cells, 2 datasets x 2 models, 1 skipped" in " ".join(result.stdout.split())
    assert "skipped" in result.stdout and "data=iris" in result.stdout
    assert all_runs(store) == [] and not (tmp_path / "outputs").exists()


# --- a grid end to end on a real store ---------------------------------------------------------------------------

def test_a_grid_end_to_end(store: str, tmp_path: Path, writer_mode: str) -> None:
    from mlflow import MlflowClient

    from expt.grid.runner import compare_grid, run_grid

    plan = plan_grid("train", ["data=iris,wine,diabetes", "model=logistic_regression,knn", *FAST,
                               f"tracking.uri={store}", f"tracking.records={tmp_path / 'records.jsonl'}"])
    outcome = run_grid(plan)
    runs = all_runs(store)
    grid = [r for r in runs if r.data.tags.get("expt.run_type") == "grid"]
    cells = [r for r in runs if r.data.tags.get("expt.run_type") == "train"]
    folds = [r for r in runs if r.data.tags.get("expt.run_type") == "fold"]
    assert len(grid) == 1 and grid[0].info.status == "FINISHED" and grid[0].info.run_name == f"grid-{outcome.grid_id}"
    assert len(cells) == 5 and len(folds) == 15  # 6 cells, one skipped; 3 folds each
    assert {r.data.tags["mlflow.parentRunId"] for r in cells} == {grid[0].info.run_id}
    assert {r.data.tags["expt.grid_id"] for r in cells + folds + grid} == {outcome.grid_id}
    assert {r.info.status for r in runs} == {"FINISHED"}
    # paired by construction: one fold manifest per dataset, the one the splitter gives
    by_data: dict[str, set[str]] = {}
    for r in cells:
        by_data.setdefault(r.data.tags["expt.data"], set()).add(r.data.tags["expt.folds_hash"])
    assert all(len(hashes) == 1 for hashes in by_data.values()) and len(by_data) == 3
    planned = {c.dataset: c.folds_hash for c in plan.runnable}
    assert {d: next(iter(h)) for d, h in by_data.items()} == planned
    # the table shows exactly the cells' logged metrics
    out = outcome.comparison
    for r in cells:
        cell = out.cells[(r.data.tags["expt.data"], r.data.tags["expt.model"])]
        metric = cell.metric
        assert cell.mean == r.data.metrics[f"{metric}_mean"] and cell.std == r.data.metrics[f"{metric}_std"]
        assert cell.run_id == r.info.run_id
    skipped = out.cells[("diabetes", "logistic_regression")]
    assert skipped.status == "skipped" and "regression task" in skipped.reason
    assert out.used_rows == ["iris", "wine"] and out.used_columns == ["logistic_regression", "knn"]
    assert out.metric == {"iris": "accuracy", "wine": "accuracy", "diabetes": "r2"}
    client = MlflowClient(tracking_uri=store)
    grid_id = grid[0].info.run_id
    assert {a.path for a in client.list_artifacts(grid_id)} >= {"grid.json", "results.csv", "results.md", "folds.csv",
                                                                "pairs.csv", "plots"}
    assert {a.path for a in client.list_artifacts(grid_id, "plots")} == {"plots/cd_diagram.png",
                                                                         "plots/fold_scores.png"}
    # every cell leaves its record, as a train run does
    for r in cells:  # drawn by the grid's writer process (side) or by the grid process (inline)
        assert {a.path for a in client.list_artifacts(r.info.run_id)} >= {"predictions.parquet", "plots",
                                                                          "records.jsonl", "config.yaml"}
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert sorted(r["source"]["run_id"] for r in records) == sorted(r.info.run_id for r in cells)
    again, spec, _ = compare_grid(client, outcome.grid_id)
    assert again.cells == out.cells and again.average_rank == out.average_rank and spec["kind"] == "train"


def test_compare_grid_from_the_cli(store: str) -> None:
    from expt.grid.runner import run_grid

    outcome = run_grid(plan_grid("train", ["data=iris", "model=logistic_regression,knn", *FAST,
                                           f"tracking.uri={store}"]))
    result = run_cli("compare", "--grid", outcome.grid_id, "--tracking-uri", store, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["grid_id"] == outcome.grid_id and len(data["cells"]) == 2 and len(data["pairs"]) == 1
    table = run_cli("compare", "--grid", outcome.grid_id, "--tracking-uri", store)
    assert table.exit_code == 0 and "corrected t" in table.stdout
    missing = run_cli("compare", "--grid", "nope", "--tracking-uri", store)
    assert missing.exit_code == 2 and "no grid 'nope'" in missing.stderr


def test_resume_kills_what_a_sigkill_left_running_under_a_cell_folds_included(store: str) -> None:
    """A SIGKILL can land between a fold run's start and its end: --resume ends that fold KILLED with its cell,
    runs the cell again, and leaves nothing RUNNING (the state the kill leaves is made by hand, exactly)."""
    from mlflow import MlflowClient

    from expt.grid.runner import run_grid

    outcome = run_grid(plan_grid("train", ["data=iris", "model=logistic_regression,knn", *FAST,
                                           f"tracking.uri={store}"]))
    client = MlflowClient(tracking_uri=store)
    runs = all_runs(store)
    grid = next(r for r in runs if r.data.tags.get("expt.run_type") == "grid")
    cell = next(r for r in runs if r.data.tags.get("expt.run_type") == "train" and r.data.tags["expt.model"] == "knn")
    fold = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == cell.info.run_id)
    for run_id, status in ((cell.info.run_id, "RUNNING"), (fold.info.run_id, "RUNNING"), (grid.info.run_id, "KILLED")):
        client.update_run(run_id, status=status)
    resumed = run_cli("train", "-m", "--resume", outcome.grid_id)
    assert resumed.exit_code == 0, resumed.output
    after = {r.info.run_id: r for r in all_runs(store)}
    assert after[cell.info.run_id].info.status == "KILLED" and after[fold.info.run_id].info.status == "KILLED"
    assert "RUNNING" not in {r.info.status for r in after.values()}
    knn = [r for r in after.values() if r.data.tags.get("expt.run_type") == "train"
           and r.data.tags["expt.model"] == "knn" and r.info.status == "FINISHED"]
    assert len(knn) == 1 and knn[0].info.run_id != cell.info.run_id  # the killed cell ran again, once


@pytest.mark.slow
def test_resume_after_sigkill_of_a_grid_with_two_workers(store: str, tmp_path: Path) -> None:
    """No cell runs twice and none is lost: the killed cells' runs end KILLED and run again."""
    args = ["-m", "data=iris,wine,breast_cancer", "model=logistic_regression,knn,ridge", *FAST, f"tracking.uri={store}"]
    proc = subprocess.Popen([EXPT, "train", *args, "--workers", "2"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    finished = []
    while time.monotonic() < deadline and not finished and proc.poll() is None:
        time.sleep(0.3)
        runs = all_runs(store)
        finished = [r for r in runs if r.data.tags.get("expt.run_type") == "train" and r.info.status == "FINISHED"]
    assert finished, "no cell finished in time"
    workers = _spawned_children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert len(workers) == 2
    left = _still_running(workers, within=15.0)  # the workers die with the grid process (parent-death signal)
    assert not left, left
    grid_id = next((tmp_path / "outputs" / "grids").iterdir()).name
    before = {r.info.run_id: r.info.status for r in all_runs(store) if r.data.tags.get("expt.run_type") == "train"}
    assert "FINISHED" in before.values() and list(before.values()).count("FINISHED") < 9, before
    resumed = subprocess.run([EXPT, "train", "-m", "--resume", grid_id], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    runs = all_runs(store)
    cells = [r for r in runs if r.data.tags.get("expt.run_type") == "train"]
    done = [r.data.tags["expt.grid.cell"] for r in cells if r.info.status == "FINISHED"]
    assert sorted(done) == sorted(set(done)) and len(done) == 9, done  # every cell once
    assert all(before[r.info.run_id] == "FINISHED" for r in cells if r.info.run_id in before
               and r.info.status == "FINISHED")  # finished cells were not run again
    assert "RUNNING" not in {r.info.status for r in runs}
    assert {r.info.status for r in cells if r.info.status != "FINISHED"} <= {"KILLED"}
    grid = [r for r in runs if r.data.tags.get("expt.run_type") == "grid"]
    assert len(grid) == 1 and grid[0].info.status == "FINISHED"
    assert "cells run" in resumed.stdout and "average rank" in resumed.stdout


def _spawned_children(pid: int) -> list[int]:
    """The multiprocessing workers a process started (not its resource tracker)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if b"multiprocessing.spawn" in _cmdline(int(p))]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _still_running(pids: list[int], within: float) -> list[int]:
    deadline = time.monotonic() + within
    while True:
        left = [p for p in pids if _cmdline(p)]  # a zombie has an empty command line: it is dead
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.3)


@pytest.mark.slow
def test_a_grid_of_sweeps(store: str) -> None:
    from expt.grid.runner import run_grid

    plan = plan_grid("sweep", ["data=iris", "model=logistic_regression,knn", "search.n_trials=2",
                               "search.outer_folds=2", "search.inner_folds=2", "tracking.log_model=false",
                               f"tracking.uri={store}"])
    outcome = run_grid(plan)
    runs = all_runs(store)
    sweeps = [r for r in runs if r.data.tags.get("expt.run_type") == "sweep"]
    assert len(sweeps) == 2 and {r.info.status for r in sweeps} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in sweeps} == {outcome.run_id}
    assert len({r.data.tags["expt.folds_hash"] for r in sweeps}) == 1
    for r in sweeps:
        cell = outcome.comparison.cells[("iris", r.data.tags["expt.model"])]
        outer = sorted((x for x in runs if x.data.tags.get("mlflow.parentRunId") == r.info.run_id
                        and x.data.tags.get("expt.run_type") == "outer_fold"),
                       key=lambda x: int(x.data.tags["expt.outer_fold"]))
        assert cell.scores == [x.data.metrics["outer_accuracy"] for x in outer]
        assert math.isclose(cell.mean, r.data.metrics["outer_accuracy_mean"], rel_tol=0, abs_tol=1e-12)


# --- the statistics, on examples computed by hand ----------------------------------------------------------------

def _cells(table: dict[str, dict[str, float]]) -> list[CellScores]:
    return [CellScores(f"{d} {m}", d, m, "ok", "accuracy", [score], folds=5, folds_hash=d)
            for d, row in table.items() for m, score in row.items()]


def test_ranks_friedman_and_nemenyi_by_hand() -> None:
    """Ranks: d1 A1 B2 C3, d2 A2 B1 C3, d3 A1 B3 C2, d4 A1 B2 C3 -> average 1.25, 2.0, 2.75.
    Friedman (Demsar eq. 1): 12N/(k(k+1)) * (sum R^2 - k(k+1)^2/4) = 4 * (1.5625 + 4 + 7.5625 - 12) = 4.5 with
    k-1 = 2 degrees of freedom, so p = exp(-4.5/2). CD = q_0.05(k=3) * sqrt(k(k+1)/6N) = 2.343 * sqrt(0.5)."""
    out = compare(_cells({"d1": {"A": .9, "B": .8, "C": .7}, "d2": {"A": .85, "B": .9, "C": .6},
                          "d3": {"A": .7, "B": .6, "C": .65}, "d4": {"A": .95, "B": .9, "C": .8}}))
    assert out.average_rank == {"A": 1.25, "B": 2.0, "C": 2.75}
    assert out.best == {"d1": ["A"], "d2": ["B"], "d3": ["A"], "d4": ["A"]}
    assert math.isclose(out.friedman["statistic"], 4.5) and math.isclose(out.friedman["pvalue"], math.exp(-2.25))
    assert out.nemenyi is not None
    assert math.isclose(out.nemenyi["q_alpha"], 2.343, abs_tol=1e-3)  # Demsar (2006), table 5(a): 2.343
    assert math.isclose(out.nemenyi["cd"], 2.3437 * math.sqrt(0.5), abs_tol=1e-4)
    p = out.nemenyi["pvalues"]
    assert p[("A", "C")] > 0.05  # |1.25 - 2.75| = 1.5 < CD = 1.657: not told apart
    assert p[("A", "C")] < p[("A", "B")] < 1.0 and p[("A", "B")] == p[("B", "C")]  # equal rank gaps, equal p
    assert math.isclose(nemenyi_cd(4, 14)[0], 2.569 * math.sqrt(20 / 84), abs_tol=1e-3)  # Demsar's own example
    diagram = cd_text(out)
    assert diagram[-2].endswith("CD = 1.657") and diagram[-1].endswith("not told apart: A, B, C")


def test_the_corrected_resampled_t_test_by_hand() -> None:
    """d = [0.02, 0.04, 0.00, 0.02, 0.02]: mean 0.02, sample variance 0.0002; 5-fold CV, so n_test/n_train = 1/4:
    t = 0.02 / sqrt((1/5 + 1/4) * 0.0002) = 2.1082 on 4 degrees of freedom, p = 0.1027 (the naive paired t-test
    would say t = 3.162, p = 0.034)."""
    a = [0.90, 0.92, 0.88, 0.90, 0.91]
    b = [0.88, 0.88, 0.88, 0.88, 0.89]
    t, p = corrected_t_test(a, b, folds=5)
    assert math.isclose(t, 0.02 / math.sqrt(0.45 * 0.0002), rel_tol=1e-9) and math.isclose(t, 2.1082, abs_tol=1e-4)
    assert math.isclose(p, 0.1027, abs_tol=1e-4)
    assert corrected_t_test(a, a, folds=5) == (0.0, 1.0)
    cells = [CellScores("x", "d", "A", "ok", "accuracy", a, folds=5, folds_hash="h"),
             CellScores("y", "d", "B", "ok", "accuracy", b, folds=5, folds_hash="h")]
    out = compare(cells)
    assert out.best == {"d": ["A"]} and math.isclose(out.p_vs_best[("d", "B")], p)
    assert out.friedman is None and out.nemenyi is None  # one dataset: nothing across datasets
    cells[1].folds_hash = "other folds"
    assert math.isnan(compare(cells).p_vs_best[("d", "B")])  # folds that differ do not pair up


def test_two_models_over_datasets_use_wilcoxon_and_a_missing_cell_leaves_the_block() -> None:
    table = {f"d{i}": {"A": 0.8, "B": 0.7 + i / 100} for i in range(6)}  # A ahead on all 6, by distinct margins
    out = compare(_cells(table))
    assert out.friedman is None and math.isclose(out.wilcoxon["pvalue"], 2 / 2 ** 6)  # all 6 favour A: exact p
    cells = _cells({"d1": {"A": .9, "B": .8, "C": .7}, "d2": {"A": .8, "B": .9, "C": .7}})
    cells.append(CellScores("d3 A", "d3", "A", "skipped", reason="A handles classification only"))
    cells += [CellScores("d3 B", "d3", "B", "ok", "r2", [0.5], 5), CellScores("d3 C", "d3", "C", "ok", "r2", [0.6], 5)]
    out = compare(cells)
    # dropping A keeps 3 x 2 cells, dropping d3 keeps 2 x 3: on a tie the datasets stay
    assert out.used_rows == ["d1", "d2", "d3"] and out.used_columns == ["B", "C"]
    assert "left out: A" in out.notes[0]
