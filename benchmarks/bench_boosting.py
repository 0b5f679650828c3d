"""LightGBM, XGBoost and CatBoost in expt: the three targets of issue 23, as functions the lead runs on a quiet machine.

* ``process``: ``expt train data=breast_cancer model=lightgbm`` as a whole process against
  ``hand_boosting.py`` (numpy arrays, make_pipeline, cross_val_score on the same 5 folds, the refit; the same
  booster and thread count), both started as a user starts them, sides alternating per round, medians with
  their range and the median of the per-round ratios (bench_process.py's way and code). Target: <= 1.6x.
* ``pruning``: a 30-trial sweep with the median pruner against the same sweep without one, early stopping on
  in both: boosting rounds run (every fit, pruned ones up to where they stopped), wall time, and the outer
  score. Target: >= 30% of the rounds saved at the same or a better outer score.
* ``defaults``: the default search space of each family, swept with ``expt sweep``, against the package's
  defaults (``expt train`` with no early stopping, 100 rounds; CatBoost: 1000 iterations) on breast_cancer and
  diabetes. Target: the sweep's outer mean at least the defaults' mean minus one standard error.

    python benchmarks/bench_boosting.py                      # process, 5 rounds
    python benchmarks/bench_boosting.py pruning --family lightgbm xgboost catboost
    python benchmarks/bench_boosting.py defaults --family lightgbm --data breast_cancer diabetes
    python benchmarks/bench_boosting.py all

Reports only; never fails on a slow result. Do not run it beside other heavy work (the ratios drift by tens of
percent on a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
FAMILIES = ("lightgbm", "xgboost", "catboost")
NO_EARLY_STOPPING = "model.estimator.early_stopping_rounds=null"
PACKAGE_DEFAULTS = {"lightgbm": [NO_EARLY_STOPPING, "model.estimator.booster.n_estimators=100"],
                    "xgboost": [NO_EARLY_STOPPING, "model.estimator.booster.n_estimators=100"],
                    "catboost": [NO_EARLY_STOPPING]}


# --- whole process ------------------------------------------------------------------------------------------------

def process(rounds: int = 5, family: str = "lightgbm") -> None:
    """expt train vs the hand-written script, as processes (bench_process.py's measure and report)."""
    from bench_process import EXPT, PYTHON, Side, _last_json, become_subreaper, expt_train_scores, report, two_sides

    become_subreaper()
    with tempfile.TemporaryDirectory(prefix="expt-bench-boosting-") as tmp:
        work = Path(tmp)
        (work / "expt").mkdir()
        (work / "hand").mkdir()
        sides = [Side("expt", [EXPT, "train", "data=breast_cancer", f"model={family}"], work / "expt", {},
                      lambda c, r: expt_train_scores(work / "expt" / "mlruns.db")),
                 Side("hand-written", [PYTHON, str(HERE / "hand_boosting.py"), family], work / "hand", {},
                      lambda c, r: _last_json(c)["folds"])]
        costs, same = two_sides(sides, rounds)
        report(f"train-{family} (target: expt / hand-written wall <= 1.6x)", sides, costs, same)


# --- pruning ------------------------------------------------------------------------------------------------------

def _count_rounds() -> list[int]:
    """Every booster fit adds the rounds it ran (a pruned one: up to the round it stopped at) to the list returned."""
    from expt.models import boosting

    counted: list[int] = []
    fit = boosting._Boosted.fit

    def counting(self, X, y):
        try:
            return fit(self, X, y)
        finally:
            counted.append(getattr(self, "n_rounds_", 0))

    boosting._Boosted.fit = counting
    return counted


def _sweep(overrides: list[str], work: Path, sweep_id: str) -> dict:
    from expt.core.config import compose
    from expt.sweep.runner import SweepOptions, run_sweep

    composed = compose([*overrides, "tracking.records=null", "tracking.plots=false",
                        f"tracking.uri=sqlite:///{work / 'mlruns.db'}"])
    _sweep_obj, summary = run_sweep(composed, SweepOptions(sweep_id=sweep_id, storage=str(work / f"{sweep_id}.jnl")))
    return summary


def pruning(families: tuple[str, ...] = FAMILIES, data: str = "breast_cancer", n_trials: int = 30) -> None:
    """The same 30-trial sweep with and without the median pruner (early stopping on in both)."""
    counted = _count_rounds()
    with tempfile.TemporaryDirectory(prefix="expt-bench-pruning-") as tmp:
        for family in families:
            rows = {}
            for pruner in ("median", "none"):
                counted.clear()
                start = time.perf_counter()
                summary = _sweep([f"data={data}", f"model={family}", f"search={family}", f"search.n_trials={n_trials}",
                                  f"search.pruner={pruner}"], Path(tmp), f"{family}-{pruner}")
                rows[pruner] = (sum(counted), time.perf_counter() - start, summary["outer_mean"],
                                summary["outer_std"])
                print(f"  {family} pruner={pruner}: {rows[pruner][0]} rounds in {len(counted)} fits, "
                      f"{rows[pruner][1]:.1f} s, outer {rows[pruner][2]:.4f} +- {rows[pruner][3]:.4f}", flush=True)
            (r_on, t_on, s_on, _), (r_off, t_off, s_off, sd_off) = rows["median"], rows["none"]
            print(f"{family} on {data}, {n_trials} trials: pruning saved {1 - r_on / r_off:.0%} of the boosting rounds "
                  f"(target >= 30%), wall {t_on / t_off:.2f}x; outer {s_on:.4f} vs {s_off:.4f} "
                  f"({'same or better' if s_on >= s_off - sd_off / math.sqrt(5) else 'WORSE'} within one SE)\n",
                  flush=True)


# --- default space vs package defaults ----------------------------------------------------------------------------

def defaults(families: tuple[str, ...] = FAMILIES, datasets: tuple[str, ...] = ("breast_cancer", "diabetes")) -> None:
    """``expt sweep data=D model=F`` (the default space) against ``expt train`` with the package's defaults."""
    from expt.core.config import compose
    from expt.core.prepare import prepare
    from expt.train.run import run_train

    with tempfile.TemporaryDirectory(prefix="expt-bench-defaults-") as tmp:
        work = Path(tmp)
        for family in families:
            for data in datasets:
                summary = _sweep([f"data={data}", f"model={family}"], work, f"{family}-{data}")
                composed = compose([f"data={data}", f"model={family}", *PACKAGE_DEFAULTS[family],
                                    "tracking.records=null", "tracking.plots=false",
                                    f"tracking.uri=sqlite:///{work / 'mlruns.db'}"])
                cv = run_train(prepare(composed)).cv
                se = statistics.pstdev(cv.scores) / math.sqrt(len(cv.scores))
                verdict = "meets" if summary["outer_mean"] >= cv.mean - se else "MISSES"
                print(f"{family} on {data}: default space {summary['outer_mean']:.4f} +- {summary['outer_std']:.4f} "
                      f"(outer), package defaults {cv.mean:.4f} +- {cv.std:.4f} (5-fold CV): {verdict} the target "
                      f"(>= defaults - 1 SE = {cv.mean - se:.4f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", default="process", choices=("process", "pruning", "defaults", "all"))
    parser.add_argument("--family", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--data", nargs="+", default=["breast_cancer", "diabetes"])
    parser.add_argument("--rounds", type=int, default=5, help="process: rounds per side")
    parser.add_argument("--trials", type=int, default=30, help="pruning: trials per study")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores", flush=True)
    if args.what in ("process", "all"):
        process(args.rounds, "lightgbm")
    if args.what in ("pruning", "all"):
        pruning(tuple(args.family), args.data[0], args.trials)
    if args.what in ("defaults", "all"):
        defaults(tuple(args.family), tuple(args.data))


if __name__ == "__main__":
    main()
