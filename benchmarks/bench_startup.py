"""Startup cost of the ``expt`` command line.

Compares the wall time of ``expt --help`` (each run a fresh process, as a user
types it) with two references:

* ``python -c pass``: the interpreter floor, which no CLI written in Python can beat;
* ``python -c "import mlflow"``: what every ``expt`` invocation would cost if the CLI
  imported MLflow at module level instead of inside the commands.

``expt/cli/`` promises to import no heavy library (torch, mlflow, sklearn, optuna,
pandas) until a command needs it, so it also checks, in a fresh interpreter, which
of them ``import expt.cli`` (and then rendering ``--help``) leaves in ``sys.modules``.

Reports only; it does not fail on a slow result. Run from the repo root:
``python benchmarks/bench_startup.py`` (``make bench`` runs it).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

PYTHON = sys.executable
EXPT = str(Path(sys.executable).with_name("expt"))
BUDGET_S = 0.300
RUNS = 10
MLFLOW_RUNS = 3
HEAVY = ("torch", "mlflow", "sklearn", "optuna", "pandas")
ALSO_DEFERRED = ("numpy", "hydra", "omegaconf", "rich")  # banned at module level too (pyproject ruff config)

CHECK_IMPORTS = f"""
import io, sys, contextlib
import expt.cli
after_import = [m for m in {HEAVY + ALSO_DEFERRED!r} if m in sys.modules]
sys.argv = ["expt", "--help"]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        expt.cli.main()
    except SystemExit:
        pass
after_help = [m for m in {HEAVY + ALSO_DEFERRED!r} if m in sys.modules]
print(",".join(after_import))
print(",".join(after_help))
"""


def run_once(cmd: list[str]) -> float:
    """Wall time of one run of ``cmd`` in a fresh process; a failing command stops the benchmark."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode(errors='replace').strip()}")
    return elapsed


def measure(cmd: list[str], runs: int) -> list[float]:
    """One untimed warm-up (page cache, .pyc files), then ``runs`` timed runs."""
    run_once(cmd)
    return [run_once(cmd) for _ in range(runs)]


def deferred_imports() -> tuple[list[str], list[str]]:
    """Heavy modules loaded by ``import expt.cli``, and after rendering ``expt --help`` in process."""
    out = subprocess.run([PYTHON, "-c", CHECK_IMPORTS], capture_output=True, text=True, check=True).stdout
    after_import, after_help = (line.split(",") if line else [] for line in out.splitlines()[:2])
    return after_import, after_help


def row(name: str, times: list[float]) -> str:
    return f"{name:<26} {len(times):>4} {min(times):>9.3f} {statistics.median(times):>9.3f} {max(times):>9.3f}"


def names(mods: list[str]) -> str:
    return ", ".join(mods) if mods else "none"


def main() -> None:
    if not Path(EXPT).is_file():
        sys.exit(f"no expt console script next to {PYTHON}; install the project (make install)")
    results = {
        "python -c pass": measure([PYTHON, "-c", "pass"], RUNS),
        "expt --help": measure([EXPT, "--help"], RUNS),
        'python -c "import mlflow"': measure([PYTHON, "-c", "import mlflow"], MLFLOW_RUNS),
    }
    print("wall time of a fresh process, after one warm-up run; ratios below compare medians")
    print(f"{'command':<26} {'runs':>4} {'best s':>9} {'median s':>9} {'max s':>9}")
    for name, times in results.items():
        print(row(name, times))
    print()

    after_import, after_help = deferred_imports()
    heavy = [m for m in after_import if m in HEAVY]
    print(f"heavy modules after `import expt.cli` ({', '.join(HEAVY)}): {names(heavy)}")
    print(f"also deferred ({', '.join(ALSO_DEFERRED)}): after import: "
          f"{names([m for m in after_import if m in ALSO_DEFERRED])}; after --help: {names(after_help)}")
    print()

    cli = statistics.median(results["expt --help"])
    floor = statistics.median(results["python -c pass"])
    mlflow = statistics.median(results['python -c "import mlflow"'])
    print(f"expt --help: {cli:.3f} s (budget {BUDGET_S:.3f} s)" + ("" if cli <= BUDGET_S else "  <- over budget"))
    print(f"import mlflow / expt --help = {mlflow / cli:.2f}x")
    print(f"expt --help / python -c pass = {cli / floor:.2f}x")


if __name__ == "__main__":
    main()
