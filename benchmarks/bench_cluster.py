"""What the Dask seam costs and what it buys (issue 25), whole processes as a user runs them.

Set-up, untimed: an `mlflow server` on a SQLite file (the store every side writes to: a grid on a cluster needs a
store its workers share, and the local side gets the same one so that both do the same work), and two Dask
clusters on loopback already running: A with two one-thread process workers, B with one.

* grid: `expt train -m data=wine,iris,breast_cancer model=logistic_regression,svm,random_forest` (defaults, as
  bench_grid.py) with `--cluster A` against the same grid with `--workers 2` and no cluster. Target: cluster wall
  <= 1.15x local. Both must find the same 45 fold scores and fold hashes (checked from the store).
* kb: a partial knowledge-base build (12 datasets x 8 configurations, fresh build folders) on cluster B (one worker)
  and on cluster A (two workers). Target: two workers <= 0.6x one. Their records must be the same (floats within
  expt.core.floats' tolerance).

Rounds alternate the sides' order; printed: each round, then the medians of the per-round ratios with their
range. Wall time only: the cluster's CPU is spent in the workers, which are not this script's children.

Usage: python benchmarks/bench_cluster.py [ROUNDS=3]
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
GRID = ["-m", "data=wine,iris,breast_cancer", "model=logistic_regression,svm,random_forest"]
KB_DATASETS = ("iris", "wine", "breast_cancer", "diabetes", "airquality", "boston", "pima", "crabs", "birthwt",
               "penguins", "kyphosis", "prestige")
KB_CONFIGS = ("logreg_c1", "ridge_a1", "svm_c1", "knn_5", "tree_depth4", "rf_default", "et_default", "hgb_default")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv: list[str], folder: Path, log: str) -> subprocess.Popen:
    return subprocess.Popen(argv, cwd=folder, stdout=(folder / log).open("wb"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def cluster(folder: Path, name: str, workers: int) -> tuple[str, list[subprocess.Popen]]:
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                   folder, f"{name}-scheduler.log")]
    time.sleep(2)
    procs += [start([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                     "--local-directory", str(folder / f"{name}-w{i}")], folder, f"{name}-w{i}.log")
              for i in range(workers)]
    from distributed import Client

    with Client(address, timeout=60, set_as_default=False) as client:
        client.wait_for_workers(workers, timeout=120)
    return address, procs


def timed(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return wall


def grid_scores(uri: str, experiment: str) -> dict[str, tuple[str, tuple[float, ...]]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.`expt.run_type` = 'fold'", max_results=10_000)
    out: dict[str, list[tuple[int, float]]] = {}
    for r in runs:
        out.setdefault(r.data.tags.get("expt.grid.cell", "?"), []).append(
            (int(r.data.tags.get("expt.fold", 0)), r.data.metrics.get("accuracy", float("nan"))))
    cells = client.search_runs([exp.experiment_id], "tags.`expt.run_type` = 'train'", max_results=10_000)
    hashes = {r.data.tags["expt.grid.cell"]: r.data.tags["expt.folds_hash"] for r in cells}
    return {k: (hashes.get(k, ""), tuple(s for _, s in sorted(v))) for k, v in out.items()}


def kb_records(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in ("created", "fit_seconds")}
            for line in gzip.decompress(path.read_bytes()).splitlines()]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x (rounds {min(values):.2f}-{max(values):.2f})"


def main() -> None:
    from expt.core.floats import differences

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    folder = Path(tempfile.mkdtemp(prefix="expt-bench-cluster-"))
    procs: list[subprocess.Popen] = []
    try:
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        os.environ.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_WORKERS="1")  # as `expt ui` serves
        procs.append(start([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder}/server.db",
                            "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port",
                            str(port), "--workers", "1"], folder, "mlflow.log"))
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):  # noqa: S310 - http, built here
                    break
            except OSError:
                time.sleep(0.5)
        two, ps = cluster(folder, "two", 2)
        procs += ps
        one, ps = cluster(folder, "one", 1)
        procs += ps
        expt = str(BIN / "expt")
        # warm-up: the server's experiment tables, the workers' imports (a worker imports once, at its first cell)
        timed([expt, "train", "data=iris", "model=knn", f"tracking.uri={uri}", "tracking.experiment=warm"], folder)
        for address in (two, one):
            timed([expt, "train", "-m", "data=iris,wine", "model=knn,svm", f"tracking.uri={uri}",
                   "tracking.experiment=warm", "--cluster", address], folder)
        grid_ratio, kb_ratio, same = [], [], True
        for r in range(rounds):
            walls = {}
            sides = [("local", ["--workers", "2"]), ("cluster", ["--cluster", two])]
            for name, extra in sides[r % 2:] + sides[:r % 2]:
                walls[name] = timed([expt, "train", *GRID, f"tracking.uri={uri}",
                                     f"tracking.experiment=grid-{name}-{r}", *extra], folder)
            a, b = grid_scores(uri, f"grid-local-{r}"), grid_scores(uri, f"grid-cluster-{r}")
            same &= a.keys() == b.keys() and len(a) == 9 and all(
                a[k][0] == b[k][0] and len(a[k][1]) == len(b[k][1]) == 5
                and all(abs(x - y) <= 1e-9 for x, y in zip(a[k][1], b[k][1], strict=True)) for k in a)
            grid_ratio.append(walls["cluster"] / walls["local"])
            kb_walls, built = {}, {}
            kb_sides = [("one", one), ("two", two)]
            for name, address in kb_sides[r % 2:] + kb_sides[:r % 2]:
                out = folder / f"kb-{name}-{r}.jsonl.gz"
                argv = [sys.executable, "-m", "expt.kb", "--build", str(folder / f"kb-{name}-{r}"), "--out", str(out),
                        "--cluster", address]
                for d in KB_DATASETS:
                    argv += ["--only", d]
                for c in KB_CONFIGS:
                    argv += ["--configs", c]
                kb_walls[name] = timed(argv, folder)
                built[name] = kb_records(out)
            same &= len(built["one"]) == len(built["two"]) and all(
                differences(x, y) == [] for x, y in zip(built["one"], built["two"], strict=True))
            kb_ratio.append(kb_walls["two"] / kb_walls["one"])
            print(f"  round {r + 1}: grid local --workers 2 {walls['local']:.1f} s, --cluster (2 workers) "
                  f"{walls['cluster']:.1f} s; kb ({len(built['two'])} cells) 1 worker {kb_walls['one']:.1f} s, "
                  f"2 workers {kb_walls['two']:.1f} s", flush=True)
        print(f"same fold scores, fold hashes and records on every side: {'yes' if same else 'NO'}")
        print(f"knowledge-base build, 2 workers / 1 worker (target <= 0.6x) = {spread(kb_ratio)}")
        print(f"3x3 grid, --cluster with 2 workers / --workers 2 without a cluster (target <= 1.15x) = "
              f"{spread(grid_ratio)}")
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
