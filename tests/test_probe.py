"""The probe (`expt recommend DATASET --probe K`): its candidates are ordinary train runs under one probe run, their
records appended; it prints the ranking, writes the winner's config (which `expt train conf=` runs) and a sweep
command that warm-starts from it (which runs); it resumes after SIGKILL without running a candidate twice, stops at
--budget-seconds, and refuses bad input in one line before anything is written."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import EXPT, all_runs
from typer.testing import CliRunner

from expt.cli import app

FAST = ("learner.cv.folds=3", "tracking.log_model=false", "tracking.plots=false")


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def _dataset(tmp_path: Path, name: str = "iris") -> str:
    (tmp_path / "data.yaml").write_text(f"id: {name}\n")
    return "data.yaml"


def _by_type(runs: list, kind: str) -> list:
    return [r for r in runs if r.data.tags.get("expt.run_type") == kind]


def _printed(stdout: str, label: str) -> list[str]:
    """A command the probe printed (``train it:`` / ``sweep it:``), as arguments after ``expt``."""
    line = next(x for x in stdout.splitlines() if x.strip().startswith(label))
    args = shlex.split(line.split(label, 1)[1])
    assert args[0] == "expt"
    return args[1:]


def test_a_probe_end_to_end(store: str, tmp_path: Path) -> None:
    result = run_cli("recommend", _dataset(tmp_path), "--probe", "2", "--family", "linear", *FAST,
                     f"tracking.uri={store}")
    assert result.exit_code == 0, result.output
    runs = all_runs(store)
    probe, cells = _by_type(runs, "probe"), _by_type(runs, "train")
    assert len(probe) == 1 and probe[0].info.status == "FINISHED"
    assert len(cells) == 2 and len(_by_type(runs, "fold")) == 6
    assert {r.data.tags["mlflow.parentRunId"] for r in cells} == {probe[0].info.run_id}
    assert sorted(r.data.tags["expt.grid.cell"] for r in cells) == ["candidate=1", "candidate=2"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    records = [json.loads(x) for x in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert sorted(r["source"]["run_id"] for r in records) == sorted(r.info.run_id for r in cells)
    out = " ".join(result.stdout.split())
    assert "2 of 2 candidates" in out and "CV accuracy" in out and "★" in out
    assert "optimistic: it is the best of 2" in out and "expt sweep" in out
    # resuming a finished probe runs nothing and gives the same ranking, as JSON
    shown = run_cli("recommend", "--resume", probe[0].data.tags["expt.probe_id"], "--json")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["ran"] == 0 and len(_by_type(all_runs(store), "train")) == 2
    scores = [c["score"] for c in data["ranking"]]
    assert scores == sorted(scores, reverse=True) and {c["run_id"] for c in data["ranking"]} == {
        r.info.run_id for r in cells}
    # the winner's config, trained as printed: the same folds, the same score
    train = _printed(result.stdout, "train it:")
    best = Path(train[1].removeprefix("conf="))
    assert best.name == "1.yaml" and "rank 1 of 2" in best.read_text() and data["written"][0] == str(best)
    again = run_cli(*train)
    assert again.exit_code == 0, again.output
    rerun = [r for r in _by_type(all_runs(store), "train") if r.info.run_id not in {c.info.run_id for c in cells}]
    assert len(rerun) == 1 and rerun[0].info.status == "FINISHED"
    assert rerun[0].data.metrics["accuracy_mean"] == pytest.approx(scores[0])


def test_budget_seconds_stops_before_the_next_candidate(store: str, tmp_path: Path) -> None:
    result = run_cli("recommend", _dataset(tmp_path), "--probe", "3", "--budget-seconds", "0", "--family", "linear",
                     "--json", *FAST, f"tracking.uri={store}")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["ranking"]) == 1 and data["not_started"] == 2 and data["next_pick"]
    runs = all_runs(store)
    assert len(_by_type(runs, "train")) == 1 and {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_the_printed_sweep_command_warm_starts_from_the_winner(store: str, tmp_path: Path) -> None:
    result = run_cli("recommend", _dataset(tmp_path), "--probe", "2", "--family", "linear", *FAST,
                     f"tracking.uri={store}")
    assert result.exit_code == 0, result.output
    sweep = _printed(result.stdout, "sweep it:")
    assert "--warm-start" in sweep
    done = run_cli(*sweep, "search.n_trials=2", "search.outer_folds=2", "search.inner_folds=2")
    assert done.exit_code == 0, done.output
    assert "seed the final search only" in done.stderr  # chosen on this data: the outer folds stay unbiased
    import yaml

    best = yaml.safe_load(Path(sweep[1].removeprefix("conf=")).read_text())["model"]["estimator"]
    runs = all_runs(store)
    final = next(r for r in runs if r.data.tags.get("expt.run_type") == "final")
    first = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == final.info.run_id
                 and r.data.tags.get("expt.trial_number") == "0")
    assert float(first.data.params["model.estimator.C"]) == pytest.approx(best["C"])


@pytest.mark.slow
def test_resume_after_sigkill_runs_each_candidate_once(store: str, tmp_path: Path) -> None:
    """Killed while a candidate runs: --resume ends its run KILLED, runs it again, then picks on; every candidate
    has exactly one FINISHED run, none that finished before the kill ran again, nothing is left RUNNING."""
    args = [EXPT, "recommend", _dataset(tmp_path, "breast_cancer"), "--probe", "3", "--family", "random_forest",
            *FAST, f"tracking.uri={store}"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, finished = time.monotonic() + 240, []
    while time.monotonic() < deadline and not finished and proc.poll() is None:
        time.sleep(0.2)
        finished = [r for r in _by_type(all_runs(store), "train") if r.info.status == "FINISHED"]
    assert finished, "no candidate finished in time"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    before = {r.info.run_id: r.info.status for r in _by_type(all_runs(store), "train")}
    assert list(before.values()).count("FINISHED") < 3, before
    probe_id = next((tmp_path / "outputs" / "probes").iterdir()).name
    resumed = subprocess.run([EXPT, "recommend", "--resume", probe_id], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    runs = all_runs(store)
    cells = _by_type(runs, "train")
    done = sorted(r.data.tags["expt.grid.cell"] for r in cells if r.info.status == "FINISHED")
    assert done == ["candidate=1", "candidate=2", "candidate=3"]
    assert all(before[r.info.run_id] == "FINISHED" for r in cells if r.info.run_id in before
               and r.info.status == "FINISHED")  # finished candidates were not run again
    assert {r.info.status for r in cells} <= {"FINISHED", "KILLED"} and "RUNNING" not in {r.info.status for r in runs}
    probe = _by_type(runs, "probe")
    assert len(probe) == 1 and probe[0].info.status == "FINISHED"
    assert "3 of 3 candidates" in " ".join(resumed.stdout.split())
    keys = [json.loads(x)["model"]["config_key"] for x in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert len(set(keys)) == 3  # three different configurations, each measured


@pytest.mark.parametrize(("args", "expected"), [
    (["--probe", "2", "model=svm"], "the probe sets model itself"),
    (["--probe", "2", "learner.cv.folds=zero"], "learner.cv.folds"),
    (["--probe", "2", "--family", "nosuch"], "--family nosuch: no classification records"),
    (["--probe", "2", "--top", "3"], "--top (--probe K says how many) does not apply to a probe"),
    (["--budget-seconds", "5"], "add --probe K"),
])
def test_bad_input_is_one_line_and_writes_nothing(store: str, tmp_path: Path, args: list[str], expected: str) -> None:
    result = run_cli("recommend", _dataset(tmp_path), *args, f"tracking.uri={store}")
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output
    assert all_runs(store) == [] and not (tmp_path / "outputs").exists() and not (tmp_path / "records.jsonl").exists()


def test_resume_of_an_unknown_probe_names_the_fix() -> None:
    result = run_cli("recommend", "--resume", "nope")
    assert result.exit_code == 2 and "no probe 'nope' here" in result.stderr
