"""What every command shares: the common options, one-line errors, and override checks."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO, TypeVar

import typer

if TYPE_CHECKING:
    from mlflow import MlflowClient


Command = TypeVar("Command", bound=Callable[..., Any])


class Group:
    """The commands of one module, kept until ``expt.cli`` registers them on its app.

    Each command module fills its own group, so none imports the app module (which
    imports them all): the commands can be read, and tested, one module at a time.
    """

    def __init__(self) -> None:
        self.commands: list[tuple[Callable[..., Any], dict[str, Any]]] = []

    def command(self, **kwargs: Any) -> Callable[[Command], Command]:  # noqa: ANN401 - typer's, passed on as is
        def add(function: Command) -> Command:
            self.commands.append((function, kwargs))
            return function

        return add

    def register(self, app: typer.Typer) -> None:
        for function, kwargs in self.commands:
            app.command(**kwargs)(function)


OVERRIDES_HELP = (
    "Hydra overrides after the options: group choices (data=wine model=svm), values "
    "(model.estimator.C=3 learner.cv.folds=10), a recipe or logged config (conf=recipes/wine_svm.yaml)."
)
ConfigDir = Annotated[
    Path | None,
    typer.Option("--config-dir", help="A folder of your own config groups, searched before the packaged ones."),
]
WITH_OVERRIDES: dict[str, Any] = {
    "context_settings": {"allow_extra_args": True, "ignore_unknown_options": True},
    "epilog": OVERRIDES_HELP,
}
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")]
TrustTarget = Annotated[
    list[str] | None,
    typer.Option("--trust-target", metavar="PREFIX", help="Also allow a _target_ under this module or class path "
                 "(repeatable; e.g. mylib.models). Only for code you trust: a config may come from anywhere."),
]
Cluster = Annotated[str | None, typer.Option(
    "--cluster", metavar="ADDRESS", help="Run on this Dask scheduler's workers (e.g. tcp://host:8786; default "
    "$EXPT_CLUSTER; pip install 'expt-runner[cluster]'): train -m runs its grid's cells there; sweep starts its "
    "--workers N sweep processes there (with a --storage on a database server).")]


JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
MultiRun = Annotated[bool, typer.Option("--multirun", "-m", help="A grid: one run per combination of the swept "
                                        "overrides (data=a,b model=x,y; range(), choice(), glob()), all compared at "
                                        "the end in one table with tests.")]

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
NO_STORE = "run from the folder that holds mlruns.db, or pass --tracking-uri"
TrackingUri = Annotated[str | None, typer.Option("--tracking-uri", "-u", envvar=TRACKING_URI_ENV, help="MLflow "
                                                 "tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                                 "sqlite:///mlruns.db in this folder).")]


def out_option(help: str) -> Any:  # noqa: ANN401 - what typer.Option returns, an option's default
    """``-o/--out``, the same two flags on every command that writes a file; what it writes is the command's own."""
    return typer.Option("--out", "-o", help=help)


def resolve_uri(tracking_uri: str | None) -> str:
    """The store a command reads. typer has already put ``$MLFLOW_TRACKING_URI`` into ``tracking_uri`` when the
    flag is absent (an empty variable counts as unset), so only the default is left to apply."""
    return tracking_uri or DEFAULT_TRACKING_URI


def open_store(tracking_uri: str | None, *, registry: bool = False) -> MlflowClient:
    """An MlflowClient on a store that must already exist: reading runs never creates an empty store by mistake.

    ``registry`` points the model registry at the same store (register, predict, report read models from it).
    """
    from expt.tracking.uri import existing_store, new_client

    uri = existing_store(resolve_uri(tracking_uri), missing=NO_STORE)
    return new_client(uri, registry_uri=uri if registry else None)


@contextlib.contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn an ExptError into one line and its exit code; keep tracebacks for --debug."""
    from expt.core.errors import ExptError

    _quiet_libraries(debug)
    try:
        yield
    except ExptError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        if debug:
            raise
        typer.echo("interrupted: runs in progress were marked KILLED", err=True)
        raise typer.Exit(130) from None
    except Exception as exc:  # last line of defence for a one-line message (--debug re-raises it)
        if debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        typer.echo(f"error: unexpected {type(exc).__name__}: {first} (run again with --debug for the traceback)",
                   err=True)
        raise typer.Exit(1) from None


def _quiet_libraries(debug: bool) -> None:
    """Library chatter (alembic migrations, MLflow INFO) is noise in a CLI; warnings become one line each."""
    import logging
    import os
    import warnings

    if not debug:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        logging.getLogger("alembic").setLevel(logging.WARNING)

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def split_args(args: list[str]) -> list[str]:
    from expt.core.errors import UsageError

    unknown = [a for a in args if a.startswith("-")]
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r}; see expt train --help (overrides are key=value)")
    return args


def check_name(option: str, value: str | None) -> None:
    """A sweep id names the folder outputs/sweeps/<id>: a name, never a path that climbs out of it."""
    import re

    from expt.core.errors import UsageError

    if value is not None and (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value) or ".." in value):
        raise UsageError(f"{option} {value!r} is not a name: use letters, digits, '.', '_' and '-' "
                         "(it names the folder outputs/sweeps/<id>), e.g. exp42")
