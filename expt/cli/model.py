"""``expt register``, ``predict`` and ``report``: from a run to a registered model, predictions, a document.

Like every command, they import the heavy libraries inside.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from expt.cli.common import Debug, Group, user_errors

group = Group()
NO_STORE = "run from the folder that holds mlruns.db, or pass --tracking-uri"

TrackingUri = Annotated[str | None, typer.Option("--tracking-uri", "-u", help="MLflow tracking URI (default: "
                                                 "$MLFLOW_TRACKING_URI, else sqlite:///mlruns.db in this folder).")]


def _uri(value: str | None) -> str:
    import os

    from expt.tracking.uri import existing_store

    return existing_store(value or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlruns.db", missing=NO_STORE)


def _client(uri: str):  # noqa: ANN202 - an MlflowClient
    from expt.tracking.uri import new_client

    return new_client(uri, registry_uri=uri)


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

        uri = _uri(tracking_uri)
        done = do_register(_client(uri), run_id, name, alias)
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
    model: Annotated[str, typer.Option("--model", "-m", help="runs:/ID/model, models:/NAME@alias, models:/NAME/N, "
                                       "or a run id (a train run's model, a sweep's final model).")],
    out: Annotated[str | None, typer.Option("--out", "-o", help="Write the predictions here as CSV "
                                            "(default: print them).")] = None,
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
        uri = _uri(tracking_uri)
        ref = resolve_model(_client(uri), model)
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
    out: Annotated[Path | None, typer.Option("--out", "-o", help="The HTML file to write (a Markdown twin goes "
                                             "beside it); default report-<run>.html here.")] = None,
    open_it: Annotated[bool, typer.Option("--open", help="Open the report in a web browser.")] = False,
    no_log: Annotated[bool, typer.Option("--no-log", help="Do not log report.html with the run.")] = False,
    tracking_uri: TrackingUri = None,
    debug: Debug = False,
) -> None:
    """A self-contained HTML report (and Markdown) of a train run or a sweep, logged with the run as report.html."""
    with user_errors(debug):
        from expt.publish.report import write_report

        uri = _uri(tracking_uri)
        written = write_report(_client(uri), run_id, out, log=not no_log)
        typer.echo(f"report      {written.html}")
        typer.echo(f"markdown    {written.markdown}")
        if written.logged:
            typer.echo(f"logged      {written.logged}")
        if open_it:
            import webbrowser

            webbrowser.open(written.html.resolve().as_uri())
