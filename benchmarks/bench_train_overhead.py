"""What ``expt train`` costs on top of the same experiment written by hand.

Workload: scikit-learn's bundled breast_cancer data, logistic regression
(max_iter=1000) after a StandardScaler, 5-fold stratified shuffled CV with seed 0,
accuracy.

* hand-written: the loop ``sklearn.model_selection.cross_validate`` runs (clone the
  pipeline per fold, fit, score), then a refit on all the data; nothing is logged.
* expt: the library calls ``expt train`` makes, in process: ``compose`` the config,
  ``prepare`` (validate, load the data, build the pipeline) and ``run_train``
  (the same CV plus an MLflow run tree in a SQLite store, and with
  ``tracking.log_model=true`` the refit saved as an MLflow model).

The folds are identical (same splitter, same seed), so both sides must report the
same mean accuracy; the script prints both and says whether they match. The
one-time costs of the first tracked run (importing MLflow, creating the SQLite
store, and the rest of the first run, e.g. MLflow's first ``save_model`` scanning the
installed packages) are measured and printed but left out of the comparison: they
are paid once per process, and ``bench_startup.py`` covers import cost. After one
warm-up of each side, the sides are timed in interleaved repetitions and their
medians compared (the best run is shown too). To split expt's time into parts, the
methods of ``expt.tracking.client.Tracker`` are wrapped with a timer ("MLflow calls").

Reports only; it does not fail on a slow result. Run from the repo root:
``python benchmarks/bench_train_overhead.py`` (``make bench`` runs it).
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

REPEATS = 5
SEED = 0
FOLDS = 5
TRACKER_CALLS = ("__init__", "start", "log", "log_text", "log_sklearn_model", "end")
in_tracker = [0.0]  # seconds spent inside expt.tracking.client.Tracker methods (the MLflow client calls)


def quiet_like_the_cli() -> None:
    """What ``expt train`` does before running: MLflow and alembic INFO chatter off."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def time_tracker_calls() -> None:
    """Wrap the Tracker methods run_train calls, to say how much of a run is MLflow round trips."""
    from expt.tracking.client import Tracker

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        def timed_method(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                in_tracker[0] += time.perf_counter() - start

        return timed_method

    for name in TRACKER_CALLS:
        setattr(Tracker, name, wrap(getattr(Tracker, name)))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def hand_written() -> dict[str, Any]:
    """Load, cross-validate (clone, fit, score per fold) and refit; times the CV and the refit apart."""
    import numpy as np
    from sklearn.base import clone
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter()
    X, y = load_breast_cancer(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=SEED))
    splitter = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    scorer = get_scorer("accuracy")
    scores = []
    for train, test in splitter.split(X, y):
        model = clone(pipeline).fit(X[train], y[train])
        scores.append(float(scorer(model, X[test], y[test])))
    cv_done = time.perf_counter()
    clone(pipeline).fit(X, y)
    end = time.perf_counter()
    return {"total": end - start, "cv": cv_done - start, "refit": end - cv_done,
            "scores": scores, "mean": float(np.mean(scores))}


def expt_train(store: str, log_model: bool) -> dict[str, Any]:
    """``expt train data=breast_cancer model=logistic_regression ...`` without the CLI's printing."""
    from expt.core.config import compose
    from expt.core.prepare import prepare
    from expt.train.run import run_train

    overrides = ["data=breast_cancer", "model=logistic_regression", f"tracking.uri=sqlite:///{store}",
                 "learner.preprocessing.impute=none", f"tracking.log_model={str(log_model).lower()}"]
    in_tracker[0] = 0.0
    t_compose, composed = timed(lambda: compose(overrides))
    t_prepare, prepared = timed(lambda: prepare(composed))
    t_run, result = timed(lambda: run_train(prepared))
    folds = sum(f.fit_time + f.score_time for f in result.cv.folds)
    return {"total": t_compose + t_prepare + t_run, "compose": t_compose, "prepare": t_prepare, "run_train": t_run,
            "mlflow": in_tracker[0], "folds": folds, "scores": result.cv.scores, "mean": result.cv.mean}


def one_time_costs(store: str) -> dict[str, float]:
    """The first tracked run's extra work, split into the parts that are paid once per process."""
    from expt.tracking.client import Tracker

    t_import, _ = timed(lambda: __import__("mlflow"))
    t_store, _ = timed(lambda: Tracker(f"sqlite:///{store}", "expt"))  # creates the tables (alembic)
    t_first, _ = timed(lambda: expt_train(store, log_model=True))
    return {"import mlflow": t_import, "create the SQLite store": t_store, "first expt run (warm-up)": t_first}


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


def best(runs: list[dict[str, Any]], key: str) -> float:
    return min(float(r[key]) for r in runs)


def check_scores(hand: list[dict[str, Any]], full: list[dict[str, Any]], lean: list[dict[str, Any]]) -> None:
    """Identical folds must give identical per-fold accuracies, in every repetition of every side."""
    reference = hand[0]["scores"]
    same = all(r["scores"] == reference for r in hand + full + lean)
    print(f"mean accuracy: hand-written {hand[0]['mean']!r}, expt {full[0]['mean']!r}, "
          f"expt log_model=false {lean[0]['mean']!r} -> {'identical in every run' if same else 'DIFFERENT'}")
    if not same:
        for name, runs in (("hand-written", hand), ("expt", full), ("expt log_model=false", lean)):
            print(f"  per fold, {name}: {[r['scores'] for r in runs]}")


def report(t_hand_warm: float, once: dict[str, float], hand: list[dict[str, Any]], full: list[dict[str, Any]],
           lean: list[dict[str, Any]]) -> None:
    print(f"workload: breast_cancer, StandardScaler + LogisticRegression(max_iter=1000), "
          f"{FOLDS}-fold stratified shuffled CV (seed {SEED}), accuracy; Python {sys.version.split()[0]}")
    print("one-time costs, EXCLUDED from the timings below (paid once per process):")
    print(f"  {'hand-written warm-up (imports sklearn)':<38} {t_hand_warm:6.3f} s")
    for name, seconds in once.items():
        print(f"  {name:<38} {seconds:6.3f} s")
    print(f"median of {REPEATS} interleaved repetitions [best], then the median of each part:")
    print(f"  {'hand-written loop':<38} {median(hand, 'total'):6.3f} s [{best(hand, 'total'):.3f}]"
          f"  CV {median(hand, 'cv'):.3f}, refit {median(hand, 'refit'):.3f}")
    for name, runs in (("expt train", full), ("expt train, tracking.log_model=false", lean)):
        print(f"  {name:<38} {median(runs, 'total'):6.3f} s [{best(runs, 'total'):.3f}]"
              f"  compose {median(runs, 'compose'):.3f}, prepare {median(runs, 'prepare'):.3f}, "
              f"run_train {median(runs, 'run_train'):.3f} (MLflow calls {median(runs, 'mlflow'):.3f}, "
              f"fold fit+score {median(runs, 'folds'):.3f})")
    print("  (expt fits each fold on a DataFrame through a ColumnTransformer and also scores its training part;"
          " the hand loop uses numpy arrays)")
    check_scores(hand, full, lean)
    print("log_model=false also skips expt's refit, so it is compared with the hand-written CV alone:")
    print(f"expt train (tracking.log_model=false) / hand-written loop without refit = "
          f"{median(lean, 'total') / median(hand, 'cv'):.2f}x")
    print(f"expt train / hand-written loop = {median(full, 'total') / median(hand, 'total'):.2f}x")


def main() -> None:
    quiet_like_the_cli()
    time_tracker_calls()
    with tempfile.TemporaryDirectory(prefix="expt-bench-") as tmp:
        store = os.path.join(tmp, "mlruns.db")
        t_hand_warm, _ = timed(hand_written)
        once = one_time_costs(store)
        expt_train(store, log_model=False)  # warm-up of the log_model=false variant too
        hand, full, lean = [], [], []
        for _ in range(REPEATS):
            hand.append(hand_written())
            full.append(expt_train(store, log_model=True))
            lean.append(expt_train(store, log_model=False))
    report(t_hand_warm, once, hand, full, lean)


if __name__ == "__main__":
    main()
