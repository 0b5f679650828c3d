"""Build the knowledge base ``expt recommend`` starts from: a portfolio of configurations over offline datasets.

    make kb                  (python -m expt.kb [--workers N] [--datasets FILE] [--portfolio FILE] [--out FILE])

Every pair goes through ``expt train`` (the default learner: 5-fold CV), into a
throwaway MLflow store, appending its record like any run; the records are then
made independent of that store (no run ids, sorted) and gzipped into the package,
so a fresh install has something to recommend from. An interrupted build continues
where it stopped (pairs already done are listed in ``done.txt`` of the build folder).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the checkout: recipes/kb/ lies beside expt/
DATASETS = ROOT / "recipes" / "kb" / "datasets.yaml"
PORTFOLIO = ROOT / "recipes" / "kb" / "portfolio.yaml"
BUILD = Path("outputs") / "kb"


def load_list(path: Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    import yaml

    entries = yaml.safe_load(path.read_text())
    if not isinstance(entries, list) or not all(isinstance(e, dict) and set(keys) <= set(e) for e in entries):
        raise SystemExit(f"{path}: expected a YAML list of mappings with {', '.join(keys)}")
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: names must be unique")
    return entries


def data_spec(entry: dict[str, Any]) -> dict[str, Any]:
    """A datasets.yaml entry as the data config it is (``name`` names the dataset in records; ``group``, related
    tables, goes into the records by :func:`compact`)."""
    from expt.core.schema import fill_data_defaults

    spec = {k: v for k, v in entry.items() if k not in ("name", "group")}
    spec["name"] = entry["name"]
    return fill_data_defaults(spec)


def pair_key(entry: dict[str, Any], config: dict[str, Any]) -> str:
    """A (dataset, configuration) pair as done.txt lists it: a changed spec or config is a new pair."""
    import hashlib

    digest = hashlib.sha1(json.dumps([data_spec(entry), config["overrides"]], sort_keys=True).encode()).hexdigest()
    return f"{entry['name']}\t{config['name']}\t{digest[:10]}"


def run_dataset(entry: dict[str, Any], portfolio: list[dict[str, Any]], build: str) -> list[tuple[str, str, float]]:
    """Every portfolio configuration whose model handles this dataset's task; returns (config, status, seconds)."""
    import warnings

    from omegaconf import OmegaConf, open_dict

    from expt.core.config import compose
    from expt.core.errors import ExptError
    from expt.core.prepare import prepare
    from expt.train import run_train

    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    build_dir = Path(build)
    done_file = build_dir / "done.txt"
    done = set(done_file.read_text().splitlines()) if done_file.is_file() else set()
    store = f"sqlite:///{(build_dir / f'mlruns-{os.getpid()}.db').resolve()}"
    out = []
    for config in portfolio:
        pair = pair_key(entry, config)
        if pair in done:
            continue
        start = time.perf_counter()
        composed = compose([*config["overrides"], f"tracking.uri={store}", "tracking.log_model=false",
                            f"tracking.records={(build_dir / 'records.jsonl').resolve()}"])
        if entry["task"] not in composed.cfg.model.tasks:
            continue
        with open_dict(composed.cfg):
            composed.cfg.data = OmegaConf.create(data_spec(entry))
        try:
            run_train(prepare(composed))
            status = "ok"
        except ExptError as exc:
            status = f"error: {exc}"
        with open(done_file, "a") as fh:
            fh.write(pair + "\n")
        out.append((config["name"], status, time.perf_counter() - start))
    return out


def _work(args: tuple[dict[str, Any], list[dict[str, Any]], str, int]) -> tuple[str, list[tuple[str, str, float]]]:
    """One dataset in a worker process, its thread pools sized to its share of the cores.

    Uncapped, each worker's OpenMP (histogram gradient boosting, sklearn's losses) and BLAS
    ran a thread per core: 2 workers kept 4+ threads spinning on 2 cores (load average 4), and
    iris's 19 configurations took 200 s; capped, pima's 19 took 32 s.
    """
    from threadpoolctl import threadpool_limits

    entry, portfolio, build, threads = args
    with threadpool_limits(limits=threads):
        return entry["name"], run_dataset(entry, portfolio, build)


def compact(raw: Path, out: Path, names: set[str], groups: dict[str, str] | None = None) -> int:
    """The build's records of the listed datasets (the latest of each pair), without the throwaway store's run
    ids, sorted, gzipped with a fixed timestamp; ``groups`` (name -> group of related tables) goes into each."""
    from expt.meta.records import RecordStore

    latest = {}
    for r in RecordStore(raw).read():
        if r["dataset"]["name"] in names:
            latest[r["dataset"]["name"], r["model"]["config_key"]] = r
    records = list(latest.values())
    for r in records:
        r["id"] = f"kb/{r['dataset']['fingerprint']}/{r['model']['config_key']}"
        r["source"] = {"kind": "kb"}
        if (groups or {}).get(r["dataset"]["name"]):
            r["dataset"]["group"] = groups[r["dataset"]["name"]]
    records.sort(key=lambda r: (r["dataset"]["name"], r["model"]["config_key"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
    with open(out, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz:
        gz.write(data)
    return len(records)


def main(argv: list[str] | None = None) -> None:
    import multiprocessing as mp

    from expt.meta.records import default_kb_path

    parser = argparse.ArgumentParser(prog="python -m expt.kb", description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--portfolio", type=Path, default=PORTFOLIO)
    parser.add_argument("--build", type=Path, default=BUILD, help="working folder (records, done list, stores)")
    parser.add_argument("--out", type=Path, default=default_kb_path())
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    args = parser.parse_args(argv)
    datasets = load_list(args.datasets, ("name", "source", "target", "task"))
    portfolio = load_list(args.portfolio, ("name", "overrides"))
    args.build.mkdir(parents=True, exist_ok=True)
    print(f"knowledge base: {len(datasets)} datasets x {len(portfolio)} configurations, {args.workers} workers, "
          f"building in {args.build}", flush=True)
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    jobs = [(entry, portfolio, str(args.build), threads) for entry in datasets]
    started, failures = time.perf_counter(), 0
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for i, (name, results) in enumerate(pool.imap_unordered(_work, jobs), 1):
            bad = [(c, s) for c, s, _ in results if s != "ok"]
            failures += len(bad)
            seconds = sum(t for _, _, t in results)
            print(f"[{i}/{len(jobs)}] {name}: {len(results) - len(bad)} configurations in {seconds:.0f} s"
                  + "".join(f"\n    {c}: {s}" for c, s in bad), flush=True)
    n = compact(args.build / "records.jsonl", args.out, {e["name"] for e in datasets},
                {e["name"]: str(e["group"]) for e in datasets if e.get("group")})
    size = args.out.stat().st_size
    print(f"{n} records -> {args.out} ({size / 1e6:.2f} MB) in {time.perf_counter() - started:.0f} s; "
          f"{failures} pair(s) failed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
