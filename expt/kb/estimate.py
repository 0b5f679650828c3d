"""Project the knowledge-base build's wall time (``python -m expt.kb --estimate CELLS``).

:func:`estimate` times a stratified random sample of cells on one thread, each run as the build runs it
(:func:`expt.kb.cells.run_cell`), and writes the projection to recipes/kb/estimate.json; :func:`render_estimate`
is its section of DATASETS.md, which :mod:`expt.kb.describe` writes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from expt.kb.build import CHUNK, plan_pairs
from expt.kb.cells import load_table, run_cell
from expt.kb.protocol import ROOT, Protocol

ESTIMATE = ROOT / "recipes" / "kb" / "estimate.json"
BUCKETS = (500, 1500)  # the estimate's strata by rows a cell sees: <=500, 501-1500, >1500
MANY_CLASSES = 10  # the estimate times every cell of a table with this many classes on >1500 rows
Stratum = tuple[str, str]  # (model family, rows bucket)


def estimate(datasets: list[dict[str, Any]], portfolio: list[dict[str, Any]], protocol: Protocol, n_cells: int,
             build_dir: Path, workers: int, out: Path = ESTIMATE, seed: int = 0) -> dict[str, Any]:
    """Time a stratified random sample of cells on one thread (CPU seconds) and project the build's wall time
    (written to ``out``; DATASETS.md shows it).

    Strata: family x rows the cells see. Tables whose cost no stratum mean represents (classification with
    ``MANY_CLASSES`` classes or more on over 1,500 rows: gradient boosting grows a tree per class and round) are a
    certainty stratum: every one of their cells is timed and counted as measured.
    """
    import math
    import tempfile
    import warnings

    import numpy as np

    from expt.grid.jobs import cap_threads

    warnings.filterwarnings("ignore")
    load = os.getloadavg()
    cells = [(p.entry, p.config) for p in plan_pairs(datasets, portfolio, protocol) if p.skip is None]
    print(f"loading {len(datasets)} datasets for the rows their cells see ...", flush=True)
    tables = {e["name"]: load_table(e, build_dir, protocol, features=False) for e in datasets}
    sizes = {name: table.n_used for name, table in tables.items()}
    certain = {name for name, t in tables.items() if t.dataset.task == "classification" and t.n_used > 1500
               and (t.dataset.n_classes or 0) >= MANY_CLASSES}
    labels = [f"<={BUCKETS[0]}", f"{BUCKETS[0] + 1}-{BUCKETS[1]}", f">{BUCKETS[1]}"]
    strata: dict[Stratum, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for e, c in cells:
        if e["name"] not in certain:
            key = (c["name"].split("_")[0], labels[sum(sizes[e["name"]] > b for b in BUCKETS)])
            strata.setdefault(key, []).append((e, c))
    keys = sorted(strata)
    alloc = _allocate(strata, sizes, n_cells)
    rng = np.random.default_rng(seed)
    sample = [(k, *strata[k][i]) for k in keys for i in sorted(rng.choice(len(strata[k]), alloc[k], replace=False))]
    sample += [(("certain", name), e, c) for name in sorted(certain) for e, c in cells if e["name"] == name]
    print(f"{len(cells)} cells: {len(cells) - sum(e['name'] in certain for e, _ in cells)} in {len(keys)} strata "
          f"(sampled), the {sum(e['name'] in certain for e, _ in cells)} of {', '.join(sorted(certain)) or 'none'} "
          f"in full; timing {len(sample)} on one thread", flush=True)
    timed, first, again = [], {}, {}
    with tempfile.TemporaryDirectory(prefix="expt-kb-estimate-") as scratch, cap_threads(1):
        for i, (k, entry, config) in enumerate(sample, 1):
            name = entry["name"]
            if name not in first:  # the per-dataset work from scratch (meta-features included), then as a later
                start = time.process_time()  # slice of the table finds it (sample and features cached)
                load_table(entry, Path(scratch), protocol)
                first[name] = time.process_time() - start
                start = time.process_time()
                tables[name] = load_table(entry, Path(scratch), protocol)
                again[name] = time.process_time() - start
            cpu = time.process_time()  # CPU seconds: what the build's workers need of their cores, whatever
            cell = run_cell(tables[name], config, protocol, Path(scratch))  # else runs on this machine meanwhile
            cpu = time.process_time() - cpu
            status, wall_seconds = cell if cell else ("skipped", 0.0)
            timed.append({"stratum": list(k), "dataset": name, "config": config["name"], "rows": sizes[name],
                          "seconds": round(cpu, 3), "wall_seconds": round(wall_seconds, 3), "status": status})
            print(f"[{i}/{len(sample)}] {name} ({sizes[name]} rows) x {config['name']}: {cpu:.2f} CPU s, "
                  f"{wall_seconds:.2f} s" + ("" if status.startswith("ok") else f" {status}"), flush=True)
    sampled = [t for t in timed if t["stratum"][0] != "certain"]
    pooled_cv = float(np.std([t["seconds"] for t in sampled]) / np.mean([t["seconds"] for t in sampled]))
    rows_out, cell_total, variance = [], 0.0, 0.0
    for k in keys:
        times = np.array([t["seconds"] for t in sampled if tuple(t["stratum"]) == k])
        n_h, N_h, mean = len(times), len(strata[k]), float(times.mean())
        sd = float(times.std(ddof=1)) if n_h > 1 else pooled_cv * mean
        cell_total += N_h * mean
        variance += N_h**2 * sd**2 / n_h * (1 - n_h / N_h)
        rows_out.append({"family": k[0], "bucket": k[1], "cells": N_h, "sampled": n_h, "mean": round(mean, 3),
                         "sd": round(sd, 3)})
    for name in sorted(certain):
        whole = [t["seconds"] for t in timed if t["stratum"] == ["certain", name]]
        cell_total += sum(whole)
        rows_out.append({"family": f"all of {name}", "bucket": f"{sizes[name]} rows, "
                         f"{tables[name].dataset.n_classes} classes", "cells": len(whole), "sampled": len(whole),
                         "mean": round(float(np.mean(whole)), 3), "sd": round(float(np.std(whole)), 3)})
    slices = max(1, -(-len(portfolio) // CHUNK))
    per_dataset, reload = float(np.mean(list(first.values()))), float(np.mean(list(again.values())))
    overhead = len(datasets) * (per_dataset + (slices - 1) * reload)
    contention, se = 1.15, math.sqrt(variance)

    def wall(cpu_seconds: float) -> float:
        return cpu_seconds / workers * contention / 60

    projection = {
        "n_cells": len(cells), "workers": workers, "contention": contention,
        "cell_hours": cell_total / 3600, "cell_hours_low": max(0.0, cell_total - 2 * se) / 3600,
        "cell_hours_high": (cell_total + 2 * se) / 3600, "dataset_seconds": per_dataset, "reload_seconds": reload,
        "overhead_hours": overhead / 3600, "wall_minutes": wall(cell_total + overhead),
        "wall_minutes_low": wall(max(0.0, cell_total - 2 * se) + overhead),
        "wall_minutes_high": wall(cell_total + 2 * se + overhead)}
    result = {"protocol": asdict(protocol), "n_datasets": len(datasets), "n_configs": len(portfolio),
              "requested": n_cells, "n_sampled": len(sampled), "n_certain": len(timed) - len(sampled),
              "certain": sorted(certain), "buckets": labels, "measured": time.strftime("%Y-%m-%d"),
              "loadavg": [round(x, 2) for x in (load[0], os.getloadavg()[0])], "projection": projection,
              "strata": rows_out, "cells": timed}
    out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"projected: {projection['cell_hours']:.2f} CPU h of cells (+-{2 * se / 3600:.2f}) + "
          f"{projection['overhead_hours']:.2f} CPU h per-dataset work -> about {projection['wall_minutes']:.0f} min "
          f"on {workers} workers ({projection['wall_minutes_low']:.0f}-{projection['wall_minutes_high']:.0f}); "
          f"written to {out}", flush=True)
    return result


def _allocate(strata: dict[Stratum, list[tuple[dict[str, Any], dict[str, Any]]]], sizes: dict[str, int],
              n_cells: int) -> dict[Stratum, int]:
    """Cells to time per stratum: two at least (each stratum's spread is its own), the rest in proportion to the
    stratum's cells x rows (where the time goes), by largest remainders."""
    keys = sorted(strata)
    alloc = {k: min(2, len(strata[k])) for k in keys}
    weight = {k: sum(sizes[e["name"]] for e, _ in strata[k]) for k in keys}
    extra = max(0, n_cells - sum(alloc.values()))
    shares = {k: extra * weight[k] / sum(weight.values()) for k in keys}
    for k in keys:
        alloc[k] += int(shares[k])
    for k in sorted(keys, key=lambda k: int(shares[k]) - shares[k])[:extra - sum(int(v) for v in shares.values())]:
        alloc[k] += 1
    return {k: min(alloc[k], len(strata[k])) for k in keys}


def render_estimate(estimate: dict[str, Any] | None, protocol: Protocol, n_datasets: int, n_configs: int) -> list[str]:
    if not estimate:
        return ["## Build time", "", "No estimate on record: run `python -m expt.kb --estimate 120`.", ""]
    p = estimate["projection"]
    stale = (estimate.get("protocol") != asdict(protocol) or estimate.get("n_datasets") != n_datasets
             or estimate.get("n_configs") != n_configs)
    lines = [
        "## Build time",
        "",
        f"**About {p['wall_minutes']:.0f} minutes on {p['workers']} workers** (95% interval "
        f"{p['wall_minutes_low']:.0f}-{p['wall_minutes_high']:.0f}), projected by `python -m expt.kb --estimate "
        f"{estimate['requested']}` ({estimate['measured']}; the load average was {estimate['loadavg'][0]:.1f} at its "
        f"start and {estimate['loadavg'][1]:.1f} at its end on these 2 cores)"
        + (" for an older dataset list, portfolio or protocol: rerun it." if stale else ".") + " Method:",
        "",
        f"- The {p['n_cells']:,} cells (datasets x configurations whose model takes the task) are split into "
        f"strata by family and by the rows a cell sees ({', '.join(estimate['buckets'])}); "
        f"{estimate['n_sampled']} cells are drawn at random, two at least per stratum and the rest in proportion "
        "to each stratum's cells x rows, and each is run as the build runs it (compose, prepare, 3-fold CV, "
        "record) on one thread, and its CPU time is taken (its wall time too, in estimate.json: under other "
        "processes' load the wall time is longer, the CPU time is what the build's workers need). Tables with "
        f"{MANY_CLASSES} classes or more on over {BUCKETS[1]:,} rows ({', '.join(estimate['certain']) or 'none'}) "
        "cost far more than their stratum's mean (gradient boosting grows a tree per class and round): all "
        f"{estimate['n_certain']} of their cells are timed and counted as measured.",
        f"- Each stratum's total is its cell count times its sampled mean; their sum is {p['cell_hours']:.2f} "
        f"CPU hours ({p['cell_hours_low']:.2f}-{p['cell_hours_high']:.2f}: two standard errors of the "
        "stratified estimate). Per dataset, loading, subsampling and meta-features add "
        f"{p['dataset_seconds']:.2f} s (and {p['reload_seconds']:.2f} s for each later slice of the table), "
        f"measured on the sampled tables: {p['overhead_hours']:.2f} CPU hours in all.",
        f"- Wall time = CPU time / {p['workers']} workers x {p['contention']:.2f}: an assumed allowance (not "
        "measured) for two workers sharing memory bandwidth and for the last job's tail (jobs start largest table "
        f"first, in slices of {CHUNK} configurations, so the tail is about one slice of a small table). On a "
        "machine other processes are using the build takes longer in proportion.",
        "",
        "| stratum | cells | timed | mean CPU s | total CPU min |",
        "|---|---|---|---|---|",
    ]
    for h in estimate["strata"]:
        lines.append(f"| {h['family']} {h['bucket']} | {h['cells']} | {h['sampled']} | {h['mean']:.2f} | "
                     f"{h['cells'] * h['mean'] / 60:.1f} |")
    return [*lines, ""]
