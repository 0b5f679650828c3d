"""A grid as MLflow holds it: the ``grid-<id>`` run, its spec (``grid.json``), and each cell's fold scores.

The comparison is always computed from what MLflow holds, at the end of a grid as in ``expt compare --grid``
later, so the table shows exactly the cells' logged scores (a train cell's fold runs, a sweep cell's outer-fold
runs), never a second copy kept on the side.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from expt.core.errors import UsageError
from expt.grid.stats import CellScores
from expt.tracking.tags import (
    CELL_TAG,
    ERROR_TAG,
    FOLD_RUNS,
    FOLD_TAG,
    FOLDS_TAG,
    GRID_RUN,
    GRID_TAG,
    OUTER_FOLD_TAG,
    PARENT_TAG,
    RUN_TYPE_TAG,
    TRAIN_RUN,
    tag_filter,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

SPEC = "grid.json"


def find_grid_run(client: MlflowClient, grid_id: str) -> Run:
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, f"{tag_filter(GRID_TAG, grid_id)} and {tag_filter(RUN_TYPE_TAG, GRID_RUN)}",
                               max_results=5) if experiments else []
    if not found:
        raise UsageError(f"no grid {grid_id!r} in {client.tracking_uri}; pass the id `expt train -m` printed "
                         "(run from the folder that holds mlruns.db, or pass --tracking-uri)")
    return found[0]


def read_spec(client: MlflowClient, run: Run) -> dict[str, Any]:
    import os
    import tempfile
    from pathlib import Path

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar for one small file is noise
    with tempfile.TemporaryDirectory(prefix="expt-grid-") as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, SPEC, tmp)
        except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
            raise UsageError(f"grid run {run.info.run_id} has no {SPEC}; it was not written by expt train -m") from None
        return json.loads(Path(path).read_text())


def cell_runs(client: MlflowClient, grid_run: Run) -> list[Run]:
    """Every run tagged with the grid's id: the cells and the runs under them (folds, outer folds)."""
    grid_id = grid_run.data.tags[GRID_TAG]
    return client.search_runs([grid_run.info.experiment_id], tag_filter(GRID_TAG, grid_id), max_results=50_000)


def finished_cells(runs: list[Run], kind: str) -> dict[str, Run]:
    """Cell key -> its FINISHED run (the newest, should a cell ever have two)."""
    done: dict[str, Run] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):
        if run.data.tags.get(RUN_TYPE_TAG) == kind and run.info.status == "FINISHED" and CELL_TAG in run.data.tags:
            done[run.data.tags[CELL_TAG]] = run
    return done


def read_cells(client: MlflowClient, grid_run: Run, spec: dict[str, Any]) -> list[CellScores]:
    """The grid's cells in their order, each with its fold scores from its finished run (or why it has none)."""
    kind = spec["kind"]
    runs = cell_runs(client, grid_run)
    done = finished_cells(runs, kind)
    tried = {r.data.tags.get(CELL_TAG): r for r in runs if r.data.tags.get(RUN_TYPE_TAG) == kind}
    folds_of: dict[str, list[Run]] = {}
    for run in runs:
        if run.data.tags.get(RUN_TYPE_TAG) == FOLD_RUNS[kind]:
            folds_of.setdefault(run.data.tags.get(PARENT_TAG, ""), []).append(run)
    cells = []
    for entry in spec["cells"]:
        cell = CellScores(entry["key"], entry["row"], entry["column"], "ok", metric=entry.get("metric"),
                          folds=entry.get("folds"), folds_hash=entry.get("folds_hash"))
        finished = done.get(entry["key"])
        if entry.get("skip"):
            cell.status, cell.reason = "skipped", entry["skip"]
        elif finished is None:
            cell.status = "failed" if entry["key"] in tried else "missing"
            if entry["key"] in tried:
                cell.reason = tried[entry["key"]].data.tags.get(ERROR_TAG) or tried[entry["key"]].info.status
        else:
            cell.run_id = finished.info.run_id
            cell.folds_hash = finished.data.tags.get(FOLDS_TAG, cell.folds_hash)
            cell.scores = fold_scores(folds_of.get(finished.info.run_id, []), kind, str(cell.metric))
        cells.append(cell)
    return cells


def fold_scores(folds: list[Run], kind: str, metric: str) -> list[float]:
    """A train cell's fold scores (its fold runs' ``<metric>``; NaN for a fold that failed, as the run's own mean
    leaves it out) or a sweep cell's outer scores, in fold order."""
    index, key = (FOLD_TAG, metric) if kind == TRAIN_RUN else (OUTER_FOLD_TAG, f"outer_{metric}")
    ordered = sorted(folds, key=lambda r: int(r.data.tags.get(index, 0)))
    return [float(r.data.metrics.get(key, math.nan)) for r in ordered]
