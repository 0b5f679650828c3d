"""What a person sees: progress while folds run, a results table at the end."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from expt.core.cv import FoldResult

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import JustifyMethod

    from expt.core.data import Dataset
    from expt.core.prepare import Prepared
    from expt.meta.advise import Recommendation
    from expt.meta.recommend import Table as RecordTable
    from expt.reproduce.rerun import Match, Rerun, Value
    from expt.sweep.attach import Sweep
    from expt.train.run import TrainResult


class TrainProgress:
    """A transient fold progress bar on stderr, so stdout carries only the results."""

    def __init__(self, prepared: Prepared) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.total = prepared.splitter.get_n_splits()
        console = Console(stderr=True)
        self.progress = Progress(
            TextColumn(f"[bold]{prepared.dataset.name}[/] · {prepared.config.model.name}"),
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


def _fmt(value: float | int | None) -> str:  # int: isinstance below tells them apart
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def print_train_result(result: TrainResult) -> None:
    from rich.console import Console
    from rich.table import Table

    from expt.tracking.uri import ui_command

    prepared = result.prepared
    cv = result.cv
    data = prepared.dataset
    table = Table(title=f"{data.name} · {prepared.config.model.name} · {cv.metric}", title_justify="left")
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
    console.print(f"run id      {result.run_id}  (experiment {prepared.config.tracking.experiment})",
                  soft_wrap=True, highlight=False)
    console.print(f"data        {data.name}: {data.n_rows} rows, {data.X.shape[1]} features, {data.task}, "
                  f"fingerprint {data.fingerprint}", soft_wrap=True, highlight=False)
    console.print(f"browse      {ui_command(result.uri)}", soft_wrap=True, highlight=False)


class SweepProgress:
    """One bar per outer fold and the final search, with best-so-far; read from the storage."""

    def __init__(self, sweep: Sweep) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from expt.sweep.engine import run_order

        console = Console(stderr=True)
        self.sweep = sweep
        self.n = sweep.plan.settings.n_trials
        self.progress = Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[best]}"), TimeRemainingColumn(),
                                 console=console, transient=True, disable=not console.is_terminal)
        self.tasks = {u.key: self.progress.add_task(u.key, total=self.n, best="") for u in run_order(sweep.plan.units)}
        self.overall = self.progress.add_task("all", total=self.n * len(self.tasks), best="")

    def __enter__(self) -> SweepProgress:
        self.refresh()
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def refresh(self) -> None:
        from optuna.trial import TrialState

        total = 0
        for key, task in self.tasks.items():
            trials = self.sweep.studies[key].get_trials(deepcopy=False)
            done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
            values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
            total += min(done, self.n)
            self.progress.update(task, completed=min(done, self.n), best=f"best {max(values):.4f}" if values else "")
        self.progress.update(self.overall, completed=total)


def print_sweep_result(sweep: Sweep, result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from expt.sweep.plan import display_params
    from expt.tracking.uri import ui_command

    plan = sweep.plan
    metric = plan.prepared.metric
    table = Table(title=f"sweep {sweep.sweep_id} · {plan.prepared.dataset.name} · {plan.settings.name} · {metric}",
                  title_justify="left")
    for col in ("fold", "inner best", "outer", "trials"):  # the metric is in the title
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("best params", overflow="fold", min_width=24, ratio=1)
    table.caption = "trials: complete/pruned/failed"
    for unit in plan.units:
        from expt.sweep.engine import result_of

        res, c = result_of(sweep.studies[unit.key]), result["counts"][unit.key]
        assert res is not None  # the sweep finished every unit before its result is printed
        params = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in display_params(res["best_params"]).items())
        outer = _fmt(res["outer_score"])
        table.add_row(unit.key, _fmt(res["inner_best"]), outer, f"{c.done}/{c.pruned}/{c.failed}", params)
    table.add_section()
    table.add_row("mean ± std", f"{result['inner_mean']:.4f}", f"[bold]{result['outer_mean']:.4f} ± "
                  f"{result['outer_std']:.4f}[/]", "", "")
    console = Console()
    console.print(table)
    console.print(f"unbiased estimate (outer folds): {result['outer_mean']:.4f} ± {result['outer_std']:.4f}; "
                  f"mean inner best (optimistic): {result['inner_mean']:.4f}", soft_wrap=True, highlight=False)
    if result.get("stale"):
        console.print(f"resumed: {result['stale']} trial(s) left running by a stopped process were failed and re-run",
                      highlight=False)
    from expt.tracking.uri import mask_credentials

    console.print(f"sweep id    {sweep.sweep_id}   storage {mask_credentials(sweep.storage_url)}", soft_wrap=True,
                  highlight=False)
    console.print(f"browse      {ui_command(result['uri'])}", soft_wrap=True, highlight=False)


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_metafeatures(dataset: Dataset, features: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"meta-features · {dataset.name} · {dataset.task} · {dataset.n_rows} rows × "
                        f"{dataset.X.shape[1]} features", title_justify="left")
    table.add_column("group")
    table.add_column("meta-feature")
    table.add_column("value", justify="right")
    for name, value in features.items():
        group, short = name.split(".", 1)
        table.add_row(group, short, f"{value:.4g}")
    Console().print(table)


def print_recommendations(recs: list[Recommendation], *, dataset: Dataset, method: str, table: RecordTable,
                          written: list[Path],
                          params: dict[str, float] | None = None, notes: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from expt.meta.advise import key_params

    chosen = ", ".join(f"{k}={v:g}" for k, v in (params or {}).items())
    out = Table(title=f"recommendations for {dataset.name} ({dataset.task}, {dataset.n_rows} rows) · {method}"
                      + (f" ({chosen})" if chosen else "") + f", {len(table.datasets)} datasets · {table.metric}",
                title_justify="left")
    out.add_column("#", justify="right")
    out.add_column("model", overflow="fold")
    out.add_column("params (vs defaults)", overflow="fold")
    out.add_column(f"expected {table.metric}", justify="right", no_wrap=True)
    out.add_column("regret (best of 1..#)", justify="right")
    out.add_column("evidence: datasets (effective number), nearest", overflow="fold")
    for rec in recs:
        score = "-" if rec.expected_score is None else f"{rec.expected_score:.3f}" + (
            f" ± {rec.score_sd:.3f}" if rec.score_sd is not None else "")
        support = sorted(rec.support, key=lambda s: (s["distance"] is None, s["distance"] or 0.0, s["regret"]))[:3]
        evidence = f"({rec.evidence:.1f}) " + ", ".join(f"{s['dataset']} {s['score']:.3f}" for s in support)
        model = rec.config["model"]
        out.add_row(str(rec.rank), model["name"], key_params(model, dataset.task), score,
                    f"{rec.expected_regret:.2f}" + ("" if rec.expected_best is None else f" ({rec.expected_best:.2f})"),
                    evidence)
    out.caption = ("regret: expected normalized regret (0: a dataset's best configuration; 1: its median or worse), "
                   "shrunk towards 1 where the evidence is thin; in brackets, of the best of recommendations 1..#")
    console = Console()
    console.print(out)
    for note in notes or []:
        console.print(f"note: {note}", soft_wrap=True, highlight=False)
    for path in written:
        console.print(f"wrote {path}   run it: expt train conf={path}", soft_wrap=True, highlight=False)


def print_drift(plan: Rerun) -> None:
    from rich.console import Console
    from rich.table import Table

    run = plan.original
    table = Table(title=f"re-running {plan.kind} run {run.info.run_id} ({run.info.run_name}): what changed since",
                  title_justify="left")
    for col in ("", "logged run", "now", ""):
        table.add_column(col, overflow="fold")
    for row in plan.drift:
        table.add_row(row.what, row.then, row.now, "[yellow]changed[/]" if row.changed else "")
    Console(stderr=True).print(table)


def print_matches(matches: list[Match], original: str, new: str) -> None:
    """Every compared result, then what differed again on its own, so a long table does not hide it."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"results: logged run {original} vs rerun {new}", title_justify="left")
    table.add_column("result", no_wrap=True)  # whole: it is what the summary line names
    columns: tuple[tuple[str, JustifyMethod], ...] = (("logged", "right"), ("rerun", "right"), ("", "left"))
    for col, just in columns:
        table.add_column(col, justify=just, overflow="fold")
    extras = [m for m in matches if m.extra]
    matches = [m for m in matches if not m.extra]
    for m in matches:
        verdict = ("[green]same[/]" if m.exact else "[green]same within the float tolerance[/]" if m.same
                   else "[red]differs[/]" + (f" ({escape(m.note)})" if m.note else ""))
        table.add_row(escape(m.what), *_pair(m.then, m.now), verdict)
    console = Console()
    console.print(table)
    differ = [m for m in matches if not m.same]
    if not matches:
        console.print("nothing to compare: neither run logged a score or a model", highlight=False)
    elif not differ and all(m.exact for m in matches):
        console.print(f"all {len(matches)} results match exactly", highlight=False)
    elif not differ:
        close = [m.what for m in matches if not m.exact]
        console.print(f"all {len(matches)} results match, {len(close)} of them within the float tolerance (relative "
                      f"1e-9, another CPU's last bits): {', '.join(close)}", highlight=False, markup=False)
    else:
        console.print(f"{len(differ)} of {len(matches)} results differ: {', '.join(m.what for m in differ)}",
                      highlight=False, markup=False)
    if extras:
        console.print(f"{len(extras)} results only the rerun logged, not compared: "
                      f"{', '.join(m.what for m in extras[:6])}{', ...' if len(extras) > 6 else ''}",
                      highlight=False, markup=False)


def _pair(then: Value | None, now: Value | None) -> tuple[str, str]:
    """Two scores to 4 places, or to as many as it takes to see that they differ (the check is exact, so a
    difference in the 12th place is one); parameters and hashes as they are."""
    from rich.markup import escape

    if isinstance(then, float) and isinstance(now, float) and then != now and then == then and now == now:
        for places in range(4, 18):
            a, b = f"{then:.{places}f}", f"{now:.{places}f}"
            if a != b:
                return a, b
        return repr(then), repr(now)
    a, b = ("—" if v is None else _fmt(v) if isinstance(v, float) else escape(str(v)) for v in (then, now))
    return a, b


def print_runs(rows: list[dict[str, Any]], uri: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs in {uri}", title_justify="left")
    table.add_column("run id", no_wrap=True)  # whole: show, compare and rerun take it
    columns: tuple[tuple[str, JustifyMethod], ...] = (("type", "left"), ("data", "left"), ("model", "left"),
                                                      ("metric", "left"), ("score", "right"), ("status", "left"),
                                                      ("started", "left"))
    for col, just in columns:
        table.add_column(col, justify=just, overflow="fold")
    for row in rows:
        score = "-" if row["value"] is None else f"{row['value']:.4f}" + (
            f" ± {row['std']:.4f}" if row.get("std") is not None else "")
        table.add_row(row["run_id"], row["type"], row["data"], row["model"], row["metric"] or "-", score,
                      row["status"], row["started"] or "")
    Console().print(table)
    if not rows:
        Console().print("no runs match; `expt train` and `expt sweep` make them", highlight=False)


def print_show(shown: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    score = "-" if shown["value"] is None else f"{shown['metric']} {shown['value']:.4f}" + (
        f" ± {shown['std']:.4f}" if shown.get("std") is not None else "")
    console.print(f"{shown['type']} run {shown['run_id']} ({shown['name']}) · {shown['status']} · {shown['data']} · "
                  f"{shown['model']} · {score}", highlight=False, soft_wrap=True)
    if shown["folds"]:
        folds = Table(title="folds", title_justify="left")
        folds.add_column("run")
        folds.add_column("status")
        folds.add_column("scores", overflow="fold")
        for fold in shown["folds"]:
            folds.add_row(fold["name"], fold["status"], ", ".join(f"{k} {v:.4f}" for k, v in fold["scores"].items()))
        console.print(folds)
    if shown["children"]:
        console.print("children: " + "; ".join(f"{kind}: " + ", ".join(f"{n} {s}" for s, n in states.items())
                                               for kind, states in shown["children"].items()), highlight=False)
    for title, items in (("metrics", {k: f"{v:.6g}" for k, v in shown["metrics"].items()}),
                         ("config", shown["params"]), ("tags", shown["tags"])):
        table = Table(title=title, title_justify="left", show_header=False)
        table.add_column("key")
        table.add_column("value", overflow="fold")
        for key, value in items.items():
            table.add_row(key, str(value))
        console.print(table)


def print_compare(diff: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    a, b = diff["a"], diff["b"]
    console = Console()
    console.print(f"A = {a['run_id']} ({a['type']}, {a['data']}, {a['model']})\nB = {b['run_id']} ({b['type']}, "
                  f"{b['data']}, {b['model']})", highlight=False, soft_wrap=True)
    for title, rows in (("config values that differ", diff["params"]), ("tags that differ", diff["tags"])):
        if rows:
            table = Table(title=title, title_justify="left")
            for col in ("key", "A", "B"):
                table.add_column(col, overflow="fold")
            for row in rows:
                table.add_row(row["key"], str(row["a"]), str(row["b"]))
            console.print(table)
    if not diff["params"]:
        console.print("the two configs are the same", highlight=False)
    table = Table(title="metrics", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (("metric", "left"), ("A", "right"), ("B", "right"),
                                                      ("B - A", "right"))
    for col, just in columns:
        table.add_column(col, justify=just)
    for row in diff["metrics"]:
        table.add_row(row["key"], _fmt(row["a"]), _fmt(row["b"]),
                      "" if row["diff"] is None else f"{row['diff']:+.4g}")
    console.print(table)
