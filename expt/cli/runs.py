"""``expt rerun``, ``runs``, ``show``, ``compare`` and ``ui``: the tracking store from the terminal.

Like every command, they import the heavy libraries inside.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from expt.cli.common import (
    NO_STORE,
    WITH_OVERRIDES,
    Debug,
    Group,
    JsonOut,
    TrackingUri,
    TrustTarget,
    open_store,
    resolve_uri,
    split_args,
    user_errors,
)

if TYPE_CHECKING:
    from expt.reproduce.rerun import Rerun

group = Group()


def _emit(data: object, json_out: bool, printer: str, *args: object) -> None:
    """--json prints the data as is; otherwise the named table printer of expt.cli.render draws it."""
    if json_out:
        import json

        typer.echo(json.dumps(data, indent=2, default=str))
        return
    import expt.cli.render

    getattr(expt.cli.render, printer)(data, *args)


@group.command(**WITH_OVERRIDES, options_metavar="[OPTIONS] RUN_ID [OVERRIDES]...")
def rerun(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="A train or sweep run (or any run under one).", show_default=False)],
    tracking_uri: TrackingUri = None,
    allow_data_drift: Annotated[bool, typer.Option("--allow-data-drift", help="Run even if the dataset changed "
                                                   "since (its scores cannot match).")] = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if anything differs from the logged run (every "
                                        "fold and outer score, each search's best parameters and inner best, the "
                                        "final model's predictions), 2 if it logged nothing to compare.")] = False,
    trust_target: TrustTarget = None,
    debug: Debug = False,
) -> None:
    """Run again exactly what a logged run ran; report what drifted and whether the results match exactly."""
    differ = False
    with user_errors(debug):
        from expt.cli.render import print_drift, print_matches
        from expt.core.build import trusting
        from expt.core.errors import UsageError
        from expt.reproduce.rerun import compare_scores, plan_rerun
        from expt.tracking.tags import RERUN_OF_TAG
        from expt.tracking.uri import open_client

        uri = resolve_uri(tracking_uri)
        client = open_client(uri, missing=NO_STORE)
        with trusting(trust_target):
            plan = plan_rerun(client, run_id, split_args(list(ctx.args)), uri, allow_data_drift=allow_data_drift,
                              check=check)
            print_drift(plan)
            tags = {RERUN_OF_TAG: plan.original.info.run_id}
            new_id, new_uri = _run_again(plan, tags)
        new_client = client if new_uri == client.tracking_uri else open_client(new_uri, missing=NO_STORE)
        assert plan.dataset is not None  # plan_rerun loads it
        matches = compare_scores(new_client, plan.original, new_id, plan.kind, original_client=client,
                                 X=plan.dataset.X)
        print_matches(matches, plan.original.info.run_id, new_id)
        matches = [m for m in matches if not m.extra]  # only the rerun has them: nothing to check
        if check and not matches:
            raise UsageError(f"neither run {plan.original.info.run_id} nor its rerun {new_id} logged a score or a "
                             "model, so --check has nothing to compare")
        differ = check and not all(m.same for m in matches)
    if differ:  # outside user_errors, which would report the exit as an unexpected error
        raise typer.Exit(1)


def _run_again(plan: Rerun, tags: dict[str, str]) -> tuple[str, str]:
    composed = plan.composed
    if plan.kind == "train":
        from expt.cli.render import TrainProgress, print_train_result
        from expt.core.prepare import prepare
        from expt.train.run import run_train

        prepared = prepare(composed)
        with TrainProgress(prepared) as progress:
            result = run_train(prepared, on_fold=progress.advance, tags=tags)
        print_train_result(result)
        return result.run_id, result.uri
    from expt.cli.render import SweepProgress, print_sweep_result
    from expt.reproduce.rerun import sweep_run_id
    from expt.sweep.runner import SweepOptions, run_sweep

    swept, outcome = run_sweep(composed, SweepOptions(tags=tags), progress_factory=SweepProgress)
    print_sweep_result(swept, outcome)
    return sweep_run_id(outcome["uri"], swept.sweep_id), outcome["uri"]


@group.command()
def runs(
    experiment: Annotated[str | None, typer.Option("--experiment", help="Only this experiment.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Only runs on this dataset (its name).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only runs of this model config.")] = None,
    sort: Annotated[str | None, typer.Option("--sort", help="Best first by this metric (e.g. accuracy_mean).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many rows.")] = 20,
    all_types: Annotated[bool, typer.Option("--all", help="Folds and trials too, not just train and sweep runs.")]
    = False,
    tracking_uri: TrackingUri = None,
    json_out: JsonOut = False,
    debug: Debug = False,
) -> None:
    """A leaderboard of train and sweep runs: newest first, or best first with --sort."""
    with user_errors(debug):
        from expt.reproduce.browse import list_runs
        client = open_store(tracking_uri)
        rows = list_runs(client, experiment=experiment, data=data, model=model, sort=sort, limit=limit,
                         all_types=all_types)
        _emit(rows, json_out, "print_runs", client.tracking_uri)


@group.command()
def show(
    run_id: Annotated[str, typer.Argument(help="The run to show.", show_default=False)],
    tracking_uri: TrackingUri = None,
    json_out: JsonOut = False,
    debug: Debug = False,
) -> None:
    """One run: its config, metrics, fold scores and a summary of its children."""
    with user_errors(debug):
        from expt.reproduce.browse import show_run
        from expt.reproduce.rerun import get_run
        client = open_store(tracking_uri)
        _emit(show_run(client, get_run(client, run_id)), json_out, "print_show")


@group.command()
def compare(
    run_a: Annotated[str | None, typer.Argument(help="The first run.", show_default=False)] = None,
    run_b: Annotated[str | None, typer.Argument(help="The second run.", show_default=False)] = None,
    grid: Annotated[str | None, typer.Option("--grid", metavar="GRID_ID", help="A grid's comparison table and "
                                             "tests again (expt train -m printed its id).")] = None,
    tracking_uri: TrackingUri = None,
    json_out: JsonOut = False,
    debug: Debug = False,
) -> None:
    """Two runs side by side: the config values that differ, and every metric with its difference."""
    with user_errors(debug):
        from expt.reproduce.browse import compare_runs
        from expt.reproduce.rerun import get_run
        if grid is not None or run_a is None or run_b is None:
            from expt.cli.grid_render import compare_grid
            compare_grid(lambda: open_store(tracking_uri), grid, (run_a, run_b), json_out)
            return
        client = open_store(tracking_uri)
        _emit(compare_runs(get_run(client, run_a), get_run(client, run_b)), json_out, "print_compare")


@group.command()
def ui(
    port: Annotated[int, typer.Option("--port", help="Port to serve on.")] = 5000,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0 for other machines).")]
    = "127.0.0.1",
    experiment: Annotated[str, typer.Option("--experiment", help="The experiment the links open.")] = "expt",
    sweep: Annotated[str | None, typer.Option("--sweep", metavar="SWEEP_ID", help="The sweep whose run tree the "
                                              "link shows (default: the newest).")] = None,
    open_it: Annotated[bool, typer.Option("--open", help="Open the link in a web browser once the UI is up.")]
    = False,
    tracking_uri: TrackingUri = None,
    debug: Debug = False,
) -> None:
    """Start the MLflow UI on the tracking store (Ctrl-C stops it); its link shows a sweep first, its tree nested."""
    with user_errors(debug):
        import os
        from urllib.parse import quote

        from expt.cli.common import check_name
        from expt.core.errors import UsageError
        from expt.tracking.client import runs_view
        from expt.tracking.tags import RUN_TYPE_TAG, SWEEP_RUN, tag_filter
        from expt.tracking.uri import existing_store, mask_credentials

        check_name("--sweep", sweep)
        uri = resolve_uri(tracking_uri)
        if uri.startswith(("http://", "https://")):
            view, _ = runs_view(uri.rstrip("/"), uri, experiment, sweep)
            raise UsageError(f"{mask_credentials(uri)} is a tracking server: it serves its own UI; open "
                             f"{mask_credentials(view)}")
        uri = existing_store(uri, missing=NO_STORE)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - a comparison: the link's host
        view, sweep_id = runs_view(f"http://{shown}:{port}", uri, experiment, sweep)
        typer.echo(f"MLflow UI for {uri} on http://{host}:{port} (Ctrl-C stops it)", err=True)
        typer.echo(f"open        {view}", err=True)
        if sweep_id is not None:
            every = view.split("?")[0] + "?searchFilter=" + quote(tag_filter(RUN_TYPE_TAG, SWEEP_RUN), safe="")
            typer.echo(f"            sweep {sweep_id} first, its outer folds and trials nested under it", err=True)
            typer.echo(f"sweeps      {every}", err=True)
        if open_it:
            _open_when_up(shown, port, view)
        # One person's local UI: one uvicorn worker (MLflow's default is 4) and no MLflow 3 job runner (seven huey
        # consumers that each import MLflow, for GenAI jobs expt never submits): ~20 CPU-s and ten processes less
        # per start. The environment may still ask for them (MLFLOW_WORKERS, MLFLOW_SERVER_ENABLE_JOB_EXECUTION).
        os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        workers = os.environ.get("MLFLOW_WORKERS", "1")
        os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,  # noqa: S606
                                   "--host", host, "--port", str(port), "--workers", workers])


OPENER = """import socket, sys, time, webbrowser
for _ in range(240):
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
        break
    except OSError:
        time.sleep(0.5)
webbrowser.open(sys.argv[3])
"""


def _open_when_up(host: str, port: int, url: str) -> None:
    """A detached helper that waits for the UI's port and opens the link (this process becomes the UI)."""
    import subprocess

    subprocess.Popen([sys.executable, "-c", OPENER, host, str(port), url], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
