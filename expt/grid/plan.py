"""Every cell of a grid composed, loaded and checked before the first run exists.

A typo in any cell (an unknown option, a bad value) fails the whole grid in one line naming the cell, with
nothing written. A cell that is well-formed but cannot run (a classification-only model on a regression
dataset) is skipped with its reason. The grid is then checked as a whole: one tracking store, one metric and
one set of folds per dataset (so that per-fold differences between models are paired), and, when the datasets
mix tasks, some model that runs on all of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.config import Composed, compose, resolve_values
from expt.core.errors import ExptError, UsageError
from expt.core.prepare import Prepared, prepare
from expt.core.settings import Tracking
from expt.grid.spec import Cell, column_labels, expand

if TYPE_CHECKING:
    from expt.core.data import Dataset

KINDS = ("train", "sweep")


@dataclass
class PlannedCell:
    cell: Cell
    composed: Composed
    dataset: str  # the dataset's name
    fingerprint: str
    task: str
    model: str
    prepared: Prepared | None = None
    folds_hash: str | None = None
    folds: int | None = None  # folds per repetition: the corrected t-test's test/train ratio is 1/(folds-1)
    skip: str | None = None  # why the cell cannot run
    row: str = ""
    column: str = ""

    @property
    def metric(self) -> str:
        assert self.prepared is not None
        return self.prepared.metric

    @property
    def tracking(self) -> Tracking:
        assert self.prepared is not None
        return self.prepared.config.tracking


@dataclass
class GridPlan:
    kind: str
    overrides: list[str]
    config_dir: str | None
    cells: list[PlannedCell] = field(default_factory=list)

    @property
    def runnable(self) -> list[PlannedCell]:
        return [c for c in self.cells if c.skip is None]

    @property
    def skipped(self) -> list[PlannedCell]:
        return [c for c in self.cells if c.skip is not None]

    @property
    def rows(self) -> list[str]:
        return list(dict.fromkeys(c.row for c in self.cells))

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(c.column for c in self.cells))

    @property
    def tracking(self) -> Tracking:
        return self.runnable[0].tracking


def plan_grid(kind: str, overrides: list[str], config_dir: str | Path | None = None) -> GridPlan:
    """Expand, compose and check every cell; raise a one-line ExptError before anything is written."""
    assert kind in KINDS
    cells = expand(overrides, config_dir)
    loaded: dict[str, Any] = {}  # one load per dataset for the task check (prepare loads its own copy)
    plan = GridPlan(kind, list(overrides), str(config_dir) if config_dir else None)
    for cell in cells:
        try:
            plan.cells.append(_plan_cell(kind, cell, config_dir, loaded))
        except ExptError as exc:
            if len(cells) == 1:
                raise
            raise type(exc)(f"grid cell {cell.key}: {exc}") from None
    _label(plan)
    check_grid(plan)
    return plan


def _plan_cell(kind: str, cell: Cell, config_dir: str | Path | None, loaded: dict[str, Dataset]) -> PlannedCell:
    composed = compose(cell.overrides, config_dir=config_dir)
    dataset = _dataset(composed, loaded)
    model = composed.cfg.model
    name = str(model.get("name") or composed.choices.get("model", "?"))
    tasks = list(model.get("tasks") or [])
    planned = PlannedCell(cell, composed, dataset.name, dataset.fingerprint, dataset.task, name)
    if tasks and dataset.task not in tasks:
        planned.skip = f"{name} handles {' and '.join(tasks)} only; {dataset.name} is a {dataset.task} task"
        return planned
    if kind == "train":
        planned.prepared = prepare(composed)
        planned.folds_hash = folds_hash(planned.prepared)
        planned.folds = planned.prepared.config.learner.cv.folds
    else:
        from expt.sweep.plan import make_plan

        sweep_plan = make_plan(composed, config_dir=config_dir)
        planned.prepared = sweep_plan.prepared
        planned.folds_hash = sweep_plan.manifest["hash"]
        planned.folds = sweep_plan.settings.outer_folds
    return planned


def _dataset(composed: Composed, loaded: dict[str, Dataset]) -> Dataset:
    """The cell's dataset, loaded as prepare loads it (the same checks and errors), once per data spec."""
    from expt.core.data import load_dataset
    from expt.core.schema import DATA, fill_data_defaults, validate

    spec = fill_data_defaults(resolve_values(composed.cfg.data))
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in loaded:
        validate(spec, DATA, "data")
        loaded[key] = load_dataset(spec)
    return loaded[key]


def folds_hash(prepared: Prepared) -> str:
    """The fold manifest's hash: the test rows of every fold, in order, and their kind where not shuffled (the
    same digest a sweep stores): cells pair up only on the same folds."""
    assert prepared.folds is not None
    return prepared.folds.manifest_hash(prepared.splitter, prepared.dataset.X, prepared.dataset.y)


def _label(plan: GridPlan) -> None:
    """Rows are datasets (by content: two data options with the same rows are one row); columns are what varies
    besides the data."""
    names: dict[str, set[str]] = {}
    for c in plan.cells:
        names.setdefault(c.dataset, set()).add(c.fingerprint)
    for c in plan.cells:
        c.row = c.dataset if len(names[c.dataset]) == 1 else f"{c.dataset} ({c.fingerprint[:8]})"
    columns = list(dict.fromkeys(c.cell.column for c in plan.cells))
    models = [next(c.model for c in plan.cells if c.cell.column == col) for col in columns]
    labels = dict(zip(columns, column_labels(columns, models), strict=True))
    for c in plan.cells:
        c.column = labels[c.cell.column]


def check_grid(plan: GridPlan) -> None:
    """What makes the comparison honest, checked before any run: see the module's docstring."""
    runnable = plan.runnable
    if not runnable:
        first = plan.cells[0]
        raise UsageError(f"no cell of this grid can run ({first.cell.key}: {first.skip}); "
                         "choose models that handle these datasets")
    _check_mixed_tasks(plan)
    seen: dict[tuple[str, str], PlannedCell] = {}
    for c in plan.cells:
        twin = seen.setdefault((c.row, c.column), c)
        if twin is not c:
            raise UsageError(f"cells {twin.cell.key!r} and {c.cell.key!r} run the same model on the same data; "
                             "sweep each value once")
    stores = {(c.tracking.uri, c.tracking.experiment) for c in runnable}
    if len(stores) > 1:
        raise UsageError("the cells would log to different tracking stores or experiments; a grid logs to one: "
                         "set tracking.uri and tracking.experiment once, not as a sweep")
    for row in plan.rows:
        cells = [c for c in runnable if c.row == row]
        for attribute, what, fix in (
                ("metric", "metric", "learner.metric"),
                ("folds_hash", "folds", "seed and learner.cv (search.outer_folds for sweeps)")):
            values = {getattr(c, attribute) for c in cells}
            if len(values) > 1:
                a = cells[0]
                b = next(c for c in cells if getattr(c, attribute) != getattr(a, attribute))
                raise UsageError(f"{a.cell.key!r} and {b.cell.key!r} do not share their {what} on {row}; a grid "
                                 f"compares models on the same {what} per dataset: keep {fix} the same within a "
                                 "grid (sweep them in separate grids)")


def _check_mixed_tasks(plan: GridPlan) -> None:
    tasks = {c.task: c.dataset for c in plan.cells}
    if len(tasks) < 2:
        return
    for column in plan.columns:
        if all(c.skip is None for c in plan.cells if c.column == column):
            return
    shown = " and ".join(f"{task} ({name})" for task, name in sorted(tasks.items()))
    models = ", ".join(sorted({f"{c.column}: {c.task}" for c in plan.runnable}))
    raise UsageError(f"the grid mixes {shown} datasets, and no model in it runs on all of them ({models}); "
                     "run one grid per task, or add a model that handles both (e.g. model=random_forest)")
