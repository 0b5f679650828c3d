"""``expt sweep --workers 2`` against ``--workers 1``, whole process, as a user runs it.

Workload: ``expt sweep data=breast_cancer model=MODEL`` with the shipped search (5 outer x 3 inner
folds, 20 TPE trials per study and the final search), in a scratch working directory whose MLflow
store exists after an untimed warm-up. Default MODEL is logistic_regression, the short sweep where
a second worker used to cost more than it gave (1.42x the wall time); ``random_forest`` (~80 s a
round on 2 cores) is where it should halve the wall time.

Per run: the wall and CPU seconds of the whole process tree (``bench_process.measure``), and the
trials per minute over the span the trials ran (the first trial's start to the last one's end, read
from the Optuna journal). The sides alternate in rounds; the figures are medians and the ratio is
the median of the per-round ratios. Reports only; it does not fail on a slow result.

``python benchmarks/bench_workers.py [--rounds 3] [--model logistic_regression] [--trials 20] [--before PATH]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench_process import become_subreaper, expt_argv, measure


def trial_rate(storage: Path, sweep_id: str) -> tuple[float, int]:
    import optuna

    from expt.sweep.storage import SURPLUS, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = open_storage(str(storage))
    trials = [t for s in st.get_all_studies() if s.study_name.startswith(f"{sweep_id}/")
              for t in optuna.load_study(study_name=s.study_name, storage=st).trials
              if t.datetime_complete and not t.user_attrs.get(SURPLUS)]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return len(trials) / max(span, 1e-9) * 60, len({t.user_attrs.get("expt.worker") for t in trials})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="logistic_regression")
    parser.add_argument("--trials", type=int, default=20, help="search.n_trials")
    parser.add_argument("--before", type=Path, help="run another checkout's expt (its parent folder) instead")
    args = parser.parse_args()
    expt, env = expt_argv(args.before.resolve() if args.before else None)
    become_subreaper()
    print(f"expt sweep data=breast_cancer model={args.model} search.n_trials={args.trials} --workers 1|2: "
          f"whole process, {args.rounds} rounds alternating", flush=True)
    costs: dict[int, list] = {1: [], 2: []}
    rates: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="expt-bench-workers-") as tmp:
        work = Path(tmp)

        def run(workers: int, sweep_id: str) -> None:
            storage = work / f"{sweep_id}.journal"
            cost = measure([*expt, "sweep", "data=breast_cancer", f"model={args.model}",
                            f"search.n_trials={args.trials}", "--workers", str(workers), "--sweep-id", sweep_id,
                            "--storage", str(storage)], work, env)
            rate, processes = trial_rate(storage, sweep_id)
            if not sweep_id.startswith("warmup"):
                costs[workers].append(cost)
                rates[workers].append(rate)
            print(f"  {sweep_id}: {workers} worker(s): wall {cost.wall:.2f} s, CPU {cost.cpu:.2f} s, "
                  f"{rate:.0f} trials/min while trials ran, trials run by {processes} process(es)", flush=True)

        run(1, "warmup")
        for r in range(args.rounds):
            for w in ((1, 2) if r % 2 == 0 else (2, 1)):
                run(w, f"r{r}w{w}")
    for w in (1, 2):
        walls, cpus = [c.wall for c in costs[w]], [c.cpu for c in costs[w]]
        print(f"--workers {w}: wall {statistics.median(walls):.2f} s ({min(walls):.2f}-{max(walls):.2f}), "
              f"CPU {statistics.median(cpus):.2f} s, {statistics.median(rates[w]):.0f} trials/min")
    ratios = [b.wall / a.wall for a, b in zip(costs[1], costs[2], strict=True)]
    cpu = [b.cpu / a.cpu for a, b in zip(costs[1], costs[2], strict=True)]
    print(f"--workers 2 / --workers 1 wall time ({args.model}) = {statistics.median(ratios):.2f}x "
          f"(rounds {min(ratios):.2f}-{max(ratios):.2f}); CPU {statistics.median(cpu):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
