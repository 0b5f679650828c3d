"""A user-scale table (issue 26): ``expt train`` of hist_gradient_boosting on a 200,000 x 50 numeric CSV against
the plain script a careful user writes (``plain_large.py``), whole processes, the same thread cap on both sides
(``OMP_NUM_THREADS``, default 1: a plain script with OpenMP's default threads on a busy machine was seen to take
20x longer). The CSV is made here, seeded (a binary target from a linear score plus noise). Prints wall, CPU and
peak memory (largest process, and the whole tree summed) per side, medians and range over alternating rounds, and
whether both sides found the same fold accuracies.

Usage: python benchmarks/bench_large.py [ROUNDS=3] [ROWS=200000] [THREADS=1]   (~2 min a round on 2 cores)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench_process import EXPT, PYTHON, Side, _last_json, become_subreaper, expt_train_scores, report, two_sides

HERE = Path(__file__).resolve().parent


def make_csv(path: Path, rows: int, columns: int = 50, seed: int = 0) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, columns))
    score = X @ rng.normal(size=columns) / np.sqrt(columns) + rng.normal(scale=0.5, size=rows)
    table = pd.DataFrame(X, columns=[f"x{i}" for i in range(columns)])
    table["y"] = (score > 0).astype(int)
    table.to_csv(path, index=False)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    threads = sys.argv[3] if len(sys.argv) > 3 else "1"
    become_subreaper()
    env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    with tempfile.TemporaryDirectory(prefix="expt-bench-large-") as tmp:
        work = Path(tmp)
        csv = work / "large.csv"
        make_csv(csv, rows)
        print(f"{rows} x 50 numeric CSV ({csv.stat().st_size / 1e6:.0f} MB), {threads} thread(s) per pool on both "
              "sides", flush=True)
        (work / "expt").mkdir()
        (work / "plain").mkdir()
        sides = [Side("expt", [EXPT, "train", "data=file", f"data.path={csv}", "data.target=y",
                               "model=hist_gradient_boosting"], work / "expt", env,
                      lambda c, r: expt_train_scores(work / "expt" / "mlruns.db")),
                 Side("plain numpy", [PYTHON, str(HERE / "plain_large.py"), str(csv)], work / "plain", env,
                      lambda c, r: _last_json(c)["folds"])]
        costs, same = two_sides(sides, rounds)
        report(f"train-hgb-{rows} (targets: wall <= 1.05x, peak memory <= 1.2x)", sides, costs, same)


if __name__ == "__main__":
    main()
