"""What tracking costs in ``expt sweep`` against the same nested CV written by hand.

Workload (issue 3): breast_cancer, 5 outer × 3 inner stratified folds, 20 TPE trials
per outer fold plus the final search on all data (both sides do it), for logistic
regression and for a random forest.

* hand-written: Optuna with in-memory storage, the same pipeline expt builds
  (median imputation and standard scaling inside each fold), the same folds and
  seeds, best trial refit on the outer training part; nothing logged, nothing stored.
  It runs twice per pair: with the libraries' default threads (what people write),
  and with every thread pool at one thread (``threadpoolctl``), as expt runs its
  trials, which can be faster here for small fits; both ratios are printed.
* expt: ``run_sweep`` in process: a journal-file Optuna storage, and the MLflow run
  tree (sweep → outer fold → trial, plots, the final model) written by the sink
  process into a SQLite store.

Both sides run in one process after their imports; the MLflow store already exists
(a user's usually does), and a first-use figure with a new store is printed too.
Both sides must find the same outer scores; the script says whether they do.

This machine's speed drifts by up to 1.5x over minutes (the same hand-written loop
took 11.7 s, then 8.5 s, then 7.5 s), so the sides run back to back in rounds,
in rotating order, and the figure is the median of the per-round ratios. CPU
seconds are printed too (expt's counting its MLflow sink process): the wall-clock
ratio is what a user waits for on an idle 2-core machine; the CPU ratio is what
tracking costs when no core is idle.

Usage: bench_sweep_overhead.py [ROUNDS=3] [MODEL ...]   (~1.5 min per LR round, ~7 min per RF round)
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

OUTER, INNER, TRIALS, SEED = 5, 3, 20, 0
MODELS = {
    "logistic_regression": ("sklearn.linear_model.LogisticRegression",
                            {"C": ("float", 1e-3, 1e3, True)}, {"max_iter": 1000, "random_state": SEED}),
    "random_forest": ("sklearn.ensemble.RandomForestClassifier",
                      {"n_estimators": ("int", 20, 300, True), "max_depth": ("int", 2, 32, True),
                       "min_samples_leaf": ("int", 1, 10, False), "max_features": ("float", 0.1, 1.0, False)},
                      {"n_jobs": 1, "random_state": SEED}),
}


def hand_written(model: str, one_thread: bool = False) -> list[float]:
    """Nested CV as a careful person writes it with sklearn and Optuna, untracked."""
    if one_thread:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            return hand_written(model)
    import importlib

    import numpy as np
    import optuna
    from sklearn.base import clone
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_breast_cancer
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import StandardScaler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.astype(float)
    y = y.to_numpy()
    target, space, fixed = MODELS[model]
    module, cls = target.rsplit(".", 1)
    estimator_cls = getattr(importlib.import_module(module), cls)
    scorer = get_scorer("accuracy")

    def pipeline(params: dict) -> Pipeline:
        pre = ColumnTransformer([("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                                  list(X.columns))], verbose_feature_names_out=False)
        return Pipeline([("preprocess", pre), ("model", estimator_cls(**fixed, **params))])

    def search(train: np.ndarray, index: int) -> dict:
        Xt, yt = X.iloc[train], y[train]
        inner = StratifiedKFold(INNER, shuffle=True, random_state=SEED)

        def objective(trial: optuna.Trial) -> float:
            params = {}
            for name, (kind, low, high, log) in space.items():
                suggest = trial.suggest_int if kind == "int" else trial.suggest_float
                params[name] = suggest(f"model.estimator.{name}", low, high, log=log)
            scores = []
            for step, (a, b) in enumerate(inner.split(Xt, yt)):
                fitted = clone(pipeline(params)).fit(Xt.iloc[a], yt[a])
                scores.append(scorer(fitted, Xt.iloc[b], yt[b]))
                trial.report(scores[-1], step)
            return float(np.mean(scores))

        sampler = optuna.samplers.TPESampler(seed=SEED * 1_000_003 + index * 1009)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(objective, n_trials=TRIALS)
        return {k.rsplit(".", 1)[1]: v for k, v in study.best_params.items()}

    outer = StratifiedKFold(OUTER, shuffle=True, random_state=SEED)
    scores = []
    for k, (train, test) in enumerate(outer.split(X, y)):
        fitted = pipeline(search(train, k)).fit(X.iloc[train], y[train])
        scores.append(float(scorer(fitted, X.iloc[test], y[test])))
    pipeline(search(np.arange(len(y)), OUTER)).fit(X, y)
    return scores


def with_expt(model: str, workdir: Path, store: str, run: int) -> list[float]:
    from expt.core.config import compose
    from expt.sweep.runner import SweepOptions, run_sweep

    composed = compose(["data=breast_cancer", f"model={model}", f"search.n_trials={TRIALS}",
                        f"search.outer_folds={OUTER}", f"search.inner_folds={INNER}", f"tracking.uri={store}"])
    _, result = run_sweep(composed, SweepOptions(sweep_id=f"bench-{model}-{run}",
                                                 storage=str(workdir / f"optuna-{model}-{run}.journal")))
    return result["outer"]


def timed(fn, *args) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds (this process and the children it waited for: expt's sink), result."""
    import resource

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    wall, cpu0 = time.perf_counter(), cpu()
    out = fn(*args)
    return time.perf_counter() - wall, cpu() - cpu0, out


def main() -> None:
    import logging
    import os
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 3  # rounds: hand, expt, hand with one thread
    models = sys.argv[2:] or list(MODELS)
    with tempfile.TemporaryDirectory(prefix="expt-bench-") as tmp:
        workdir = Path(tmp)
        store = f"sqlite:///{workdir / 'mlruns.db'}"
        first, _, _ = timed(with_expt, "logistic_regression", workdir, store, 0)
        print(f"first expt sweep in this process, new MLflow store (imports, store creation): {first:.2f} s")
        hand_written("logistic_regression")  # the same warm-up for the other side
        for model in models:
            rows, same = [], True
            for r in range(pairs):
                sides = [("hand", hand_written, (model,)), ("expt", with_expt, (model, workdir, store, r + 1)),
                         ("hand1", hand_written, (model, True))]
                got = {}
                for name, fn, args in sides[r % 3:] + sides[:r % 3]:  # rotate who goes first
                    got[name] = timed(fn, *args)
                for name in ("hand", "hand1"):
                    same &= all(abs(x - y) < 1e-12 for x, y in zip(got[name][2], got["expt"][2], strict=True))
                (hw, hc, _), (ew, ec, _), (h1, _, _) = got["hand"], got["expt"], got["hand1"]
                rows.append((hw, ew, h1, ew / hw, ew / h1, ec / hc))
                print(f"  {model} round {r + 1}: hand {hw:.2f} s (one thread {h1:.2f} s), expt {ew:.2f} s, "
                      f"ratio {ew / hw:.3f} (against one thread {ew / h1:.3f}); CPU hand {hc:.2f} s, expt {ec:.2f} s")
            med = [statistics.median(col) for col in zip(*rows, strict=True)]
            ratios = [row[3] for row in rows]
            print(f"{model}: hand-written {med[0]:.2f} s (one thread {med[2]:.2f} s), expt sweep {med[1]:.2f} s "
                  f"(medians of {pairs} runs each); round ratios {min(ratios):.3f}-{max(ratios):.3f}; "
                  f"outer scores {'identical' if same else 'DIFFER'}")
            extra = statistics.median(row[1] - row[0] for row in rows)
            print(f"expt sweep - hand-written, median per round ({model}): {extra:+.2f} s "
                  "(the fixed cost, whatever the workload)")
            print(f"CPU seconds, expt sweep (with its sink) / hand-written ({model}) = {med[5]:.2f}x")
            print(f"expt sweep / hand-written with one thread per pool ({model}) = {med[4]:.2f}x")
            print(f"expt sweep / hand-written nested CV ({model}) = {med[3]:.2f}x")


if __name__ == "__main__":
    main()
