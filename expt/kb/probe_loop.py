"""The probe's loop (:mod:`expt.kb.probe`): its candidates picked, written and run as one-cell grids, its state
file, and its writes on the store (run in the writer's process, as the grid's are).

A candidate is done when MLflow holds its FINISHED run, as a grid's cell is; the state file
(``outputs/probes/<id>/probe.json``) holds what MLflow cannot: the options, the query's meta-features and the
candidates in the order they were picked, each saved before its run starts.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.errors import ExptError, UsageError
from expt.grid.cells import CellProgress, cell_tags, run_cell
from expt.grid.plan import GridPlan, PlannedCell, plan_grid
from expt.grid.results import cell_runs, finished_cells
from expt.grid.runner import GridProgress, close_grid, make_spec
from expt.grid.spec import Cell
from expt.tracking.tags import (
    CANDIDATE_TAG,
    CELL_TAG,
    DATA_TAG,
    GRID_TAG,
    KIND_TAG,
    PROBE_RUN,
    PROBE_TAG,
    RUN_TYPE_TAG,
    TRAIN_RUN,
)

if TYPE_CHECKING:
    from expt.core.cv import FoldResult
    from expt.core.data import Dataset
    from expt.grid.stats import Comparison
    from expt.tracking.client import Tracker
    from expt.train.writer import Writer

OUTPUTS = Path("outputs") / "probes"
STATE = "probe.json"


@dataclass
class ProbeOptions:
    """What ``expt recommend --probe`` was asked: kept in the state file, so that ``--resume`` needs nothing else."""

    dataset: str  # the dataset.yaml, absolute
    k: int
    budget_seconds: float | None = None
    metric: str | None = None
    families: list[str] | None = None
    max_fit_seconds: float | None = None
    include_self: bool = False
    records: list[str] = field(default_factory=list)
    kb: bool = True
    seed: int = 0
    overrides: list[str] = field(default_factory=list)  # the user's: the learner, the store
    out: str | None = None  # where the ranked configs go (default: the probe's folder, best/)
    cluster: str | None = None  # a Dask scheduler's address: each candidate runs on its workers


@dataclass
class Candidate:
    n: int  # its place in the order picked, from 1
    key: str  # the configuration's key in the records
    column: dict[str, Any]  # the records' configuration (key, model, runnable config)
    label: str  # model option and the parameters that differ from its defaults
    path: str  # the config its run ran
    status: str = "pending"  # pending | done | failed
    score: float | None = None
    sd: float | None = None
    fit_seconds: float | None = None  # mean per fold
    run_id: str | None = None
    reason: str | None = None
    p_vs_best: float | None = None
    entry: dict[str, Any] | None = None  # its cell in the probe's spec (grid.json)


def probe_dir(probe_id: str) -> Path:
    return OUTPUTS / probe_id


class Probe:
    """One probe: its candidates, the table it picks from, and the loop that runs them."""

    def __init__(self, probe_id: str, options: ProbeOptions, spec: dict[str, Any], data: Dataset) -> None:
        self.id, self.options, self.spec, self.data = probe_id, options, spec, data
        self.candidates: list[Candidate] = []
        self.spent = 0.0
        self.run_id = ""
        self.tracking: dict[str, Any] = {}
        self.features: dict[str, float] = {}
        self.table: Any = None
        self.allowed: Any = None
        self.notes: list[str] = []
        self.not_started, self.ran = 0, 0
        self.next_pick: str | None = None

    # --- the table and the picks ---------------------------------------------------------------------------

    def learn(self, found: list[dict[str, Any]]) -> None:
        """The table the candidates come from, as ``expt recommend`` builds it, and what the options allow."""
        from expt.meta.advise import constraints
        from expt.meta.recommend import build_table, check_records

        o, data = self.options, self.data
        check_records(found, data.task)
        exclude = () if o.include_self else (data.fingerprint,)
        self.table = build_table(found, data.task, metric=o.metric, exclude=exclude)
        if len(self.table.datasets) < 2:
            raise UsageError(f"records of {len(self.table.datasets)} other {data.task} dataset(s) only: a probe "
                             "picks from at least 2; run more experiments or pass --records")
        self.allowed, notes = constraints(self.table, families=o.families, max_fit_seconds=o.max_fit_seconds,
                                          n_rows=data.n_rows)
        self.notes = notes

    def pick(self) -> int | None:
        """The next configuration given the scores so far; None when there is none left to try."""
        import numpy as np

        index = {c["key"]: j for j, c in enumerate(self.table.configs)}
        measured = {index[c.key]: c.score for c in self.candidates if c.status == "done" and c.key in index
                    and c.score is not None and not math.isnan(c.score)}
        allowed = np.array(self.allowed, dtype=bool)
        allowed[[index[c.key] for c in self.candidates if c.key in index and c.status == "failed"]] = False
        from expt.meta.adaptive import next_candidate
        from expt.meta.recommend import query_vector

        j = next_candidate(self.table, query_vector(self.table, self.features), measured, allowed)
        if j is not None and self.table.configs[j]["key"] in {c.key for c in self.candidates}:
            self.notes.append("the picker offered a configuration already tried; the probe stopped there")
            return None
        return j

    def add(self, j: int) -> Candidate:
        """Candidate ``j`` with its config written, ready to run (the state is saved before its run starts)."""
        from expt.meta.advise import key_params

        column = self.table.configs[j]
        model = column["model"]
        option = column.get("config", {}).get("model_option", model["name"])
        n = len(self.candidates) + 1
        path = write_config(column, self.spec, self.data, probe_dir(self.id) / "candidates", n,
                            f"# Candidate {n} of probe {self.id} (`expt recommend --probe`) for {self.data.name}.",
                            self.table.metric)
        cand = Candidate(n, column["key"], column, f"{option} {key_params(model, self.data.task)}", str(path))
        self.candidates.append(cand)
        return cand

    # --- running -------------------------------------------------------------------------------------------

    def plan(self, cand: Candidate) -> GridPlan:
        """The candidate as a one-cell grid plan, named by its place in the probe."""
        plan = plan_grid("train", [f"conf={cand.path}", *self.overrides()])
        c = plan.cells[0]
        c.cell = Cell(cand.n, c.cell.overrides, (("candidate", str(cand.n)),))
        c.column = f"#{cand.n} {cand.label}"
        if c.skip is None:
            cand.entry = make_spec(plan, self.id)["cells"][0]
        return plan

    def overrides(self) -> list[str]:
        from expt.tracking.uri import with_credentials

        out = []
        for o in self.options.overrides:
            key, sep, value = o.partition("=")
            out.append(f"{key}{sep}{with_credentials(value)}" if sep else o)
        return out

    def run(self, writer: Writer, progress: GridProgress | None, first: GridPlan | None = None) -> None:
        """Candidates until K, the budget or the picks run out; each ordinary, each saved as it ends."""
        started = time.monotonic()
        base = self.spent
        if progress is not None:
            progress.start(None, [None] * (self.options.k - sum(c.status != "pending" for c in self.candidates)))
        while True:
            self.spent = base + time.monotonic() - started
            cand = next((c for c in self.candidates if c.status == "pending"), None)
            j = None
            if cand is None:
                if len(self.candidates) >= self.options.k:
                    break
                j = self.pick()
                if j is None:
                    self.notes.append(f"no configuration left to try after {len(self.candidates)}")
                    break
            budget = self.options.budget_seconds
            tried = sum(c.status != "pending" for c in self.candidates)
            if budget is not None and tried and self.spent > budget:  # the first starts at 0 s: a budget of 0 runs one
                self.not_started = self.options.k - tried
                self.next_pick = cand.label if cand is not None else label_of(self, j)
                break
            if cand is None:
                assert j is not None  # picked above
                cand = self.add(j)
                self.save()
            plan, first = first if first is not None else self._plan_or_fail(cand), None
            if plan is not None:
                self._run_one(cand, plan, writer, progress)
            self.save()
        self.spent = base + time.monotonic() - started

    def _plan_or_fail(self, cand: Candidate) -> GridPlan | None:
        """A configuration of the records that no longer composes (a renamed option) fails as a candidate; the
        user's own mistakes were found when the first candidate was planned, before any run."""
        try:
            return self.plan(cand)
        except ExptError as exc:
            cand.status, cand.reason = "failed", f"could not be prepared: {exc}"
            return None

    def _run_one(self, cand: Candidate, plan: GridPlan, writer: Writer, progress: CellProgress | None) -> None:
        c = plan.cells[0]
        if c.skip is not None:
            cand.status, cand.reason = "failed", c.skip
            return
        tags = {**cell_tags(self.id, self.run_id, c), PROBE_TAG: self.id, CANDIDATE_TAG: str(cand.n)}
        scores = _Scores(progress)
        if self.options.cluster is not None:  # on a worker of the cluster: its folds' scores come back at its end
            from expt.grid.workers import run_cell_on_cluster

            scores.cell_started(c)
            failed, folds = run_cell_on_cluster(plan, c, tags, self.id, self.options.cluster)
            scores.scores, scores.fits = list((folds or {}).get("scores", [])), list((folds or {}).get("fits", []))
            scores.cell_done(c.cell.key, failed is None)
        else:
            failed = run_cell(plan, c, tags, self.id, scores, writer)
        self.ran += 1
        cand.status = "failed" if failed else "done"
        cand.reason = failed[1] if failed else None
        cand.score, cand.sd, cand.fit_seconds = scores.summary()

    # --- the state file ------------------------------------------------------------------------------------

    def save(self) -> None:
        """Whole or not at all: written beside, then renamed over the old one."""
        from expt.tracking.uri import mask_credentials

        options = asdict(self.options)
        options["overrides"] = [mask_credentials(o) for o in self.options.overrides]
        state = {"probe_id": self.id, "run_id": self.run_id, "fingerprint": self.data.fingerprint,
                 "tracking": {**self.tracking, "uri": mask_credentials(self.tracking.get("uri", ""))},
                 "options": options, "features": self.features, "spent_seconds": self.spent,
                 "candidates": [asdict(c) for c in self.candidates]}
        path = probe_dir(self.id) / STATE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, default=str) + "\n")
        os.replace(tmp, path)

    def grid_spec(self) -> dict[str, Any]:
        """The spec :func:`expt.grid.runner.close_grid` compares: the candidates that ran, in the order picked."""
        from expt.tracking.uri import mask_credentials

        return {"grid_id": self.id, "kind": "train", "overrides": [mask_credentials(o) for o in self.overrides()],
                "config_dir": None, "cells": [c.entry for c in self.candidates if c.entry is not None]}

def label_of(probe: Probe, j: int | None) -> str | None:
    if j is None:
        return None
    from expt.meta.advise import key_params

    column = probe.table.configs[j]
    return f"{column.get('config', {}).get('model_option', column['model']['name'])} " \
           f"{key_params(column['model'], probe.data.task)}"


class _Scores:
    """The grid's progress, passed on, and the candidate's fold scores kept: the next pick needs them at once,
    while the writer may still be writing the run (the same numbers the run logs as ``<metric>_mean``)."""

    def __init__(self, progress: CellProgress | None) -> None:
        self.progress = progress
        self.scores: list[float] = []
        self.fits: list[float] = []

    def cell_started(self, c: PlannedCell) -> None:
        if self.progress is not None:
            self.progress.cell_started(c)

    def fold(self, fold: FoldResult) -> None:
        self.scores.append(fold.score if fold.error is None else math.nan)
        self.fits.append(fold.fit_time)
        if self.progress is not None:
            self.progress.fold(fold)

    def cell_done(self, key: str, ok: bool) -> None:
        if self.progress is not None:
            self.progress.cell_done(key, ok)

    def summary(self) -> tuple[float | None, float | None, float | None]:
        import numpy as np

        ok = [s for s in self.scores if not math.isnan(s)]
        if not ok:
            return None, None, None
        return float(np.mean(ok)), float(np.std(ok)), float(np.mean(self.fits))


def write_config(column: dict[str, Any], spec: dict[str, Any], data: Dataset, folder: Path, rank: int, line: str,
                 metric: str) -> Path:
    """:func:`expt.meta.advise.write_config`'s recipe, chosen on this dataset (a sweep's ``--warm-start`` seeds only
    its final search with it), with the probe's metric in it and ``line`` in place of its "Recommended by"
    line: a probe measured it here rather than expected it from similar datasets."""
    import yaml

    from expt.meta.advise import Recommendation
    from expt.meta.advise import write_config as recipe

    rec = Recommendation(rank, column, math.nan, None, None)
    path = recipe(rec, spec, folder, method="probe", dataset=data, self_included=True)
    lines = path.read_text().splitlines(keepends=True)
    head = [line + "\n" if x.startswith("# Recommended by") else x for x in lines if x.startswith("#")]
    body = yaml.safe_load("".join(x for x in lines if not x.startswith("#")))
    body["learner"]["metric"] = {data.task: metric}
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(head) + yaml.safe_dump(body, sort_keys=False))
    os.replace(tmp, path)
    return path


def load_state(probe_id: str) -> dict[str, Any]:
    path = probe_dir(probe_id) / STATE
    if not path.is_file():
        raise UsageError(f"no probe {probe_id!r} here ({path} is missing); run --resume from the folder the probe "
                         "started in")
    return json.loads(path.read_text())


# --- on the store (in the writer's process) -----------------------------------------------------------------

def open_probe(tracker: Tracker, head: dict[str, Any]) -> str:
    """The probe's run: the grid's id tag (so that the grid's reads find its cells), its own run type."""
    from expt.tracking.environment import environment_tags

    tags = {**environment_tags(head["fingerprint"], head["seed"]), GRID_TAG: head["probe_id"],
            PROBE_TAG: head["probe_id"], RUN_TYPE_TAG: PROBE_RUN, KIND_TAG: TRAIN_RUN, DATA_TAG: head["dataset"]}
    run_id = tracker.start(f"probe-{head['probe_id']}", tags)
    try:
        tracker.log(run_id, params=head["params"])
    except BaseException:
        tracker.end_quietly([run_id], "FAILED")
        raise
    return run_id


def reopen_probe(tracker: Tracker, run_id: str) -> tuple[dict[str, dict[str, float]], set[str]]:
    """A stopped probe's run back to RUNNING; a candidate's run (or fold) a kill left RUNNING ends KILLED and runs
    again. Returns the finished candidates' metrics by key and the ids of every run under the probe."""
    run = tracker.client.get_run(run_id)
    tracker.client.update_run(run_id, status="RUNNING")
    runs = cell_runs(tracker.client, run)
    stale = [r.info.run_id for r in runs if r.info.run_id != run_id and r.data.tags.get(CELL_TAG)
             and r.info.status == "RUNNING"]
    tracker.end_quietly(stale, "KILLED")
    tracker.checkpoint()
    done = finished_cells(runs, "train")
    return {key: dict(r.data.metrics) for key, r in done.items()}, {r.info.run_id for r in runs}


def close_probe(tracker: Tracker, run_id: str, spec: dict[str, Any], state: str,
                failed: list[tuple[str, str]]) -> tuple[Comparison, dict[str, tuple[str, float | None]], str]:
    """The state as ``probe.json`` on the probe's run, then the grid's comparison, which ends it; returns the
    comparison and each finished candidate's run and fit time."""
    client = tracker.client
    done = finished_cells(cell_runs(client, client.get_run(run_id)), "train")
    fits = {key: (r.info.run_id, r.data.metrics.get("fit_time_mean")) for key, r in done.items()}
    tracker.log_text(run_id, state, STATE)
    outcome = close_grid(tracker, run_id, spec, failed)
    return outcome.comparison, fits, tracker.uri


def end_probe(tracker: Tracker, run_id: str, status: str) -> None:
    tracker.end_quietly([run_id], status)
    tracker.checkpoint()
