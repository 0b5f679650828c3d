"""What a person sees: progress while folds run, a results table at the end."""

from __future__ import annotations

import math
from typing import Any

from expt.cv import FoldResult


class TrainProgress:
    """A transient fold progress bar on stderr, so stdout carries only the results."""

    def __init__(self, prepared: Any) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.total = prepared.splitter.get_n_splits()
        console = Console(stderr=True)
        self.progress = Progress(
            TextColumn(f"[bold]{prepared.dataset.name}[/] · {prepared.values['model']['name']}"),
            BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"), TimeRemainingColumn(),
            console=console, transient=True, disable=not console.is_terminal,
        )
        self.task = self.progress.add_task("folds", total=self.total, last="")
        self.metric = prepared.metric

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def advance(self, fold: FoldResult) -> None:
        self.progress.update(self.task, advance=1, last=f"{self.metric} {fold.score:.4f}")


def _fmt(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def print_train_result(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from expt.tracking import ui_command

    prepared = result.prepared
    cv = result.cv
    data = prepared.dataset
    table = Table(title=f"{data.name} · {prepared.values['model']['name']} · {cv.metric}", title_justify="left")
    table.add_column("fold", justify="right")
    table.add_column(cv.metric, justify="right")
    table.add_column(f"train {cv.metric}", justify="right")
    table.add_column("fit s", justify="right")
    table.add_column("n test", justify="right")
    for fold in cv.folds:
        score = _fmt(fold.score) if fold.error is None else f"[red]failed[/] {fold.error[:40]}"
        table.add_row(str(fold.index), score, _fmt(fold.train_score), f"{fold.fit_time:.3f}", str(fold.n_test))
    table.add_section()
    table.add_row("mean ± std", f"[bold]{cv.mean:.4f} ± {cv.std:.4f}[/]", "", "", "")
    console = Console()
    console.print(table)
    console.print(f"run id      {result.run_id}  (experiment {prepared.values['tracking']['experiment']})",
                  soft_wrap=True)
    console.print(f"data        {data.name}: {data.n_rows} rows, {data.X.shape[1]} features, {data.task}, "
                  f"fingerprint {data.fingerprint}", soft_wrap=True)
    console.print(f"browse      {ui_command(result.uri)}", soft_wrap=True)
