"""The ``expt`` command line: parse, compose, call the core, map errors to exit codes.

Thin on purpose. Heavy libraries (mlflow, sklearn, torch, optuna, pandas) are
imported inside the commands, so ``expt --help`` starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from expt import __version__

app = typer.Typer(
    name="expt",
    help="Config-driven ML experiments: composed configs, cross-validation, MLflow tracking.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: rendering it with rich costs ~130 ms of imports
)

OVERRIDES_HELP = (
    "Hydra overrides after the options: group choices (data=wine model=svm), values "
    "(model.estimator.C=3 learner.cv.folds=10), a recipe or logged config (conf=recipes/wine_svm.yaml)."
)
ConfigDir = Annotated[
    Path | None,
    typer.Option("--config-dir", help="A folder of your own config groups, searched before the packaged ones."),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")]
TrustTarget = Annotated[
    list[str] | None,
    typer.Option("--trust-target", metavar="PREFIX", help="Also allow a _target_ under this module or class path "
                 "(repeatable; e.g. mylib.models). Only for code you trust: a config may come from anywhere."),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"expt {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Config-driven ML experiments: composed configs, cross-validation, MLflow tracking."""


@contextlib.contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn an ExptError into one line and its exit code; keep tracebacks for --debug."""
    from expt.errors import ExptError

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
    except Exception as exc:  # noqa: BLE001 - last line of defence for a one-line message
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

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def _split_args(args: list[str]) -> list[str]:
    from expt.errors import UsageError

    unknown = [a for a in args if a.startswith("-")]
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r}; see expt train --help (overrides are key=value)")
    return args


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, epilog=OVERRIDES_HELP,
             options_metavar="[OPTIONS] [OVERRIDES]...")
def train(
    ctx: typer.Context,
    cfg: Annotated[bool, typer.Option("--cfg", help="Print the composed config and exit; runs nothing.")] = False,
    resolve: Annotated[bool, typer.Option("--resolve", help="With --cfg: resolve interpolations.")] = False,
    config_dir: ConfigDir = None,
    trust_target: TrustTarget = None,
    debug: Debug = False,
) -> None:
    """Cross-validate one configuration, refit it on all data, and track everything in MLflow.

    The refit is skipped with tracking.log_model=false.
    """
    with user_errors(debug):
        from expt.config import compose, trusting

        composed = compose(_split_args(list(ctx.args)), config_dir=config_dir)
        if cfg:
            from omegaconf import OmegaConf

            typer.echo(OmegaConf.to_yaml(composed.cfg, resolve=resolve), nl=False)
            return
        from expt.report import TrainProgress, print_train_result
        from expt.train import prepare, run_train

        with trusting(trust_target):
            prepared = prepare(composed)
            with TrainProgress(prepared) as progress:
                result = run_train(prepared, on_fold=progress.advance)
        print_train_result(result)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, epilog=OVERRIDES_HELP,
             options_metavar="[OPTIONS] [OVERRIDES]...")
def sweep(
    ctx: typer.Context,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes sharing the studies.")] = 1,
    resume: Annotated[str | None, typer.Option("--resume", metavar="SWEEP_ID",
                                                help="Continue a stopped sweep where it left off.")] = None,
    sweep_id: Annotated[str | None, typer.Option("--sweep-id", help="Name the sweep (join it if it exists).")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL or journal file path "
                                                "(default outputs/sweeps/ID/optuna.journal).")] = None,
    warm_start: Annotated[str | None, typer.Option("--warm-start", metavar="FILE",
                                                    help="YAML list of parameter sets to try first.")] = None,
    cfg: Annotated[bool, typer.Option("--cfg", help="Print the composed config and exit; runs nothing.")] = False,
    status: Annotated[str | None, typer.Option("--status", metavar="SWEEP_ID",
                                                help="Show a sweep's progress from its storage; runs nothing.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="With --status: print JSON instead of a table.")] = False,
    config_dir: ConfigDir = None,
    trust_target: TrustTarget = None,
    debug: Debug = False,
) -> None:
    """Nested cross-validation: an Optuna search per outer fold, every fold and trial tracked in MLflow."""
    with user_errors(debug):
        from expt.errors import UsageError

        for option, value in (("--sweep-id", sweep_id), ("--resume", resume), ("--status", status)):
            _check_name(option, value)
        if status:
            _sweep_status(status, storage, as_json)
            return
        overrides = _split_args(list(ctx.args))
        if resume and overrides:
            raise UsageError("--resume continues the stored config; drop the overrides (or start a new sweep)")
        if resume and sweep_id and resume != sweep_id:
            raise UsageError("--resume and --sweep-id name different sweeps; pass one")
        from expt.config import compose

        composed = None if resume else compose(overrides, config_dir=config_dir)
        if cfg:
            if composed is None:
                raise UsageError("--cfg shows a new sweep's config; it does not read a stored one")
            from omegaconf import OmegaConf

            typer.echo(OmegaConf.to_yaml(composed.cfg), nl=False)
            return
        from expt.report import SweepProgress, print_sweep_result
        from expt.sweep import SweepOptions, run_sweep

        options = SweepOptions(sweep_id=resume or sweep_id, storage=storage, resume=bool(resume), workers=workers,
                               warm_start=warm_start, config_dir=str(config_dir) if config_dir else None)
        from expt.config import trusting

        with trusting(trust_target):  # an environment variable: the spawned workers inherit it
            result_sweep, result = run_sweep(composed, options, progress_factory=SweepProgress)
        print_sweep_result(result_sweep, result)


def _check_name(option: str, value: str | None) -> None:
    """A sweep id names the folder outputs/sweeps/<id>: a name, never a path that climbs out of it."""
    import re

    from expt.errors import UsageError

    if value is not None and (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value) or ".." in value):
        raise UsageError(f"{option} {value!r} is not a name: use letters, digits, '.', '_' and '-' "
                         "(it names the folder outputs/sweeps/<id>), e.g. exp42")


JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _sweep_status(sweep_id: str, storage: str | None, as_json: bool) -> None:
    import json

    from expt.status import print_status, sweep_status
    from expt.sweep import default_storage

    result = sweep_status(sweep_id, storage or default_storage(sweep_id))
    if as_json:
        typer.echo(json.dumps(result, indent=1))
    else:
        print_status(result)


def main() -> None:
    import gc

    try:
        code = _run_app()
    finally:
        # Nothing is collected after the command: freezing skips the ~0.5 s final GC pass over MLflow's objects.
        gc.freeze()
    sys.exit(code)


def _run_app() -> int:
    """Run the app; click's own errors (unknown command, bad option value) become one line like every other."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # typer's click: UsageError, BadParameter, NoSuchOption, ...
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # `expt` alone prints the help
            return 2
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        message = " ".join(getattr(exc, "format_message", exc.__str__)().split())
        typer.echo(f"error: {message}{hint}", err=True)
        return int(getattr(exc, "exit_code", 2))
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    return code if isinstance(code, int) else 0


# The other commands live in their own modules and register on `app` when imported.
from expt import cli_learn, cli_runs  # noqa: E402, F401

if __name__ == "__main__":
    main()
