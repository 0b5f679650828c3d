"""What a user waits for: ``expt train`` and ``expt sweep`` as whole processes, against the same work written by hand.

Each side is a fresh process started as a user starts it from the shell, in its own working
directory (the MLflow store there exists after one untimed warm-up run per side, as a user's
usually does). The OS reports what each process tree cost: wall seconds, CPU seconds (user +
system of the command and every process under it, from ``wait4``; this process is a child
subreaper, so a helper process that outlives its parent is still counted), and peak memory, both
as the largest single process (``ru_maxrss``) and as the whole tree's resident memory summed
(sampled every 50 ms from ``/proc``).

Rows (``--rows``), each against ``benchmarks/hand_*.py`` (the same pipeline, folds, seeds, search
space and budget, the final search and refit; nothing logged, or logged with plain MLflow) and against
``benchmarks/plain_*.py`` (issue 26's plain baseline: the same work as a careful user writes it for an all-numeric
table, numpy arrays and ``make_pipeline(SimpleImputer, StandardScaler, model)``, without expt's DataFrame and
ColumnTransformer path):

* ``help``: ``expt --help`` (target <= 0.3 s);
* ``train-lr``, ``train-rf``: ``expt train data=breast_cancer model=MODEL`` vs ``hand_train.py`` and
  ``hand_mlflow_train.py``;
* ``sweep-lr``, ``sweep-rf``: ``expt sweep data=breast_cancer model=MODEL`` (5 x 3 folds, 20 trials per
  study, the final search) vs ``hand_sweep.py`` and ``hand_mlflow_sweep.py`` (RF: the MLflow side only
  with ``--mlflow-rf``, ~80 s a round);
* ``small-sweep``: ``expt sweep ... search.n_trials=1 search.outer_folds=2``, the fixed cost alone.

The sides of a row run back to back in each round, in rotating order (this machine drifts by tens
of percent over minutes); the figures are medians over the rounds with their range, and the ratios
are medians of the per-round ratios. Both sides must find the same scores (checked against the
MLflow store expt wrote). Reports only; never fails on a slow result.

``--before PATH`` adds a side: the same ``expt`` command run from another checkout of the code
(``git archive HEAD | tar -x -C PATH``), for before/after figures in one alternating run.

    python benchmarks/bench_process.py                  # quick: help, train-lr, sweep-lr, small-sweep; 3 rounds
    python benchmarks/bench_process.py --full           # every row, 5 rounds (~25 min on 2 cores)
    python benchmarks/bench_process.py --rows sweep-lr --rounds 7
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
EXPT = str(Path(sys.executable).with_name("expt"))
QUICK_ROWS = ("help", "train-lr", "sweep-lr", "small-sweep")
ALL_ROWS = ("help", "train-lr", "train-rf", "sweep-lr", "sweep-rf", "small-sweep")
MODELS = {"lr": "logistic_regression", "rf": "random_forest"}


@dataclass
class Cost:
    wall: float
    cpu: float
    maxrss: float  # MiB, the largest single process
    tree: float  # MiB, the peak of the whole tree's summed RSS
    out: str = ""


@dataclass
class Side:
    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    scores: object = None  # a callable: (Cost, round) -> list of floats, or None when nothing to check


# --- measuring a process tree -----------------------------------------------------------------------

def become_subreaper() -> None:
    """Orphans of the measured tree (a daemon helper that outlives its parent) come back to this process."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _tree_rss(root: int) -> int:
    """Summed RSS (pages) of every process below ``root``."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid], rss[pid] = int(stat[1]), int(stat[21])
    total = 0
    for pid in rss:
        p, hops = parents.get(pid), 0
        while p and p != root and hops < 64:
            p, hops = parents.get(p), hops + 1
        if p == root and pid != root:
            total += rss[pid]
    return total


def measure(argv: list[str], cwd: Path, env: dict[str, str]) -> Cost:
    page = os.sysconf("SC_PAGE_SIZE")
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _tree_rss(os.getpid()))

    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu, maxrss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # orphans reparented here: wait for them, count them
            try:
                pid, _, extra = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.02)
                continue
            cpu += extra.ru_utime + extra.ru_stime
            maxrss = max(maxrss, extra.ru_maxrss)
        done.set()
        sampler.join()
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} (in {cwd}) exited {proc.returncode}:\n{text[-3000:]}")
    return Cost(wall, cpu, maxrss / 1024, peak[0] * page / 2**20, text)


# --- the scores each side found ---------------------------------------------------------------------

def _last_json(cost: Cost) -> dict:
    return json.loads(cost.out.strip().splitlines()[-1])


def _query(db: Path, sql: str, *args: object) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute(sql, args).fetchall()


def expt_train_scores(db: Path) -> list[float]:
    """The newest train run's per-fold accuracies, from the store expt wrote."""
    rows = _query(db, """
        select m.value from latest_metrics m join tags t on t.run_uuid = m.run_uuid
        join tags p on p.run_uuid = m.run_uuid and p.key = 'mlflow.parentRunId'
        join tags f on f.run_uuid = m.run_uuid and f.key = 'expt.fold'
        where m.key = 'accuracy' and t.key = 'expt.run_type' and t.value = 'fold' and p.value = (
            select r.run_uuid from runs r join tags k on k.run_uuid = r.run_uuid
            where k.key = 'expt.run_type' and k.value = 'train' order by r.start_time desc limit 1)
        order by cast(f.value as integer)""")
    return [v for (v,) in rows]


def expt_sweep_scores(db: Path, sweep_id: str) -> list[float]:
    rows = _query(db, """
        select m.value from latest_metrics m join tags s on s.run_uuid = m.run_uuid
        join tags t on t.run_uuid = m.run_uuid join tags f on f.run_uuid = m.run_uuid
        where m.key = 'outer_accuracy' and s.key = 'expt.sweep_id' and s.value = ?
          and t.key = 'expt.run_type' and t.value = 'outer_fold' and f.key = 'expt.outer_fold'
        order by cast(f.value as integer)""", sweep_id)
    return [v for (v,) in rows]


# --- rows -------------------------------------------------------------------------------------------

def expt_argv(before: Path | None) -> tuple[list[str], dict[str, str]]:
    if before is None:
        return [EXPT], {}
    return [PYTHON, "-c", "import sys; sys.argv[0] = 'expt'; from expt.cli import main; main()"], {
        "PYTHONPATH": str(before)}


def row_sides(row: str, work: Path, before: Path | None, mlflow_rf: bool) -> list[Side]:
    kind, _, short = row.partition("-")
    sides = []
    variants = [("expt", None)] + ([("expt-before", before)] if before else [])
    if row == "help":
        return [Side(name, expt_argv(b)[0] + ["--help"], work, expt_argv(b)[1]) for name, b in variants]
    model = MODELS.get(short, "logistic_regression")
    common = ["data=breast_cancer", f"model={model}"]
    if row == "small-sweep":
        kind, common = "sweep", common + ["search.n_trials=1", "search.outer_folds=2"]
    for name, b in variants:
        cwd = work / f"{row}-{name}"
        cwd.mkdir(exist_ok=True)
        argv, env = expt_argv(b)
        if kind == "train":
            sides.append(Side(name, argv + ["train", *common], cwd, env,
                              lambda c, r, cwd=cwd: expt_train_scores(cwd / "mlruns.db")))
        else:
            def scores(c: Cost, r: str, cwd: Path = cwd) -> list[float]:
                return expt_sweep_scores(cwd / "mlruns.db", f"bench-{r}")

            sides.append(Side(name, argv + ["sweep", *common, "--sweep-id", "bench-{round}"], cwd, env,
                              None if row == "small-sweep" else scores))
    if row == "small-sweep":
        return sides
    hand = str(HERE / f"hand_{kind}.py")
    key = "folds" if kind == "train" else "outer"
    cwd = work / f"{row}-hand"
    cwd.mkdir(exist_ok=True)
    sides.append(Side("hand-written", [PYTHON, hand, model], cwd, {}, lambda c, r: _last_json(c)[key]))
    plain = work / f"{row}-plain"
    plain.mkdir(exist_ok=True)
    sides.append(Side("plain numpy", [PYTHON, str(HERE / f"plain_{kind}.py"), model], plain, {},
                      lambda c, r: _last_json(c)[key]))
    if short == "lr" or mlflow_rf:
        db = f"sqlite:///{work / f'{row}-mlflow' / 'mlruns.db'}"
        (work / f"{row}-mlflow").mkdir(exist_ok=True)
        sides.append(Side("hand+mlflow", [PYTHON, str(HERE / f"hand_mlflow_{kind}.py"), db, model],
                          work / f"{row}-mlflow", {}, lambda c, r: _last_json(c)[key]))
    return sides


def run_row(row: str, rounds: int, work: Path, before: Path | None, mlflow_rf: bool, warmup: bool = True) -> None:
    sides = row_sides(row, work, before, mlflow_rf)
    costs: dict[str, list[Cost]] = {s.name: [] for s in sides}
    same = True
    for s in sides if warmup else ():  # warm-up: the store, .pyc files, the page cache
        measure([a.replace("{round}", "warmup") for a in s.argv], s.cwd, s.env)
    for r in range(rounds):
        order = sides[r % len(sides):] + sides[:r % len(sides)]
        found = {}
        for s in order:
            cost = measure([a.replace("{round}", str(r)) for a in s.argv], s.cwd, s.env)
            costs[s.name].append(cost)
            if s.scores is not None:
                found[s.name] = s.scores(cost, str(r))
        if len(found) > 1:
            ref = next(iter(found.values()))
            same &= bool(ref) and all(len(v) == len(ref) and all(
                abs(a - b) < 1e-12 for a, b in zip(v, ref, strict=True)) for v in found.values())
        print(f"  {row} round {r + 1}: " + ", ".join(
            f"{s.name} {costs[s.name][-1].wall:.2f} s" for s in sides), flush=True)
    report(row, sides, costs, same if any(s.scores for s in sides[1:]) else None)


def two_sides(sides: list[Side], rounds: int) -> tuple[dict[str, list[Cost]], bool]:
    """One untimed warm-up run per side, then ``rounds`` rounds of the two sides in alternating order; returns the
    costs by side and whether both found the same scores every round (printing each round as it ends)."""
    costs: dict[str, list[Cost]] = {s.name: [] for s in sides}
    same = True
    for side in sides:  # warm-up: the store, .pyc files, the page cache
        measure(side.argv, side.cwd, side.env)
    for r in range(rounds):
        found = {}
        for side in sides[r % 2:] + sides[:r % 2]:
            cost = measure(side.argv, side.cwd, side.env)
            costs[side.name].append(cost)
            found[side.name] = side.scores(cost, str(r))
        a, b = found.values()
        same &= len(a) == len(b) > 0 and all(abs(x - y) < 1e-12 for x, y in zip(a, b, strict=True))
        print(f"  round {r + 1}: " + ", ".join(f"{s.name} {costs[s.name][-1].wall:.2f} s" for s in sides), flush=True)
    return costs, same


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})"


def report(row: str, sides: list[Side], costs: dict[str, list[Cost]], same: bool | None) -> None:
    print(f"{row}: medians (range) over {len(costs[sides[0].name])} rounds")
    print(f"  {'side':<13} {'wall s':>20} {'CPU s':>20} {'max RSS MiB':>22} {'tree RSS MiB':>22}")
    for s in sides:
        c = costs[s.name]
        print(f"  {s.name:<13} {_spread([x.wall for x in c])} {_spread([x.cpu for x in c])} "
              f"{_spread([x.maxrss for x in c]):>22} {_spread([x.tree for x in c]):>22}")
    base = costs[sides[0].name]
    for s in sides[1:]:
        other = costs[s.name]

        def ratio(attr: str, other: list[Cost] = other) -> str:
            per = [getattr(a, attr) / getattr(b, attr) for a, b in zip(base, other, strict=True)]
            return f"{statistics.median(per):.2f}x ({min(per):.2f}-{max(per):.2f})"

        print(f"  {sides[0].name} / {s.name}: wall {ratio('wall')}, CPU {ratio('cpu')}, "
              f"max RSS {ratio('maxrss')}, tree RSS {ratio('tree')}")
    if same is not None:
        print(f"  scores {'identical on every side' if same else 'DIFFER between the sides'}")
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", choices=ALL_ROWS, help=f"default: {' '.join(QUICK_ROWS)}")
    parser.add_argument("--rounds", type=int, help="default 3 (5 with --full)")
    parser.add_argument("--full", action="store_true", help="every row, 5 rounds")
    parser.add_argument("--mlflow-rf", action="store_true", help="the plain-MLflow side on the RF rows too")
    parser.add_argument("--before", type=Path, help="another checkout's expt/ parent, run as a side of its own")
    parser.add_argument("--no-warmup", action="store_true", help="no untimed first run per side (long rows)")
    args = parser.parse_args()
    rows = args.rows or (ALL_ROWS if args.full else QUICK_ROWS)
    rounds = args.rounds or (5 if args.full else 3)
    become_subreaper()
    print(f"whole process, {os.cpu_count()} cores; {rounds} rounds per row, sides alternating", flush=True)
    with tempfile.TemporaryDirectory(prefix="expt-bench-process-") as tmp:
        for row in rows:
            run_row(row, rounds, Path(tmp), args.before.resolve() if args.before else None, args.mlflow_rf,
                    warmup=not args.no_warmup)


if __name__ == "__main__":
    main()
