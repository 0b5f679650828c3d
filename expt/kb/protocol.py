"""The knowledge base's one protocol, and its recipes (recipes/kb/datasets.yaml, recipes/kb/portfolio.yaml).

One protocol for every cell (dataset x configuration), recorded in each record's ``protocol``:

- the dataset as ``expt train`` loads it (rows with a missing target dropped, ``drop`` columns dropped);
- at most ``--max-rows`` rows (default 3,000): a larger table is cut to a seeded subsample, stratified by
  class for classification (every class keeps at least ``folds`` rows), uniform for regression;
- ``--folds``-fold CV (default 3) repeated ``--repeats`` times (default 2, each repeat shuffled anew),
  stratified for classification, seeded (0): the same folds for every configuration of a dataset, since the rows
  and the seed are the same. Two repeats (issue 24) halve the variance of a cell's mean score roughly, and the
  per-fold scores they record let the evaluation estimate the noise of a difference between configurations;
- the default learner (median / most-frequent imputation, standard scaling, one-hot encoding, 50 levels at
  most) and metric (accuracy, R^2), every pipeline step fitted inside the fold.

The record's ``dataset`` block and meta-features are the whole table's, as a query's are (so ``expt recommend``
still recognizes the table by its fingerprint and leaves its own records out); its ``protocol`` says what the
scores saw: ``{"kind": "cv", "folds": 3, "repeats": 2, "max_rows": 3000, "n_rows": <rows used>, "subsample":
null | "stratified" | "random", "seed": 0}``. An uncapped table's protocol is exactly ``expt train
learner.cv.folds=3 learner.cv.repeats=2``'s.

A (dataset, configuration) pair is known by its :func:`pair_key`: a changed dataset spec, configuration or
protocol is a new pair.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the checkout: recipes/kb/ lies beside expt/
DATASETS = ROOT / "recipes" / "kb" / "datasets.yaml"
PORTFOLIO = ROOT / "recipes" / "kb" / "portfolio.yaml"
BUILD = Path("outputs") / "kb"
TASKS = ("classification", "regression")


@dataclass(frozen=True)
class Protocol:
    """How every cell is evaluated (see the module docstring)."""

    folds: int = 3
    max_rows: int = 3000
    seed: int = 0
    repeats: int = 2

    def rows_used(self, n_rows: int) -> int:
        return min(n_rows, self.max_rows)

    def record(self, task: str, n_rows: int) -> dict[str, Any]:
        """The record's ``protocol``: what the cell's scores saw."""
        used = self.rows_used(n_rows)
        subsample = None if used == n_rows else "stratified" if task == "classification" else "random"
        return {"kind": "cv", "folds": self.folds, "repeats": self.repeats, "max_rows": self.max_rows,
                "n_rows": used, "subsample": subsample, "seed": self.seed}

    def evaluation(self, task: str, n_rows: int) -> str:
        used = self.rows_used(n_rows)
        cv = f"{self.folds}-fold CV" + (f" x{self.repeats}" if self.repeats > 1 else "")
        if used == n_rows:
            return cv
        kind = "stratified" if task == "classification" else "random"
        return f"{cv} on a {kind} subsample of {used} of {n_rows} rows (seed {self.seed})"

    def overrides(self) -> list[str]:
        """Appended after a configuration's own overrides: the protocol wins over anything it sets."""
        return [f"seed={self.seed}", f"learner.cv.folds={self.folds}", f"learner.cv.repeats={self.repeats}",
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
    tables, goes into the records by :func:`expt.kb.build.compact`)."""
    from expt.core.schema import fill_data_defaults

    spec = {k: v for k, v in entry.items() if k not in ("name", "group")}
    spec["name"] = entry["name"]
    return fill_data_defaults(spec)


def pair_digest(entry: dict[str, Any], config: dict[str, Any], protocol: Protocol = Protocol()) -> str:
    fields = asdict(protocol)
    if fields["repeats"] == 1:  # the protocol before repeats existed: its pairs keep their keys
        del fields["repeats"]
    payload = [data_spec(entry), config["overrides"], sorted(config.get("tasks", TASKS)), fields]
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]  # noqa: S324 - a key, not a secret


def pair_key(entry: dict[str, Any], config: dict[str, Any], protocol: Protocol = Protocol()) -> str:
    """A (dataset, configuration) pair as done.txt lists it: a changed spec, config or protocol is a new pair."""
    return f"{entry['name']}\t{config['name']}\t{pair_digest(entry, config, protocol)}"
