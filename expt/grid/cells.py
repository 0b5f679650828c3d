"""One cell of a grid, run: an ordinary ``expt train`` (or ``expt sweep``) run, tagged with its place in the grid.

The same code runs a cell in the grid's process and in a ``--workers`` process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from expt.core.errors import RunFailedError
from expt.grid.plan import GridPlan, PlannedCell
from expt.tracking.tags import CELL_TAG, COLUMN_TAG, FOLDS_TAG, GRID_TAG, PARENT_TAG, ROW_TAG

if TYPE_CHECKING:
    from expt.core.cv import FoldResult
    from expt.core.settings import Tracking
    from expt.train.writer import Writer


class CellProgress(Protocol):
    """What a cell tells the display of its grid's progress (``expt.cli.grid_render.GridProgress``, a probe's
    scores): that it started, each fold of a train cell, that it ended."""

    def cell_started(self, cell: PlannedCell) -> None: ...

    def fold(self, fold: FoldResult) -> None: ...

    def cell_done(self, key: str, ok: bool) -> None: ...


def cell_tags(grid_id: str, grid_run: str, c: PlannedCell) -> dict[str, str]:
    """On the cell's run (and the runs under it): the grid, the cell, its place in the table, its folds; the
    parent tag nests it under the grid run in the MLflow UI."""
    return {GRID_TAG: grid_id, CELL_TAG: c.cell.key, ROW_TAG: c.row, COLUMN_TAG: c.column,
            FOLDS_TAG: str(c.folds_hash), PARENT_TAG: grid_run}


def run_cell(plan: GridPlan, c: PlannedCell, tags: dict[str, str], grid_id: str,
             progress: CellProgress | None = None, writer: Writer | None = None) -> tuple[str, str] | None:
    """One cell in this process: an ordinary ``expt train`` (or ``expt sweep``) run, a train cell's writes sent
    to the grid's ``writer`` (:mod:`expt.train.process`: they go on while the next cell runs). A cell whose every
    fold failed is a result (the grid goes on); any other error stops the grid."""
    if progress is not None:
        progress.cell_started(c)
    try:
        if plan.kind == "train":
            from expt.train.run import queue_train

            assert c.prepared is not None and writer is not None
            queue_train(c.prepared, writer, on_fold=progress.fold if progress is not None else None, tags=tags)
        else:
            run_sweep_cell(c.cell.overrides, plan.config_dir, tags, sweep_id(grid_id, c))
    except RunFailedError as exc:
        if progress is not None:
            progress.cell_done(c.cell.key, ok=False)
        return c.cell.key, str(exc)
    if progress is not None:
        progress.cell_done(c.cell.key, ok=True)
    return None


def sweep_id(grid_id: str, c: PlannedCell) -> str:
    return f"grid-{grid_id}-{c.cell.index}"


def run_sweep_cell(overrides: tuple[str, ...], config_dir: str | None, tags: dict[str, str], sweep: str) -> None:
    """A sweep cell: a new sweep, or, when its storage exists (the grid stopped inside it), that sweep resumed."""
    from expt.core.config import compose
    from expt.sweep.runner import SweepOptions, run_sweep
    from expt.sweep.storage import default_storage

    resume = Path(default_storage(sweep)).exists()
    composed = None if resume else compose(overrides, config_dir=config_dir)
    run_sweep(composed, SweepOptions(sweep_id=sweep, resume=resume, config_dir=config_dir, tags=tags))


def run_job(job: dict[str, Any]) -> dict[str, list[float]] | None:
    """A cell in a worker process, from its overrides: composed and prepared again (a prepared pipeline and
    dataset are not worth pickling across a spawn). A train cell returns its folds' scores (NaN for a failed
    fold) and fit seconds, which a probe on a cluster picks its next candidate from."""
    from expt.core.config import compose
    from expt.core.prepare import prepare

    if job["kind"] == "sweep":
        run_sweep_cell(tuple(job["overrides"]), job["config_dir"], job["tags"], job["sweep_id"])
        return None
    from expt.train.run import run_train
    from expt.train.writer import LocalWriter

    prepared = prepare(compose(job["overrides"], config_dir=job["config_dir"]))
    if job.get("retried"):
        end_lost_attempts(prepared.config.tracking, job["tags"])
    # The workers have the cores: a writer process each would compete with them.
    result = run_train(prepared, tags=job["tags"], writer=LocalWriter())
    return {"scores": [f.score if f.error is None else float("nan") for f in result.cv.folds],
            "fits": [f.fit_time for f in result.cv.folds]}


def end_lost_attempts(tracking: Tracking, tags: dict[str, str]) -> None:
    """On a cluster, a cell whose worker was lost runs again elsewhere: the runs the lost attempt left RUNNING
    (the cell's and its folds') end KILLED first, so the grid ends with one FINISHED run per cell and none
    RUNNING."""
    from expt.tracking.client import Tracker
    from expt.tracking.tags import tag_filter

    tracker = Tracker(tracking.uri, tracking.experiment, sqlite_wal=tracking.sqlite_wal)
    runs = tracker.client.search_runs([tracker.experiment_id], tag_filter(GRID_TAG, tags[GRID_TAG]),
                                      max_results=50_000)
    tracker.end_quietly([r.info.run_id for r in runs if r.data.tags.get(CELL_TAG) == tags[CELL_TAG]
                         and r.info.status == "RUNNING"], "KILLED")
