"""Sweep throughput with 1 and 2 local worker processes (``expt sweep --workers N``).

Workload: breast_cancer, a cheap model (default: ``svm``, ~0.1 s a trial of 3 inner
folds), 3 outer folds + the final search, ``search.n_trials`` per study, TPE, a
journal-file storage and a SQLite MLflow store in a temp dir, as a user runs it.

Throughput is trials finished per minute over the span the trials ran (the first
trial's start to the last trial's end, from the Optuna storage): process start-up,
imports and the final refits are the same for both sides and left out. The sides
run in interleaved rounds (this machine drifts by up to 40% over minutes) and their
medians are compared. On 2 cores, 2 workers share the machine with the MLflow sink
process and the parent. Reports only; it does not fail on a slow result.

``python benchmarks/bench_workers.py [ROUNDS] [MODEL] [N_TRIALS]``
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
MODEL = sys.argv[2] if len(sys.argv) > 2 else "svm"
N_TRIALS = int(sys.argv[3]) if len(sys.argv) > 3 else 40
EXPT = str(Path(sys.executable).with_name("expt"))


def run(workers: int, tmp: Path, sweep_id: str) -> tuple[float, int, float]:
    import optuna

    from expt.sweep.storage import open_storage

    storage = str(tmp / f"{sweep_id}.journal")
    start = time.perf_counter()
    subprocess.run([EXPT, "sweep", "data=breast_cancer", f"model={MODEL}", f"search={MODEL}",
                    f"search.n_trials={N_TRIALS}", "search.outer_folds=3", "search.inner_folds=3",
                    f"tracking.uri=sqlite:///{tmp / 'mlruns.db'}", "tracking.records=null",
                    "--workers", str(workers), "--sweep-id", sweep_id, "--storage", storage],
                   check=True, cwd=tmp, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = open_storage(storage)
    trials = [t for s in st.get_all_studies() if s.study_name.startswith(f"{sweep_id}/")
              for t in optuna.load_study(study_name=s.study_name, storage=st).trials
              if t.datetime_complete and not t.user_attrs.get("expt.surplus")]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return len(trials) / span * 60, len(trials), wall


def main() -> None:
    print(f"breast_cancer, model={MODEL}, 3 outer folds + final, {N_TRIALS} trials per study, 3 inner folds")
    rates: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="expt-bench-workers-") as tmp:
        run(1, Path(tmp), "warmup")
        for r in range(ROUNDS):
            for w in ((1, 2) if r % 2 == 0 else (2, 1)):
                rate, n, wall = run(w, Path(tmp), f"r{r}w{w}")
                rates[w].append(rate)
                print(f"round {r + 1}: {w} worker(s): {n} trials, {rate:6.1f} trials/min (sweep wall {wall:.1f} s)")
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    ratios = [b / a for a, b in zip(rates[1], rates[2], strict=True)]
    print(f"median: 1 worker {one:.1f} trials/min, 2 workers {two:.1f} trials/min; "
          f"per-round ratios {min(ratios):.2f}-{max(ratios):.2f}x")
    print(f"2 workers / 1 worker throughput = {two / one:.2f}x")


if __name__ == "__main__":
    main()
