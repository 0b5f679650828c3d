"""What a grid costs: ``expt train -m`` against the same nine cells cross-validated by hand, and against nine
separate ``expt train`` calls.

Workload (issue 16): datasets wine, iris, breast_cancer x models logistic_regression, svm, random_forest, the
default learner (5-fold stratified shuffled CV, seed 0, median imputation and standard scaling inside each fold),
accuracy. Every side is a whole process as a user runs it (interpreter start, imports, exit):

* hand: one Python script with a double loop (datasets x models) that cross-validates each cell with the same
  pipeline, folds and seeds as expt, scores accuracy, prints the fold scores, and logs nothing (no refit: the
  issue's baseline cross-validates).
* grid: ``expt train -m data=wine,iris,breast_cancer model=logistic_regression,svm,random_forest``, defaults: nine
  train runs as ``expt train`` makes them (every fold also scored on its training part and on the other metrics
  of ``learner.metrics``, out-of-fold predictions and evaluation plots, the refit model, a record) under a
  ``grid-<id>`` run, then the comparison table, tests and plots.
* grid lean: the same with ``learner.metrics=[accuracy] tracking.plots=false tracking.log_model=false``: the
  hand loop's work plus tracking, records and the comparison; what the grid itself costs.
* nine: nine ``expt train data=D model=M`` commands, one after the other (a shell loop).

Each round runs the sides in a rotating order in fresh folders holding a copy of one migrated, empty MLflow
store (a user's store usually exists; creating one costs ~2 s once). The figures are the medians of the per-round
ratios with their range, because this machine's speed drifts by up to 40% over minutes. CPU seconds (user + sys of
the processes) are printed too. Every side must get the same 45 fold scores; the script says whether they do.

Usage: bench_grid.py [ROUNDS=3] [--workers N]   (~2 min a round; --workers adds a ``-m --workers N`` side)
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASETS = ("wine", "iris", "breast_cancer")
LEAN = ["learner.metrics=[accuracy]", "tracking.plots=false", "tracking.log_model=false"]
MODELS = ("logistic_regression", "svm", "random_forest")
EXPT = str(Path(sys.executable).with_name("expt"))

HAND = r'''
import json
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

DATA = {"wine": load_wine, "iris": load_iris, "breast_cancer": load_breast_cancer}
MODELS = {
    "logistic_regression": lambda: LogisticRegression(C=1.0, max_iter=1000, random_state=0),
    "svm": lambda: SVC(C=1.0, kernel="rbf", gamma="scale"),
    "random_forest": lambda: RandomForestClassifier(n_estimators=100, max_features="sqrt", n_jobs=1, random_state=0),
}
scorer = get_scorer("accuracy")
scores = {}
for data, load in DATA.items():
    X, y = load(return_X_y=True, as_frame=True)
    y = y.to_numpy()
    folds = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(X, y))
    for model, make in MODELS.items():
        numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
        pipeline = Pipeline([("preprocess", ColumnTransformer([("numeric", numeric, list(X.columns))])),
                             ("model", make())])
        cell = []
        for train, test in folds:
            fitted = clone(pipeline).fit(X.iloc[train], y[train])
            cell.append(float(scorer(fitted, X.iloc[test], y[test])))
        scores[f"{data} {model}"] = cell
print(json.dumps(scores))
'''


def template_store(folder: Path) -> Path:
    """One migrated, empty SQLite store, copied into each round's folders."""
    from mlflow import MlflowClient

    path = folder / "template.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def timed(command: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds (user + sys of the process and everything it started) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "140"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.stdout


def fresh(root: Path, name: str, template: Path) -> Path:
    """A new folder per side and round: MLflow keeps a store open per URI in this process, so a folder reused
    after deleting its database would still read the deleted one."""
    folder = root / f"{name}-{len(list(root.glob(name + '-*')))}"
    folder.mkdir()
    shutil.copy(template, folder / "mlruns.db")
    return folder


def run_hand(root: Path, template: Path) -> tuple[float, float, dict[str, list[float]]]:
    folder = fresh(root, "hand", template)
    (folder / "hand.py").write_text(HAND)
    wall, cpu, out = timed([sys.executable, "hand.py"], folder)
    return wall, cpu, json.loads(out)


def run_grid(root: Path, template: Path, name: str, extra: list[str]) -> tuple[float, float, dict[str, list[float]]]:
    folder = fresh(root, name, template)
    wall, cpu, out = timed([EXPT, "train", "-m", f"data={','.join(DATASETS)}", f"model={','.join(MODELS)}", *extra],
                           folder)
    if name == "grid":
        (root / "grid_output.txt").write_text(out)
    return wall, cpu, grid_scores(folder)


def run_nine(root: Path, template: Path) -> tuple[float, float, dict[str, list[float]]]:
    folder = fresh(root, "nine", template)
    wall = cpu = 0.0
    for data in DATASETS:
        for model in MODELS:
            w, c, _ = timed([EXPT, "train", f"data={data}", f"model={model}"], folder)
            wall, cpu = wall + w, cpu + c
    return wall, cpu, train_scores(folder)


def train_scores(folder: Path) -> dict[str, list[float]]:
    """Each train run's fold scores (its fold runs' accuracy), keyed like the hand side."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlruns.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=10_000)
    cells = {r.info.run_id: f"{r.data.tags['expt.data']} {r.data.tags['expt.model']}" for r in runs
             if r.data.tags.get("expt.run_type") == "train"}
    scores: dict[str, list[tuple[int, float]]] = {}
    for r in runs:
        if r.data.tags.get("expt.run_type") == "fold":
            key = cells[r.data.tags["mlflow.parentRunId"]]
            scores.setdefault(key, []).append((int(r.data.tags["expt.fold"]), r.data.metrics["accuracy"]))
    return {k: [s for _, s in sorted(v)] for k, v in scores.items()}


def grid_scores(folder: Path) -> dict[str, list[float]]:
    """The grid's table as ``expt compare --grid`` reads it back (the cells' scores from MLflow)."""
    from mlflow import MlflowClient

    from expt.grid.runner import compare_grid

    grid_id = next((folder / "outputs" / "grids").iterdir()).name
    comparison, _, _ = compare_grid(MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlruns.db'}"), grid_id)
    return {f"{row} {column}": cell.scores for (row, column), cell in comparison.cells.items()}


def main() -> None:
    args = sys.argv[1:]
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else None
    rounds = int(next((a for a in args if a.isdigit() and (workers is None or a != str(workers))), "3"))
    with tempfile.TemporaryDirectory(prefix="expt-bench-grid-") as tmp:
        root = Path(tmp)
        template = template_store(root)
        sides = {"hand": lambda: run_hand(root, template), "grid": lambda: run_grid(root, template, "grid", []),
                 "grid lean": lambda: run_grid(root, template, "lean", LEAN),
                 "nine expt train": lambda: run_nine(root, template)}
        if workers:
            sides[f"grid --workers {workers}"] = lambda: run_grid(root, template, "workers", ["--workers",
                                                                                            str(workers)])
        results = rotate(sides, rounds)
        output = (root / "grid_output.txt").read_text()
    report(results, output)


def rotate(sides: dict, rounds: int) -> list[dict[str, tuple[float, float, dict]]]:
    names = list(sides)
    results = []
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        row = {}
        for name in order:
            row[name] = sides[name]()
            print(f"round {r + 1} {name:<22} {row[name][0]:7.2f} s wall {row[name][1]:7.2f} s cpu", flush=True)
        results.append(row)
    return results


def report(results: list[dict[str, tuple[float, float, dict]]], output: str) -> None:
    print("\nthe grid's output (last round):\n" + output)
    reference = results[0]["hand"][2]
    same = all(side[2] == reference for row in results for side in row.values())
    print(f"fold scores: 45 per side, {'identical on every side in every round' if same else 'DIFFERENT'}")
    if not same:
        for name, side in results[0].items():
            print(f"  {name}: {json.dumps(side[2])}")
    print(f"workload: {' x '.join([','.join(DATASETS), ','.join(MODELS)])}, 5-fold CV; medians of "
          f"{len(results)} rounds [range of per-round ratios]")
    for name in results[0]:
        walls = [row[name][0] for row in results]
        cpus = [row[name][1] for row in results]
        print(f"  {name:<22} wall {statistics.median(walls):6.2f} s  cpu {statistics.median(cpus):6.2f} s")
    pairs = [("grid lean", "hand"), ("grid", "nine expt train"),
             *((n, "hand") for n in results[0] if n.startswith("grid --workers")), ("grid", "hand")]
    for name, against in pairs:  # the last line is the figure
        ratios = [row[name][0] / row[against][0] for row in results]
        cpu = statistics.median(row[name][1] / row[against][1] for row in results)
        print(f"{name} / {against} = {statistics.median(ratios):.2f}x wall [{min(ratios):.2f}-{max(ratios):.2f}], "
              f"{cpu:.2f}x cpu")


if __name__ == "__main__":
    main()
