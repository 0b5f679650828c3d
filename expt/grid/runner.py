"""Run a planned grid: the ``grid-<id>`` run, every cell as an ordinary train (or sweep) run under it, the
comparison at the end; in this process (imports paid once) or in ``--workers`` processes; ``--resume`` after a
crash.

Which cells are done is what MLflow says: a cell is done when a run tagged with the grid id and the cell's key
is FINISHED. The local state file (``outputs/grids/<id>/grid.json``) only says what the grid was (its overrides,
config dir, store), so that ``--resume ID`` needs nothing else; a password is never written to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from expt.core.errors import UsageError
from expt.core.timeline import mark
from expt.grid.cells import CellProgress, cell_tags, run_cell
from expt.grid.plan import GridPlan, plan_grid
from expt.grid.results import SPEC, cell_runs, finished_cells, read_cells
from expt.grid.stats import Comparison
from expt.tracking.tags import CELL_TAG, FAILED_CELLS_TAG, FINGERPRINT_TAG, GRID_RUN, GRID_TAG, KIND_TAG, RUN_TYPE_TAG

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from expt.tracking.client import Tracker
    from expt.train.writer import Writer

OUTPUTS = Path("outputs") / "grids"


class GridProgress(CellProgress, Protocol):
    """A grid's progress display (``expt.cli.grid_render.GridProgress``): told the cells to run (a probe, which has
    no plan, tells how many), then each cell."""

    def start(self, plan: GridPlan | None, todo: Sequence[object]) -> None: ...


@dataclass
class GridOutcome:
    grid_id: str
    run_id: str
    uri: str
    comparison: Comparison
    spec: dict[str, Any]
    failed: list[tuple[str, str]] = field(default_factory=list)  # (cell key, why)
    ran: int = 0  # cells run by this invocation (a resume skips the finished ones)


def new_grid_id() -> str:
    import datetime as dt
    import secrets

    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def state_path(grid_id: str) -> Path:
    return OUTPUTS / grid_id / SPEC


def make_spec(plan: GridPlan, grid_id: str) -> dict[str, Any]:
    """What the grid is, as logged (``grid.json``) and kept for ``--resume``; credentials masked."""
    from expt import __version__
    from expt.tracking.uri import mask_credentials

    cells = [{"index": c.cell.index, "key": c.cell.key, "overrides": [mask_credentials(o) for o in c.cell.overrides],
              "row": c.row, "column": c.column, "dataset": c.dataset, "model": c.model, "task": c.task,
              "metric": c.metric if c.skip is None else None, "folds": c.folds, "folds_hash": c.folds_hash,
              "skip": c.skip} for c in plan.cells]
    return {"grid_id": grid_id, "kind": plan.kind, "overrides": [mask_credentials(o) for o in plan.overrides],
            "config_dir": plan.config_dir, "expt_version": __version__, "cells": cells}


def resume_plan(grid_id: str, kind: str) -> tuple[GridPlan, dict[str, Any]]:
    """The plan of a stopped grid, from its state file, checked against what it was (same cells, same folds)."""
    from expt.tracking.uri import with_credentials

    path = state_path(grid_id)
    if not path.is_file():
        raise UsageError(f"no grid {grid_id!r} here ({path} is missing); run --resume from the folder the grid "
                         "started in")
    state = json.loads(path.read_text())
    if state["kind"] != kind:
        raise UsageError(f"grid {grid_id} is an `expt {state['kind']} -m` grid; resume it with expt {state['kind']} "
                         f"-m --resume {grid_id}")
    overrides = [_unmask(o, with_credentials) for o in state["overrides"]]
    plan = plan_grid(kind, overrides, state["config_dir"])
    before = {c["key"]: c.get("folds_hash") for c in state["cells"]}
    now = {c.cell.key: c.folds_hash for c in plan.cells}
    if set(before) != set(now):
        raise UsageError(f"grid {grid_id}'s cells changed since it started (the config groups changed); "
                         "start a new grid")
    moved = [k for k in now if before[k] != now[k] and before[k] is not None]
    if moved:
        raise UsageError(f"the folds of {moved[0]!r} changed since grid {grid_id} started (its data or config "
                         "changed), so its cells would not pair up; start a new grid")
    return plan, state


def _unmask(override: str, with_credentials: Callable[..., str]) -> str:
    key, sep, value = override.partition("=")
    return f"{key}{sep}{with_credentials(value)}" if sep else override


def run_grid(plan: GridPlan, *, workers: int = 1, grid_id: str | None = None, state: dict[str, Any] | None = None,
             progress: GridProgress | None = None, writer: Writer | None = None,
             cluster: str | None = None) -> GridOutcome:
    """Open (or, with ``state``, reopen) the grid run, run every cell not yet done, then compare and log.

    Every read and write of the store goes through ``writer`` (:mod:`expt.train.process`): a train grid run in
    this process has a writer process (the caller's, or one started here), so this process never imports
    MLflow; a sweep grid, or cells in workers, write from here. With ``cluster`` (a Dask scheduler's address)
    the cells run on that cluster (:mod:`expt.grid.cluster`), which needs a store its workers share."""
    from expt.train.process import start_writer

    if cluster is not None:
        check_cluster(plan, cluster)
        if state is not None:
            check_unclaimed(cluster, str(state["grid_id"]), plan.kind)
    from expt.train.writer import LocalWriter

    own = writer is None
    if writer is None:
        writer = start_writer(evaluates=True) if plan.kind == "train" and workers == 1 else LocalWriter()
    try:
        return _run_grid(plan, workers, grid_id, state, progress, writer, cluster)
    finally:
        if own:
            writer.close()
        if cluster is not None:
            from expt.grid.cluster import disconnect

            disconnect(cluster)


def check_cluster(plan: GridPlan, cluster: str) -> None:
    """What a grid on a cluster needs, refused in one line before anything runs: a train grid (a sweep grid's
    cells keep their Optuna storage in a local journal file) and a tracking store its workers share."""
    if plan.kind != "train":
        raise UsageError("--cluster runs train grids (expt train -m); a sweep grid keeps each sweep's Optuna "
                         "storage in a local file its workers cannot share: run it without --cluster, or scale "
                         "one sweep out with --storage postgresql://... and workers on each machine")
    check_store_and_cluster(plan.tracking.uri, cluster, [Path(plan.config_dir)] if plan.config_dir else [])


def check_unclaimed(cluster: str, grid_id: str, kind: str) -> None:
    """A resumed grid runs no cell a worker still runs for the client that stopped (its task went on without
    it): refused in one line until those cells end, when they count as done."""
    from expt.grid.cluster import connect, running_claims

    busy = running_claims(connect(cluster), f"{grid_id}/")
    if busy:
        worker, claim = busy[0]
        raise UsageError(f"{len(busy)} cell(s) of grid {grid_id} still run on the cluster for the command that "
                         f"stopped ({claim.split('/', 1)[1]} on {worker}); resume when they end (they will count as "
                         f"done): expt {kind} -m --resume {grid_id} --cluster {cluster}")


def check_store_and_cluster(uri: str, cluster: str, folders: list[Path]) -> None:
    """A store the workers share, a cluster that answers with this code, and folders its workers see."""
    from expt.grid.cluster import connect, shared_folders, shared_uri

    shared_uri(uri)
    client = connect(cluster)  # the scheduler answers and its workers run this code: kept for the cells
    shared_folders(client, [Path.cwd(), *folders])


def _run_grid(plan: GridPlan, workers: int, grid_id: str | None, state: dict[str, Any] | None,
              progress: GridProgress | None, writer: Writer, cluster: str | None = None) -> GridOutcome:
    writer.configure(plan.tracking.uri, plan.tracking.experiment, plan.tracking.sqlite_wal)
    if state is not None:
        grid_id, spec = state["grid_id"], {k: v for k, v in state.items() if k != "run_id"}
        grid_run = state["run_id"]
        done = writer.on_store(_reopen, grid_run, plan.kind)
    else:
        grid_id = grid_id or new_grid_id()
        spec = make_spec(plan, grid_id)
        grid_run = writer.on_store(_open, _head(plan), spec)
        done = set()
    mark("grid: run open")
    todo = [c for c in plan.runnable if c.cell.key not in done]
    if progress is not None:
        progress.start(plan, todo)
    try:
        tags = {c.cell.key: cell_tags(grid_id, grid_run, c) for c in todo}
        if cluster is not None or (workers > 1 and len(todo) > 1):
            from expt.grid.workers import run_in_workers

            failed = run_in_workers(plan, todo, tags, workers, grid_id, progress, cluster)
        else:
            failed = [f for c in todo if (f := run_cell(plan, c, tags[c.cell.key], grid_id, progress, writer))]
            writer.drain()  # every cell written, or the write that failed raised
        mark("grid: cells run and written")
        outcome = writer.on_store(close_grid, grid_run, spec, failed)
        mark("grid: compared")
    except KeyboardInterrupt:
        _quietly(lambda: writer.on_store(_end_quietly, grid_run, "KILLED"))
        raise
    except BaseException:
        _quietly(lambda: writer.on_store(_end_quietly, grid_run, "FAILED"))
        raise
    outcome.ran = len(todo)
    return outcome


def _quietly(call: Callable[[], object]) -> None:
    """A best-effort call on the way out of an error: the store may be what failed."""
    try:
        call()
    except Exception:  # noqa: BLE001, S110 - the first error is the one the user sees
        pass


def _end_quietly(tracker: Tracker, run_id: str, status: str) -> None:
    tracker.end_quietly([run_id], status)
    tracker.checkpoint()


def _head(plan: GridPlan) -> dict[str, Any]:
    """What opening the grid run needs of the plan (the plan itself holds every cell's data)."""
    first = plan.runnable[0].prepared
    assert first is not None
    return {"kind": plan.kind, "seed": first.config.seed, "cells": len(plan.cells), "skipped": len(plan.skipped),
            "rows": len(plan.rows), "columns": len(plan.columns), "experiment": plan.tracking.experiment}


def _open(tracker: Tracker, head: dict[str, Any], spec: dict[str, Any]) -> str:
    """The grid run, its params and spec, and the state file ``--resume`` reads; returns the run's id."""
    from expt.tracking.environment import environment_tags
    from expt.tracking.uri import mask_credentials

    grid_id = spec["grid_id"]
    tags = {**environment_tags("grid", head["seed"]), GRID_TAG: grid_id, RUN_TYPE_TAG: GRID_RUN,
            KIND_TAG: head["kind"]}
    del tags[FINGERPRINT_TAG]  # a grid spans datasets; each cell carries its own
    run_id = tracker.start(f"grid-{grid_id}", tags)
    try:
        tracker.log(run_id, params={"grid.kind": head["kind"], "grid.overrides": " ".join(spec["overrides"])[:6000],
                                    "grid.cells": head["cells"], "grid.skipped": head["skipped"],
                                    "grid.rows": head["rows"], "grid.columns": head["columns"]})
        tracker.log_text(run_id, json.dumps(spec, indent=1) + "\n", SPEC)
        state = {**spec, "run_id": run_id, "tracking_uri": mask_credentials(tracker.uri),
                 "experiment": head["experiment"]}
        path = state_path(grid_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=1) + "\n")
    except BaseException:
        tracker.end_quietly([run_id], "FAILED")
        raise
    return run_id


def _reopen(tracker: Tracker, grid_run: str, kind: str) -> set[str]:
    """A stopped grid's run back to RUNNING; a train cell a dead process left RUNNING becomes KILLED (it runs
    again), and so does any fold run under it that the kill caught between its start and its end (a fold's run is
    written in three store calls after the fold ends); a sweep cell resumes itself. Returns the keys of the
    finished cells."""
    run = tracker.client.get_run(grid_run)
    tracker.client.update_run(grid_run, status="RUNNING")
    runs = cell_runs(tracker.client, run)
    if kind == "train":
        stale = [r.info.run_id for r in runs if r.info.run_id != grid_run and r.data.tags.get(CELL_TAG)
                 and r.info.status == "RUNNING"]
        tracker.end_quietly(stale, "KILLED")
    return set(finished_cells(runs, kind))


def close_grid(tracker: Tracker, grid_run: str, spec: dict[str, Any], failed: list[tuple[str, str]]) -> GridOutcome:
    """Read the cells back from MLflow, compare, log the tables and plots on the grid run, and end it."""
    import tempfile

    from expt.grid import report
    from expt.grid.stats import compare

    client = tracker.client
    cells = read_cells(client, client.get_run(grid_run), spec)
    comparison = compare(cells)
    title = (f"grid {spec['grid_id']}: expt {spec['kind']}, {len(comparison.rows)} datasets x "
             f"{len(comparison.columns)} models")
    with tempfile.TemporaryDirectory(prefix="expt-grid-") as tmp:
        folder = Path(tmp)
        (folder / "plots").mkdir()
        texts = {"results.csv": report.results_csv(comparison), "folds.csv": report.folds_csv(comparison),
                 "pairs.csv": report.pairs_csv(comparison), "results.md": report.markdown(comparison, title)}
        for name, text in texts.items():
            (folder / name).write_text(text)
        report.cd_diagram(comparison, folder / "plots" / "cd_diagram.png")
        if comparison.metric:
            report.folds_plot(comparison, folder / "plots" / "fold_scores.png")
        client.log_artifacts(grid_run, tmp)
    tracker.log(grid_run, metrics=_summary(comparison, failed), tags={FAILED_CELLS_TAG: str(len(failed))})
    tracker.end(grid_run)
    tracker.checkpoint()
    return GridOutcome(spec["grid_id"], grid_run, tracker.uri, comparison, spec, failed)


def _summary(out: Comparison, failed: list[tuple[str, str]]) -> dict[str, float]:
    statuses = [c.status for c in out.cells.values()]
    metrics = {"n_cells": float(len(statuses)), "n_ok": float(statuses.count("ok")),
               "n_skipped": float(statuses.count("skipped")), "n_failed": float(len(failed))}
    if out.friedman is not None:
        metrics.update(friedman_statistic=out.friedman["statistic"], friedman_p=out.friedman["pvalue"])
    if out.nemenyi is not None:
        metrics["nemenyi_cd"] = out.nemenyi["cd"]
    for column, rank in out.average_rank.items():
        metrics[f"avg_rank.{_metric_name(column)}"] = rank
    return metrics


def _metric_name(text: str) -> str:
    """MLflow metric names take letters, digits and ``_-./ ``; a column label may hold ``=``, ``,`` or brackets."""
    import re

    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text)[:200]


def compare_grid(client: MlflowClient, grid_id: str) -> tuple[Comparison, dict[str, Any], Run]:
    """``expt compare --grid ID``: the comparison again, from what MLflow holds."""
    from expt.grid.results import find_grid_run, read_spec
    from expt.grid.stats import compare

    run = find_grid_run(client, grid_id)
    spec = read_spec(client, run)
    return compare(read_cells(client, run, spec)), spec, run


def check_options(workers: int, resume: str | None, overrides: list[str]) -> None:
    if resume and overrides:
        raise UsageError("--resume continues the stored grid; drop the overrides (or start a new grid)")
    if workers < 1:
        raise UsageError("--workers must be at least 1")

