"""What out-of-fold predictions and evaluation plots add to ``expt train``, whole process, as a user runs it.

Workload: ``expt train data=breast_cancer model=random_forest`` (5-fold CV, refit, model logged, a
record), in a fresh folder with its own SQLite store, as a subprocess: imports, the thread that
writes ``predictions.parquet`` and draws the plots, MLflow's writes and the exit all count.
The baseline is the same command with ``tracking.plots=false`` (no predictions, no plots). Each round
runs both, in alternating order (this machine's speed drifts by up to 40% over
minutes), after one untimed warm-up of each (a new store's migrations, the first bytecode
compilation). Prints every round, the medians and spread, the median of the per-round ratios, and
checks that the plotted run logged ``predictions.parquet`` and its plots while the baseline logged
neither. Budget: 1.15x.

The evaluation runs in a thread of the train process (``expt.core.offload``); where the run's MLflow writes
go is chosen per run (``expt.train.process.start_writer``): a process of their own when a core is idle, the
train process itself when not. ``MODE`` forces one (``side`` or ``inline``; default ``auto``, as a user runs
it); each round prints the 1-minute load average before it.

Run from the repo root: ``python benchmarks/bench_train_plots.py [ROUNDS] [MODE]`` (default 7 auto;
``make bench``).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET = 1.15
EXPT = str(Path(sys.executable).with_name("expt"))
COMMAND = [EXPT, "train", "data=breast_cancer", "model=random_forest"]


def run_once(folder: Path, plots: bool, mode: str = "auto") -> float:
    """Wall seconds of one ``expt train`` in ``folder`` (its store is reused across rounds, as a user's is)."""
    env = {**os.environ, "EXPT_EVALUATION": mode} if mode != "auto" else None
    start = time.perf_counter()
    done = subprocess.run([*COMMAND, f"tracking.plots={str(plots).lower()}"], cwd=folder, capture_output=True,
                          text=True, timeout=600, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"expt train failed (plots={plots}):\n{done.stderr}")
    return seconds


def logged_files(folder: Path) -> list[str]:
    """Artifacts of the newest run in ``folder``'s store, relative to its artifact root."""
    runs = sorted((p for p in (folder / "mlartifacts").iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    root = runs[-1] / "artifacts"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    mode = sys.argv[2] if len(sys.argv) > 2 else "auto"
    work = Path(tempfile.mkdtemp(prefix="expt-bench-plots-"))
    folders = {True: work / "plots", False: work / "baseline"}
    for folder in folders.values():
        folder.mkdir()
    try:
        for plots, folder in folders.items():  # warm-up: a new store's migrations, bytecode
            run_once(folder, plots, mode)
        with_plots = logged_files(folders[True])
        without = logged_files(folders[False])
        times: dict[bool, list[float]] = {True: [], False: []}
        ratios = []
        print(f"{os.cpu_count()} cores; {' '.join(COMMAND[1:])}; {rounds} rounds, alternating order; "
              f"evaluation {mode}")
        loads = []
        for r in range(rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            loads.append(os.getloadavg()[0])
            got = {plots: run_once(folders[plots], plots, mode) for plots in order}
            for plots, seconds in got.items():
                times[plots].append(seconds)
            ratios.append(got[True] / got[False])
            print(f"round {r + 1}: plots {got[True]:.2f} s, baseline {got[False]:.2f} s, ratio {ratios[-1]:.3f}"
                  f"  (first: {'plots' if order[0] else 'baseline'}; load {loads[-1]:.2f})", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for plots, label in ((True, "tracking.plots=true "), (False, "tracking.plots=false")):
        values = times[plots]
        print(f"{label}: median {statistics.median(values):.2f} s, min {min(values):.2f}, max {max(values):.2f}")
    added = statistics.median(a - b for a, b in zip(times[True], times[False], strict=True))
    print(f"median extra seconds per round: {added:+.2f} s; ratios {min(ratios):.3f}-{max(ratios):.3f}; "
          f"load average {min(loads):.2f}-{max(loads):.2f}")
    plots_logged = [f for f in with_plots if f.startswith("plots/")]
    print(f"logged with plots: predictions.parquet {'predictions.parquet' in with_plots}, {len(plots_logged)} plots "
          f"({', '.join(Path(f).stem for f in plots_logged)}); baseline: predictions "
          f"{'predictions.parquet' in without}, plots {sum(f.startswith('plots/') for f in without)}")
    median = statistics.median(ratios)
    verdict = "met" if median <= BUDGET else "MISSED"
    print(f"expt train with plots / tracking.plots=false = {median:.3f}x (budget {BUDGET:.2f}x: {verdict})")


if __name__ == "__main__":
    main()
