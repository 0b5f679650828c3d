"""``expt recommend --probe K`` and ``--resume PROBE_ID``: the options checked, the probe run
(:mod:`expt.kb.probe`), its ranking printed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from expt.cli.grid_render import GridProgress
    from expt.kb.probe import ProbeOptions, ProbeOutcome

NOT_WITH_PROBE = {"top": "--top (--probe K says how many)", "method": "--method (each candidate is picked given the "
                  "scores so far)", "evaluate": "--evaluate"}


def probe_command(ctx: typer.Context) -> None:
    """What ``expt recommend`` hands over when a probe is asked for: every option it was given, by name."""
    from expt.cli.common import check_name
    from expt.core.errors import UsageError
    from expt.kb.probe import new_probe_id, probe_dir, resume_probe, start_probe

    p = ctx.params
    given = {n for n in p if getattr(ctx.get_parameter_source(n), "name", "") == "COMMANDLINE"}  # not a default
    unknown = [a for a in ctx.args if a.startswith("-")]
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r}; see expt recommend --help (overrides are key=value)")
    overrides = list(ctx.args)
    if p["resume"] is not None:
        check_name("--resume", p["resume"])
        extra = [str(p["dataset"])] if p["dataset"] is not None else []
        extra += [f"--{n.replace('_', '-')}" for n in sorted(given - {"dataset", "resume", "json_out", "debug",
                                                                      "cluster"})]
        if extra + overrides:
            raise UsageError(f"--resume continues the stored probe with its own options; drop {(extra + overrides)[0]}")
        probe_id = p["resume"]
    else:
        if p["probe"] is None:
            raise UsageError("--budget-seconds, --cluster and overrides are for a probe; add --probe K "
                             "(e.g. expt recommend dataset.yaml --probe 5 learner.cv.folds=3)")
        clash = next((text for n, text in NOT_WITH_PROBE.items() if n in given), None)
        if clash is not None:
            raise UsageError(f"{clash} does not apply to a probe; drop it")
        if p["dataset"] is None:
            raise UsageError("pass the dataset.yaml to probe: expt recommend dataset.yaml --probe 5")
        probe_id = new_probe_id()
    try:
        with ProbeProgress() as progress:
            if p["resume"] is not None:
                from expt.grid.cluster import cluster_address

                outcome = resume_probe(probe_id, progress, cluster_address(p["cluster"]) if p["cluster"] else None)
            else:
                outcome = start_probe(_options(p, overrides), progress, probe_id)
    except KeyboardInterrupt:
        if (probe_dir(probe_id) / "probe.json").is_file():
            typer.echo(f"probe {probe_id} stopped; continue it with: expt recommend --resume {probe_id}", err=True)
        raise
    print_probe(outcome, p["json_out"])


def _options(p: dict[str, Any], overrides: list[str]) -> ProbeOptions:
    """The options as the state file keeps them: paths absolute, so that ``--resume`` needs no folder but this."""
    from expt.grid.cluster import cluster_address
    from expt.kb.probe import ProbeOptions

    dataset: Path = p["dataset"]
    sources = list(p["records"]) if p["records"] else [s for s in ("records.jsonl",) if Path(s).is_file()]
    return ProbeOptions(
        dataset=str(dataset.absolute()) if dataset.is_file() else str(dataset), k=p["probe"],
        budget_seconds=p["budget_seconds"], metric=p["metric"], families=p["family"],
        max_fit_seconds=p["max_fit_seconds"], include_self=p["include_self"],
        records=[str(Path(s).absolute()) if Path(s).exists() else s for s in sources], kb=not p["no_kb"],
        seed=p["seed"], overrides=overrides, out=str(p["out"].absolute()) if p["out"] else None,
        cluster=cluster_address(p["cluster"]))


class ProbeProgress:
    """The grid's bar over the candidates, on stderr (transient), naming the one that runs."""

    def __init__(self) -> None:
        from rich.progress import TextColumn

        from expt.cli.grid_render import GridProgress

        self.bar = GridProgress()
        self.bar.progress.columns = (TextColumn("probe"), *self.bar.progress.columns[1:])

    def __enter__(self) -> GridProgress:
        return self.bar.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)


def print_probe(outcome: ProbeOutcome, json_out: bool) -> None:
    if json_out:
        import json

        typer.echo(json.dumps(outcome.as_dict(), indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    done = [c for c in outcome.ranking if c.status == "done"]
    table = Table(title=f"probe {outcome.probe_id} on {outcome.dataset} ({outcome.task}, {outcome.metric}): "
                        f"{len(outcome.ranking)} of {outcome.k} candidates tried in {outcome.spent_seconds:.0f} s",
                  title_justify="left")
    for name in ("rank", "#", "configuration (params vs defaults)", f"CV {outcome.metric}", "fit s", "p vs best"):
        table.add_column(name, justify="left" if name.startswith(("conf", "CV")) else "right", overflow="fold")
    for rank, c in enumerate(outcome.ranking, 1):
        ok = c.status == "done"
        score = f"{c.score:.4f} ± {c.sd or 0.0:.4f}" if ok else f"[dim]{c.status}[/]: {c.reason}"
        p = "★" if rank == 1 and ok else ("" if c.p_vs_best is None else f"{c.p_vs_best:.2g}")
        fit = "" if c.fit_seconds is None else f"{c.fit_seconds:.2f}"
        table.add_row(str(rank) if ok else "", str(c.n), c.label, score, fit, p)
    table.caption = ("fit s: mean seconds per fold's fit; p: corrected resampled t-test against the best on the "
                     "same folds; #: the order the candidates were picked in")
    console = Console()
    console.print(table)
    say = lambda text: console.print(text, soft_wrap=True, highlight=False)  # noqa: E731
    for note in outcome.notes:
        say(f"note: {note}")
    if outcome.not_started:
        say(f"stopped at --budget-seconds: {outcome.not_started} candidate(s) not started (next: {outcome.next_pick})")
    if done:
        say(f"winner: #{done[0].n} {done[0].label}, written to {outcome.written[0]} (all {len(done)} ranked in "
            f"{Path(outcome.written[0]).parent})")
        say(f"  train it:  {outcome.train_command}")
        say(f"  sweep it:  {outcome.sweep_command}")
        say(outcome.caveat)
    say(f"MLflow: probe-{outcome.probe_id} (run {outcome.run_id}) in {outcome.uri}"
        + (f"; records appended to {outcome.records}" if outcome.records else ""))
