"""A grid in the terminal: its cells (``-m --cfg``), progress while they run, and the comparison at the end."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from mlflow import MlflowClient
    from rich.table import Table

    from expt.core.cv import FoldResult
    from expt.grid.plan import GridPlan, PlannedCell
    from expt.grid.stats import Comparison


def print_cells(plan: GridPlan) -> None:
    """The cells a grid would run, and those it would skip with why; runs nothing."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"expt {plan.kind} -m: {len(plan.cells)} cells, {len(plan.rows)} datasets x "
                        f"{len(plan.columns)} models, {len(plan.skipped)} skipped", title_justify="left")
    for name in ("#", "cell", "dataset", "model", "folds", "status"):
        table.add_column(name, justify="right" if name == "#" else "left")
    for c in plan.cells:
        status = f"[yellow]skipped[/]: {c.skip}" if c.skip else "runs"
        folds = f"{c.folds} ({c.folds_hash})" if c.folds_hash else ""
        table.add_row(str(c.cell.index), c.cell.key, c.row, c.column, folds, status)
    Console().print(table, soft_wrap=True)


class GridProgress:
    """One bar over the cells on stderr (transient), naming the cell that runs; stdout keeps only the results."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self.progress = Progress(TextColumn("grid"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[now]}"), TimeElapsedColumn(), console=console,
                                 transient=True, disable=not console.is_terminal)
        self.task = self.progress.add_task("cells", total=0, now="")
        self.running: dict[str, str] = {}

    def __enter__(self) -> GridProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, plan: GridPlan | None, todo: Sequence[object]) -> None:  # a probe has no plan
        self.progress.update(self.task, total=len(todo), completed=0)

    def cell_started(self, cell: PlannedCell) -> None:
        self.running[cell.cell.key] = cell.cell.key
        self._show()

    def fold(self, fold: FoldResult) -> None:
        self.progress.refresh()

    def cell_done(self, key: str, ok: bool) -> None:
        self.running.pop(key, None)
        self.progress.update(self.task, advance=1)
        self._show()

    def _show(self) -> None:
        self.progress.update(self.task, now=" | ".join(self.running.values()))


def _cell(out: Comparison, row: str, column: str) -> str:
    cell = out.cells.get((row, column))
    if cell is None:
        return ""
    if cell.status != "ok":
        return f"[dim]{cell.status}[/]"
    text = f"{cell.mean:.4f} ± {cell.std:.4f}"
    if column in out.best.get(row, []):
        return f"[bold]{text}[/] ★"
    p = out.p_vs_best.get((row, column))
    return text if p is None or math.isnan(p) else f"{text} [dim](p={p:.2g})[/]"


def grid_table(out: Comparison, title: str) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("dataset")
    for column in out.columns:
        table.add_column(column, justify="right")
    for row in out.rows:
        label = f"{row} ({out.metric[row]})" if row in out.metric else row
        table.add_row(label, *(_cell(out, row, c) for c in out.columns))
    if out.average_rank:
        table.add_section()
        table.add_row("average rank", *(f"{out.average_rank[c]:.2f}" if c in out.average_rank else ""
                                        for c in out.columns))
    return table


def print_grid(out: Comparison, spec: dict[str, Any], run_id: str, uri: str, *, ran: int | None = None,
               failed: list[tuple[str, str]] | None = None) -> None:
    """The table (mean ± std per dataset and model, ★ the best, p against it), average ranks, the tests in words,
    the pairs of a two-model grid, cells that did not run, and where it is all logged."""
    from rich.console import Console

    from expt.grid.report import LEGEND, cd_text
    from expt.grid.stats import verdict
    from expt.tracking.uri import ui_command

    console = Console()
    title = f"grid {spec['grid_id']} · expt {spec['kind']} · {len(out.rows)} datasets × {len(out.columns)} models"
    console.print(grid_table(out, title))
    say = lambda text: console.print(text, soft_wrap=True, highlight=False)  # noqa: E731
    say(LEGEND.replace("in bold", "★"))
    for line in verdict(out) + out.notes:
        say(line)
    for line in cd_text(out):
        say(line)
    if len(out.columns) == 2:
        for p in out.pairs:
            say(f"{p['dataset']}: {p['a']} - {p['b']} = {p['difference']:+.4f}, corrected t = {p['t']:.3f}, "
                f"p = {p['p']:.3g}")
    for cell in out.cells.values():
        if cell.status != "ok":
            say(f"{cell.status:<8} {cell.key}" + (f": {cell.reason}" if cell.reason else ""))
    if ran is not None:
        say(f"cells run {ran}, failed {len(failed or [])}")
    plots = ", plots/cd_diagram.png" if out.nemenyi is not None else ""
    say(f"grid run  {run_id}  (results.csv, results.md, folds.csv, pairs.csv{plots}, plots/fold_scores.png)")
    say(f"again     expt compare --grid {spec['grid_id']}")
    say(f"browse    {ui_command(uri)}")


def compare_grid(open_client: Callable[[], MlflowClient], grid: str | None, runs: tuple[str | None, str | None],
                 json_out: bool) -> None:
    """``expt compare --grid ID``: the comparison again, computed from what MLflow holds (``--json``: as data).
    ``open_client`` opens the store once the arguments are known to be right."""
    from expt.core.errors import UsageError

    if grid is None or any(runs):
        raise UsageError("pass two run ids (expt compare RUN_A RUN_B) or a grid (expt compare --grid GRID_ID)")
    from expt.grid.report import as_data
    from expt.grid.runner import compare_grid as load

    client = open_client()
    comparison, spec, run = load(client, grid)
    if json_out:
        import json

        import typer

        typer.echo(json.dumps({"grid_id": grid, "run_id": run.info.run_id, **as_data(comparison)}, indent=2))
        return
    print_grid(comparison, spec, run.info.run_id, client.tracking_uri)
