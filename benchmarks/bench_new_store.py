"""The first command in a new folder: a new SQLite store from expt's migrated template, against MLflow migrating it.

Each round runs ``expt train data=iris model=knn`` twice in a new empty folder, alternating which side goes
first: once with the template in expt's cache (expt.tracking.seed copies it into place), once with a cache that
cannot be used (``EXPT_CACHE_DIR`` under a plain file), where MLflow creates the store by running its schema
migrations, as it does without expt. Same command, same data, same thread caps; only the store's creation
differs. Prints wall and CPU seconds (the command and its children) per side, medians with the range over
rounds, and the ratio; beside them, in one process, what creating one store costs each way.

Reports only; never fails on a slow result. ``python benchmarks/bench_new_store.py [ROUNDS]`` (default 5).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPT = str(Path(sys.executable).with_name("expt"))
COMMAND = [EXPT, "train", "data=iris", "model=knn", "tracking.log_model=false"]

IN_PROCESS = """
import os, sys, time
from pathlib import Path
import mlflow
from mlflow import MlflowClient
from expt.tracking.seed import seed_store
folder = Path(sys.argv[1])
warm = f"sqlite:///{folder / 'warm.db'}"
seed_store(warm)  # the template exists from here on
MlflowClient(tracking_uri=warm).search_experiments()  # and the store's modules are imported
out = []
for side in ("template", "mlflow"):
    uri = f"sqlite:///{folder / (side + '.db')}"
    wall, cpu = time.perf_counter(), time.process_time()
    if side == "template":
        seed_store(uri)
    MlflowClient(tracking_uri=uri).search_experiments()
    out.append(f"{side} {time.perf_counter() - wall:.3f} {time.process_time() - cpu:.3f}")
print("\\n".join(out))
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(folder: Path, cache: str) -> tuple[float, float]:
    """Wall and CPU seconds of the command in ``folder`` with ``EXPT_CACHE_DIR=cache``."""
    folder.mkdir()
    env = {**os.environ, "EXPT_CACHE_DIR": cache}
    cpu, wall = children_cpu(), time.perf_counter()
    done = subprocess.run(COMMAND, cwd=folder, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
    if done.returncode != 0:
        sys.exit(f"{' '.join(COMMAND)} exited {done.returncode}: {done.stderr.strip()}")
    return wall, cpu


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory(prefix="expt-bench-new-store-") as tmp:
        root = Path(tmp)
        blocked = root / "a-file"
        blocked.write_text("")
        sides = {"template": str(root / "cache"), "mlflow": str(blocked / "cache")}
        run(root / "warm-up", sides["template"])  # builds the template; the page cache and .pyc files
        times: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
        for r in range(rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for side in order:
                times[side].append(run(root / f"{r}-{side}", sides[side]))
        print(f"first `{' '.join(['expt', *COMMAND[1:]])}` in a new folder, {rounds} rounds, alternating")
        print(f"{'side':<34} {'wall (median, range)':<26} CPU (median, range)")
        for side, label in (("template", "store copied from expt's template"), ("mlflow", "store migrated by MLflow")):
            walls, cpus = [w for w, _ in times[side]], [c for _, c in times[side]]
            print(f"{label:<34} {spread(walls):<26} {spread(cpus)}")
        out = subprocess.run([sys.executable, "-c", IN_PROCESS, str(root)], capture_output=True, text=True,
                             env={**os.environ, "EXPT_CACHE_DIR": sides["template"]}, check=True).stdout
        print("in one process, creating and opening one store (wall s, CPU s):")
        for line in out.splitlines():
            side, wall, cpu = line.split()
            print(f"  {side:<10} {float(wall):.3f} {float(cpu):.3f}")
        ratios = [t[0] / m[0] for t, m in zip(times["template"], times["mlflow"], strict=True)]
        print(f"first expt train in a new folder, template / MLflow's migrations = {statistics.median(ratios):.2f}x "
              f"wall ({min(ratios):.2f}-{max(ratios):.2f} over rounds)")


if __name__ == "__main__":
    main()
