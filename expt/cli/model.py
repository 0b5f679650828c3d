"""``expt register``, ``predict`` and ``report``: from a run to a registered model, predictions, a document.

Like every command, they import the heavy libraries inside.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from expt.cli.common import Debug, Group, TrackingUri, open_store, out_option, user_errors

group = Group()


@group.command()
def register(
    run_id: Annotated[str, typer.Argument(help="A train run (its model), a sweep (its final model), or runs:/ID/model.",
                                          show_default=False)],
    name: Annotated[str, typer.Option("--name", help="The registered model's name (created if new).")],
    alias: Annotated[str | None, typer.Option("--alias", help="Point this alias at the new version "
                                              "(e.g. champion); predict and serve with models:/NAME@ALIAS.")] = None,
    tracking_uri: TrackingUri = None,
    debug: Debug = False,
) -> None:
    """Register a run's model in MLflow's model registry as a new version, optionally under an alias."""
    with user_errors(debug):
        from expt.publish.registry import register as do_register
        from expt.tracking.uri import mask_credentials

        client = open_store(tracking_uri, registry=True)
        uri = client.tracking_uri
        done = do_register(client, run_id, name, alias)
        ref = f"models:/{done.name}@{done.alias}" if done.alias else f"models:/{done.name}/{done.version}"
        typer.echo(f"registered {done.name} version {done.version}{f' as @{done.alias}' if done.alias else ''} "
                   f"from run {done.run_id} ({done.source})")
        typer.echo(f"predict     expt predict --model {ref} data.csv --out predictions.csv")
        typer.echo(f"serve       MLFLOW_TRACKING_URI={mask_credentials(uri)} mlflow models serve -m {ref} "
                   "--env-manager local --port 5001")


@group.command()
def predict(
    data: Annotated[Path, typer.Argument(help="A CSV, TSV or Parquet file with the model's input columns.",
                                         show_default=False)],
    model: Annotated[str, typer.Option("--model", help="runs:/ID/model, models:/NAME@alias, models:/NAME/N, "
                                       "or a run id (a train run's model, a sweep's final model).")],
    out: Annotated[str | None, out_option("Write the predictions here as CSV (default: print them).")] = None,
    proba: Annotated[bool, typer.Option("--proba", help="Add a proba_<class> column per class.")] = False,
    tracking_uri: TrackingUri = None,
    debug: Debug = False,
) -> None:
    """Predict with a logged or registered model; the file's columns are checked against the model's signature."""
    with user_errors(debug):
        from expt.publish.predict import check_out, write_csv
        from expt.publish.predict import predict as do_predict
        from expt.publish.registry import resolve_model

        if out is not None:
            check_out(out)
        client = open_store(tracking_uri, registry=True)
        uri = client.tracking_uri
        ref = resolve_model(client, model)
        table, ignored = do_predict(ref.uri, uri, str(data), proba=proba)
        if ignored:
            typer.echo(f"note: left out {len(ignored)} column(s) the model does not take: "
                       f"{', '.join(map(str, ignored[:8]))}{' ...' if len(ignored) > 8 else ''}", err=True)
        if out is None:
            try:
                table.to_csv(sys.stdout, index=False)
                sys.stdout.flush()
            except BrokenPipeError:  # `expt predict ... | head`: the reader has what it wanted
                import os

                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return
        write_csv(table, out)
        typer.echo(f"wrote {len(table)} predictions of {ref.label} to {out}", err=True)


@group.command()
def report(
    run_id: Annotated[str, typer.Argument(help="A train or sweep run (a fold or trial leads to it).",
                                          show_default=False)],
    out: Annotated[Path | None, out_option("The HTML file to write (a Markdown twin goes beside it); default "
                                           "report-<run>.html here.")] = None,
    open_it: Annotated[bool, typer.Option("--open", help="Open the report in a web browser.")] = False,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not log report.html with the run.")] = False,
    tracking_uri: TrackingUri = None,
    debug: Debug = False,
) -> None:
    """A self-contained HTML report (and Markdown) of a train run or a sweep, logged with the run as report.html."""
    with user_errors(debug):
        from expt.publish.report import write_report

        written = write_report(open_store(tracking_uri, registry=True), run_id, out, log=not no_log)
        typer.echo(f"report      {written.html}")
        typer.echo(f"markdown    {written.markdown}")
        if written.logged:
            typer.echo(f"logged      {written.logged}")
        if open_it:
            import webbrowser

            webbrowser.open(written.html.resolve().as_uri())
