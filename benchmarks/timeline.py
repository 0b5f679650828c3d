"""Where one ``expt sweep``, ``expt train`` or ``expt train -m`` spends its wall time, phase by phase, in every process.

Runs the command once as a user runs it (a fresh process, in a scratch working directory whose
MLflow store exists after one untimed warm-up run) with ``EXPT_TIMELINE=FILE``: each expt process
(the command, the MLflow sink of a sweep, its workers) appends when it reached each phase and which
top-level packages it imported since its previous mark (``expt.core.timeline.mark``). Printed
per process: seconds since the command was started, the phase's own seconds, and the packages it
imported. "interpreter start + imports" is the spawn to the first mark; "exit" is the last mark of
the command to the moment the shell gets its prompt back.

``--profile`` runs it again under py-spy (``pip install py-spy``; it samples every process of the command, the
sink included, 100 times a second) and prints each process's CPU seconds by what it was doing: imports, the MLflow
store, figures, permutation importance, fitting, predicting, Optuna, other MLflow work, the rest. That answers
"where does the sink's extra CPU go", which the marks (one CPU figure per phase) cannot.

``--importtime`` runs it again with ``PYTHONPROFILEIMPORTTIME=1`` and sums the imports' own time per
top-level package over every process (importtime's own overhead inflates these figures: compare
them with each other, not with the wall time).

    python benchmarks/timeline.py sweep                       # data=breast_cancer model=logistic_regression
    python benchmarks/timeline.py train model=random_forest --importtime
    python benchmarks/timeline.py sweep --before /tmp/expt-before   # another checkout of the code
    python benchmarks/timeline.py sweep model=random_forest --profile
    python benchmarks/timeline.py grid --profile                # the 3 x 3 grid of bench_grid.py
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPT = str(Path(sys.executable).with_name("expt"))


def command(kind: str, overrides: list[str], before: Path | None) -> tuple[list[str], dict[str, str]]:
    if kind == "grid":  # issue 16's grid, as benchmarks/bench_grid.py runs it
        args = ["train", "-m", "data=wine,iris,breast_cancer", "model=logistic_regression,svm,random_forest",
                *overrides]
    else:
        args = [kind, "data=breast_cancer", "model=logistic_regression", *overrides]
    if before is None:
        return [EXPT, *args], {}
    return [sys.executable, "-c", "import sys; sys.argv[0] = 'expt'; from expt.cli import main; main()", *args], {
        "PYTHONPATH": str(before)}


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    start = time.time()
    proc = subprocess.run(argv, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True)
    end = time.time()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return start, end, proc.stderr


def show_timeline(path: Path, start: float, end: float) -> None:
    marks = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lags = [m for m in marks if "lag" in m]  # one per trial the sink logged: shown as a summary, not as rows
    marks = [m for m in marks if "lag" not in m]
    by_pid: dict[int, list[dict]] = collections.defaultdict(list)
    for m in marks:
        by_pid[m["pid"]].append(m)
    main_pid = marks[0]["pid"] if marks else None
    print(f"total wall {end - start:.2f} s (spawn to exit)")
    for pid, rows in sorted(by_pid.items(), key=lambda kv: kv[1][0]["t"]):
        first = rows[0]["t"]
        print(f"\nprocess {pid}{' (the command)' if pid == main_pid else ''}: first mark at {first - start:.2f} s")
        print(f"  {'at s':>6} {'phase s':>8} {'CPU s':>6}  phase  [imported since the previous mark]")
        previous = start if pid == main_pid else None
        cpu = 0.0
        for m in rows:
            own = f"{m['t'] - previous:8.2f}" if previous is not None else f"{'':>8}"
            own += f" {m.get('cpu', 0.0) - cpu:6.2f}"
            cpu = m.get("cpu", 0.0)
            new = m["new"] if pid != main_pid or previous != start else [n for n in m["new"] if n != "expt"]
            shown = ", ".join(new[:12]) + (f" +{len(new) - 12}" if len(new) > 12 else "")
            label = "interpreter start + imports to " + m["phase"] if previous == start else m["phase"]
            print(f"  {m['t'] - start:6.2f} {own}  {label}" + (f"  [{shown}]" if shown else ""))
            previous = m["t"]
        if pid == main_pid:
            print(f"  {end - start:6.2f} {end - previous:8.2f} {'':>6}  exit (teardown, waiting on children)")
    show_run_tree(marks, lags, start)


def show_run_tree(marks: list[dict], lags: list[dict], start: float) -> None:
    """When a watcher of the store sees the sweep's runs (issue 26: the sweep and outer-fold runs within 2 s of
    the store being open and 6 s of the start; each trial within 1 s of its end)."""
    opened = {m["phase"]: m["t"] for m in marks if m["phase"].endswith("run opened")}
    store = next((m["t"] for m in marks if m["phase"] == "sink: store open"), None)
    if not opened or store is None:
        return
    last = max(opened.values())
    print(f"\nrun tree: {len(opened)} sweep and fold runs in the store {last - start:.2f} s after the start, "
          f"{last - store:.2f} s after the store was open")
    if lags:
        import statistics

        values = sorted(m["lag"] for m in lags)
        print(f"trials: {len(values)} logged; lag from a trial's end to the store: median "
              f"{statistics.median(values):.2f} s, max {values[-1]:.2f} s, {sum(v > 1.0 for v in values)} over 1 s")
        later = sorted(m["lag"] for m in lags if m["t"] - m["lag"] >= store)  # ended once the store was open
        if later:
            print(f"  of those, the {len(later)} that ended after the store was open: median "
                  f"{statistics.median(later):.2f} s, max {later[-1]:.2f} s, {sum(v > 1.0 for v in later)} over 1 s")


def show_importtime(stderr: str) -> None:
    own: collections.Counter[str] = collections.Counter()
    pattern = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")
    for line in stderr.splitlines():
        m = pattern.match(line)
        if m:
            own[m.group(4).partition(".")[0]] += int(m.group(1))
    total = sum(own.values())
    print(f"\nimports, own time summed over every process: {total / 1e6:.2f} s (inflated by importtime itself)")
    for name, us in own.most_common(18):
        print(f"  {name:<22} {us / 1e6:6.2f} s")


# What a sample was doing: the first category, in this order, whose pattern is anywhere in its stack, so that
# matplotlib's import counts as an import and a forest's predict inside the importance as the importance.
CATEGORIES = (
    ("imports", re.compile(r"_find_and_load")),
    ("permutation importance", re.compile(r"permutation_drops")),
    ("figures (matplotlib, PIL)", re.compile(r"\((matplotlib|PIL)/")),
    ("MLflow store (SQLAlchemy)", re.compile(r"\(sqlalchemy/")),
    ("fitting (scikit-learn, torch)", re.compile(r"\bfit\w* \((sklearn|torch)/")),
    ("predicting, scoring", re.compile(r"\b(predict\w*|decision_function|score\w*|_score) \(sklearn/")),
    ("Optuna", re.compile(r"\(optuna/")),
    ("other MLflow work", re.compile(r"\(mlflow/")),
)
SPY_RATE = 100  # samples per second


def tally(raw: str) -> dict[int, collections.Counter[str]]:
    """py-spy's raw output (one "stack count" per line) as samples per process and category."""
    samples: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        # py-spy nests a child's stacks under its parent's: "process 1:...;process 2:...;frames"
        pids = re.findall(r"(?:^|;)process (\d+):", stack)
        if not pids or not count.isdigit():
            continue
        label = next((name for name, pattern in CATEGORIES if pattern.search(stack)), "the rest")
        samples[int(pids[-1])][label] += int(count)
    return samples


def profile(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    """The command again under ``py-spy record --subprocesses``; CPU seconds per process and category."""
    import shutil

    spy = shutil.which("py-spy")
    if spy is None:
        sys.exit("--profile needs py-spy: pip install py-spy")
    raw, marks = cwd / "profile.txt", cwd / "profile-marks.jsonl"
    proc = subprocess.run([spy, "record", "--subprocesses", "--nonblocking", "-r", str(SPY_RATE), "-f", "raw",
                           "-o", str(raw), "--", *argv], cwd=cwd,
                          env={**os.environ, **env, "EXPT_TIMELINE": str(marks)}, capture_output=True, text=True)
    if proc.returncode != 0 or not raw.exists():
        sys.exit(f"py-spy failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    names = {}  # pid -> the process's role, from its first mark ("writer: started" -> writer)
    for line in marks.read_text().splitlines() if marks.exists() else []:
        m = json.loads(line)
        names.setdefault(m["pid"], "the command" if m["phase"] == "cli imported" else m["phase"].partition(":")[0])
    samples = tally(raw.read_text())
    print(f"\nCPU seconds by what each process was doing (py-spy, {SPY_RATE} samples/s of the threads that run; a "
          "process with two busy threads counts both):")
    for pid, counts in sorted(samples.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(counts.values())
        print(f"\n  process {pid} ({names.get(pid, 'no marks')}): {total / SPY_RATE:.2f} s")
        for name, n in counts.most_common():
            print(f"    {name:<32} {n / SPY_RATE:6.2f} s {n / total:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("sweep", "train", "grid"))
    parser.add_argument("overrides", nargs="*", help="more overrides, e.g. model=random_forest")
    parser.add_argument("--importtime", action="store_true", help="also the imports' own time per package")
    parser.add_argument("--workers", type=int, default=1, help="expt sweep --workers N")
    parser.add_argument("--profile", action="store_true", help="also each process's CPU by category (py-spy)")
    parser.add_argument("--before", type=Path, help="run another checkout's expt (its parent folder)")
    args = parser.parse_args()
    argv, env = command(args.kind, args.overrides, args.before.resolve() if args.before else None)
    if args.kind == "sweep" and args.workers != 1:
        argv += ["--workers", str(args.workers)]
    with tempfile.TemporaryDirectory(prefix="expt-timeline-") as tmp:
        work = Path(tmp)
        run(argv, work, env)  # warm-up: the store exists, as a user's does
        marks = work / "timeline.jsonl"
        start, end, _ = run(argv, work, {**env, "EXPT_TIMELINE": str(marks)})
        print(" ".join(["expt", *argv[argv.index("train" if args.kind == "grid" else args.kind):]]))
        if marks.exists():
            show_timeline(marks, start, end)
        else:
            print(f"no marks (this checkout has no EXPT_TIMELINE); total wall {end - start:.2f} s")
        if args.profile:
            profile(argv, work, env)
        if args.importtime:
            _, _, stderr = run(argv, work, {**env, "PYTHONPROFILEIMPORTTIME": "1"})
            show_importtime(stderr)


if __name__ == "__main__":
    main()
