"""One cell of the knowledge base (a dataset x a configuration), and one job (a table and a slice of the portfolio).

Cells run through expt's own ``prepare`` (compose, validate, build the pipeline and splitter) and
``cross_validate``, not through MLflow: a tracked run cost more than most cells' fits. The subsample is written
once per table (``data/`` in the build folder, Parquet) and every configuration reads it as a ``source: file``
dataset. A cell appends its record to ``records.jsonl`` of the build folder, then its pair's line to
``done.txt``. :func:`run_job` is what a worker process of :func:`expt.grid.workers.run_jobs` runs (handed to it
by reference, so it stays a module-level function).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.kb.protocol import TASKS, Protocol, data_spec, pair_digest, pair_key

if TYPE_CHECKING:
    import numpy as np

    from expt.core.data import Dataset


def read_done(build_dir: Path) -> set[str]:
    done_file = build_dir / "done.txt"
    return set(done_file.read_text().splitlines()) if done_file.is_file() else set()


# --- the data a cell sees ------------------------------------------------------------------------------


def sample_rows(y: np.ndarray, classification: bool, n: int, seed: int, min_per_class: int) -> np.ndarray:
    """``n`` sorted row positions, seeded: stratified by class (each class keeps its share, and at least
    ``min_per_class`` rows where it has them), uniform for regression."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if not classification:
        return np.sort(rng.choice(len(y), size=n, replace=False))
    _, inverse, counts = np.unique(np.asarray(y).astype(str), return_inverse=True, return_counts=True)
    share = counts * n / len(y)
    quota = np.minimum(counts, np.maximum(np.floor(share).astype(int), min_per_class))
    while quota.sum() < n:  # the largest remainders first, among classes with rows left
        room = np.where(quota < counts, share - quota, -np.inf)
        quota[int(np.argmax(room))] += 1
    while quota.sum() > n:  # the floors lifted rare classes: take back from the largest
        quota[int(np.argmax(np.where(quota > min_per_class, quota, -1)))] -= 1
    picks = [rng.choice(np.flatnonzero(inverse == k), size=int(q), replace=False) for k, q in enumerate(quota)]
    return np.sort(np.concatenate(picks))


@dataclass
class Table:
    """A dataset ready for its cells: the whole table (identity, meta-features) and the rows the cells see."""

    entry: dict[str, Any]
    dataset: Dataset  # the whole table
    path: Path  # the rows the cells see, as Parquet
    n_used: int
    features: dict[str, float] | None = None

    def spec(self) -> dict[str, Any]:
        from expt.core.schema import fill_data_defaults

        return fill_data_defaults({"name": self.entry["name"], "source": "file", "path": str(self.path),
                                   "target": self.dataset.target, "task": self.dataset.task})


def load_table(entry: dict[str, Any], build_dir: Path, protocol: Protocol, *, features: bool = True) -> Table:
    """Load the dataset as ``expt train`` would, write the rows its cells see (once), and its meta-features."""
    import warnings

    from expt.core.data import load_dataset
    from expt.core.schema import DATA, validate

    spec = data_spec(entry)
    validate(spec, DATA, "data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "dropped N rows whose target is missing": DATASETS.md says so
        full = load_dataset(spec)
    cache = build_dir / "data"
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"{entry['name']}-{full.fingerprint}"
    used = protocol.rows_used(full.n_rows)
    path = cache / f"{stem}-{used}-{protocol.seed}-{protocol.folds}.parquet"  # folds: the rarest classes' floor
    if not path.is_file():
        frame = full.X
        if used < full.n_rows:
            index = sample_rows(full.y, full.task == "classification", used, protocol.seed, protocol.folds)
            frame, y = full.X.iloc[index].reset_index(drop=True), full.y[index]
        else:
            y = full.y
        frame = frame.copy()
        frame[full.target] = y
        _atomic_write(path, lambda p: frame.to_parquet(p, index=False))
    table = Table(entry, full, path, used)
    if features:
        table.features = _features(full, cache / f"{stem}-{protocol.seed}.features.json", protocol.seed)
    return table


def _features(dataset: Dataset, path: Path, seed: int) -> dict[str, float]:
    """The whole table's meta-features (a query's are the whole table's too), computed once per build."""
    from expt.meta.records import features_of

    if path.is_file():
        return json.loads(path.read_text())
    out = features_of(dataset, seed)
    _atomic_write(path, lambda p: p.write_text(json.dumps(out, sort_keys=True)))
    return out


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Two workers may write the same file: each writes its own temporary file and renames it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


# --- cells -----------------------------------------------------------------------------------------


def runs_on(config: dict[str, Any], model_tasks: Collection[str], task: str) -> bool:
    return task in model_tasks and task in config.get("tasks", TASKS)


def run_cell(table: Table, config: dict[str, Any], protocol: Protocol, build_dir: Path) -> tuple[str, float] | None:
    """Evaluate one configuration on one table and append its record; None where its model does not take the task.

    Returns (status, seconds): ``ok``, ``ok (k of n folds failed)``, or ``error: ...`` for a pair that cannot be
    evaluated (bad config, data the model refuses, every fold failed), which is done and not retried.
    """
    import random

    import numpy as np
    from omegaconf import OmegaConf, open_dict

    from expt.core.config import compose
    from expt.core.cv import cross_validate
    from expt.core.errors import ExptError
    from expt.core.prepare import prepare
    from expt.meta.model_features import model_features
    from expt.meta.records import RecordStore, fitted_model, make_record, runnable_config

    start = time.perf_counter()
    entry, data = table.entry, table.dataset
    try:
        composed = compose([*config["overrides"], *protocol.overrides()])
        if not runs_on(config, composed.cfg.model.tasks, data.task):
            return None
        with open_dict(composed.cfg):
            composed.cfg.data = OmegaConf.create(table.spec())
        prepared = prepare(composed)
        random.seed(protocol.seed)
        np.random.seed(protocol.seed)
        result = cross_validate(prepared.pipeline, prepared.dataset.X, prepared.dataset.y, cv=prepared.splitter,
                                scoring=prepared.scorer, metric=prepared.metric, return_models=True)
    except ExptError as exc:
        return f"error: {exc}", time.perf_counter() - start
    fits = [f.fit_time for f in result.folds if f.error is None]
    record = make_record(
        record_id=f"kb-build/{pair_digest(entry, config, protocol)}", dataset=data,
        meta_features=table.features or {}, model=model_features(prepared.config, fitted_model(result)),
        config=runnable_config(prepared.config, prepared.choices), metric=prepared.metric, scores=result.scores,
        evaluation=protocol.evaluation(data.task, data.n_rows), seed=protocol.seed,
        source={"kind": "kb", "config": config["name"]}, protocol=protocol.record(data.task, data.n_rows),
        fit_seconds=float(np.mean(fits)) if fits else None)
    RecordStore(build_dir / "records.jsonl").append([record])
    failed = result.n_failed
    return ("ok" if not failed else f"ok ({failed} of {len(result.folds)} folds failed)"), time.perf_counter() - start


def run_dataset(entry: dict[str, Any], portfolio: list[dict[str, Any]], build: str,
                protocol: Protocol = Protocol(), deadline: float | None = None) -> list[tuple[str, str, float]]:
    """The portfolio's configurations on one dataset, those not done yet; returns (config, status, seconds).
    Past ``deadline`` (epoch seconds) no further cell starts: the build's ``--stop-after``."""
    import warnings

    warnings.filterwarnings("ignore")  # the build prints statuses; a fold's warnings would interleave
    build_dir = Path(build)
    done = read_done(build_dir)
    todo = [c for c in portfolio if pair_key(entry, c, protocol) not in done]
    if not todo:
        return []
    try:
        table = load_table(entry, build_dir, protocol)
    except Exception as exc:  # noqa: BLE001 - a dataset that cannot load fails its pairs, not the build
        return [(c["name"], f"error: dataset: {type(exc).__name__}: {exc}", 0.0) for c in todo]
    out = []
    for config in todo:
        if deadline is not None and time.time() > deadline:
            break
        try:
            cell = run_cell(table, config, protocol, build_dir)
        except Exception as exc:  # noqa: BLE001 - a bug or a crash in one cell: said, and retried next build
            out.append((config["name"], f"failed (retried next build): {type(exc).__name__}: {exc}", 0.0))
            continue
        if cell is None:
            continue
        status, seconds = cell
        with open(build_dir / "done.txt", "a") as fh:
            fh.write(pair_key(entry, config, protocol) + "\n")
        out.append((config["name"], status, seconds))
    return out


def run_job(job: dict[str, Any]) -> list[tuple[str, str, float]]:
    """One job in a worker process of :func:`expt.grid.workers.run_jobs`: a table and a slice of the portfolio."""
    return run_dataset(job["entry"], job["configs"], job["build"], job["protocol"], job.get("deadline"))
