"""What a command's fixed cost rests on (issue 17): the sink started before the sweep exists, workers that
start only when they pay, the timeline marks, and the hand-written baselines of ``benchmarks/`` doing the
same work as expt. No timings are asserted here: ``benchmarks/bench_process.py`` prints them."""

from __future__ import annotations

import json
import multiprocessing
import sys
from pathlib import Path

import optuna
import pytest
from helpers import all_runs

from expt.core.config import compose
from expt.core.errors import DataError
from expt.core.timeline import TIMELINE_ENV, mark
from expt.sweep import runner
from expt.sweep.coordination import worker_id
from expt.sweep.runner import SweepOptions, run_sweep
from expt.sweep.storage import open_storage

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SMALL = ["search.outer_folds=2", "search.inner_folds=2", "search.n_trials=3"]


def _trials(storage: str, sweep_id: str, by_study: bool = False) -> list | dict:
    st = open_storage(storage)
    studies = {s.study_name: optuna.load_study(study_name=s.study_name, storage=st).trials
               for s in st.get_all_studies() if s.study_name.startswith(f"{sweep_id}/")}
    return studies if by_study else [t for ts in studies.values() for t in ts]


def test_timeline_marks_are_written_only_when_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "timeline.jsonl"
    monkeypatch.delenv(TIMELINE_ENV, raising=False)
    mark("nothing")
    assert not path.exists()
    monkeypatch.setenv(TIMELINE_ENV, str(path))
    mark("first")
    import colorsys  # noqa: F401 - a module the mark after it names as newly imported (if nothing had it yet)

    mark("second")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["first", "second"]
    assert all(r["pid"] == rows[0]["pid"] and r["t"] > 0 and r["cpu"] >= 0 for r in rows)
    assert "expt" not in rows[1]["new"]  # only what came since the previous mark


def test_a_sweep_refused_before_it_exists_leaves_no_sink_and_no_run(store: str, tmp_path: Path) -> None:
    composed = compose(["data=iris", "model=knn", "search.outer_folds=500", f"tracking.uri={store}"])
    with pytest.raises(DataError):
        run_sweep(composed, SweepOptions(sweep_id="refused", storage=str(tmp_path / "optuna.journal")))
    assert multiprocessing.active_children() == []  # the sink started first is gone with it
    assert all_runs(store) == []
    assert not (tmp_path / "optuna.journal").exists()


def test_a_second_worker_is_not_started_for_a_sweep_too_short_to_pay_for_it(store: str, tmp_path: Path) -> None:
    composed = compose(["data=breast_cancer", "model=logistic_regression", *SMALL, f"tracking.uri={store}"])
    storage = str(tmp_path / "optuna.journal")
    run_sweep(composed, SweepOptions(sweep_id="short", storage=storage, workers=2))
    ts = _trials(storage, "short")
    assert {t.user_attrs["expt.worker"] for t in ts} == {worker_id()}  # this process did it all
    assert sum(t.state.name == "COMPLETE" for t in ts) == 9
    runs = all_runs(store)
    assert {r.info.status for r in runs} == {"FINISHED"}
    sweep_run = next(r for r in runs if r.data.tags["expt.run_type"] == "sweep")
    assert sweep_run.data.tags["expt.sweep.workers"] == "2"  # what was asked for, as the drift report reads it


def test_workers_that_pay_share_the_trials_with_this_process(store: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "PAYOFF", 0.0)  # any budget left pays: the workers start after the first trial
    composed = compose(["data=breast_cancer", "model=knn", "search.outer_folds=2", "search.inner_folds=2",
                        "search.n_trials=6", f"tracking.uri={store}"])
    storage = str(tmp_path / "optuna.journal")
    run_sweep(composed, SweepOptions(sweep_id="paid", storage=storage, workers=2))
    for ts in _trials(storage, "paid", by_study=True).values():  # the budget met exactly, whoever ran them
        assert sum(t.state.name == "COMPLETE" for t in ts) == 6 and len({t.number for t in ts}) == len(ts)
    runs = all_runs(store)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sum(r.data.tags["expt.run_type"] == "trial" for r in runs) == 18


def _hand(script: str, *args: str) -> dict:
    import subprocess

    out = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                         check=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_the_hand_written_baselines_find_what_expt_finds(store: str, tmp_path: Path) -> None:
    from helpers import train

    result = train(store, "data=breast_cancer", "model=logistic_regression")
    assert _hand("hand_train.py", "logistic_regression")["folds"] == pytest.approx(result.cv.scores, abs=1e-12)
    assert _hand("plain_train.py", "logistic_regression")["folds"] == pytest.approx(result.cv.scores, abs=1e-12)
    composed = compose(["data=breast_cancer", "model=logistic_regression", *SMALL, f"tracking.uri={store}"])
    _, swept = run_sweep(composed, SweepOptions(sweep_id="same", storage=str(tmp_path / "optuna.journal")))
    hand = _hand("hand_sweep.py", "logistic_regression", "3", "2", "2")
    assert hand["outer"] == pytest.approx(swept["outer"], abs=1e-12)
    plain = _hand("plain_sweep.py", "logistic_regression", "3", "2", "2")  # numpy arrays, make_pipeline
    assert plain["outer"] == pytest.approx(swept["outer"], abs=1e-12)


def test_the_profile_counts_a_child_process_on_its_own_and_a_figure_drawn_in_an_import_as_an_import() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import timeline
    finally:
        sys.path.remove(str(BENCHMARKS))
    cmd, child = 'process 10:"python expt sweep"', 'process 11:"python -c spawn_main"'
    raw = "\n".join([
        f"{cmd};main (expt/cli/__init__.py:50);fit (sklearn/ensemble/_forest.py:300) 7",
        f"{cmd};{child};Sink.handle (expt/sweep/sink.py:98);create_run (sqlalchemy/orm/session.py:10) 3",
        f"{cmd};{child};_log_plots (expt/sweep/sink.py:140);savefig (matplotlib/figure.py:3300) 2",
        f"{cmd};{child};_find_and_load (<frozen importlib._bootstrap>:1176);<module> (matplotlib/pyplot.py:1) 4",
        f"{cmd};{child};permutation_drops (expt/core/evaluation.py:150);predict (sklearn/pipeline.py:746) 1",
        "a line that is not a sample",
    ])
    counts = timeline.tally(raw)
    assert counts[10] == {"fitting (scikit-learn, torch)": 7}
    assert counts[11] == {"MLflow store (SQLAlchemy)": 3, "figures (matplotlib, PIL)": 2, "imports": 4,
                          "permutation importance": 1}
