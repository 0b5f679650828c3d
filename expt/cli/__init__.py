"""The ``expt`` command line: parse, compose, call the features, map errors to exit codes.

Thin on purpose. Heavy libraries (mlflow, sklearn, torch, optuna, pandas) are
imported inside the commands, so ``expt --help`` starts in a fraction of a second.
This package builds ``app`` and registers each command group on it; no group module
imports back into this one.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from expt import __version__
from expt.cli import learn, model, run, runs

app = typer.Typer(
    name="expt",
    help="Config-driven ML experiments: composed configs, cross-validation, MLflow tracking.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: rendering it with rich costs ~130 ms of imports
)


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


for module in (run, learn, runs, model):  # in the order `expt --help` lists them
    module.group.register(app)


def main() -> None:
    import gc
    import os

    timeline = bool(os.environ.get("EXPT_TIMELINE"))  # benchmarks/timeline.py: when each phase ended
    if timeline:
        from expt.core.timeline import mark

        mark("cli imported")
    try:
        code = _run_app()
    finally:
        if timeline:
            mark("command done")
        # Nothing is collected after the command: freezing skips the ~0.5 s final GC pass over MLflow's objects.
        gc.freeze()
        _reap_children()
    sys.exit(code)


def _reap_children() -> None:
    """Nothing of the command outlives it, zombies included (issue 22).

    The ``<defunct>`` python seen after ``expt sweep`` returned was multiprocessing's resource tracker: the first
    spawned worker (the sweep's sink) starts it, and it exits only once this process has, when its pipe closes;
    orphaned, it is reparented to PID 1, which in a container is often not an init that reaps. Stopping it here
    (it releases what it tracks and exits) and waiting for it, then reaping any other finished child, leaves no
    process of the command behind. First multiprocessing's own exit handler runs, as it would at exit anyway: its
    finalizers release the queues' semaphores; stopped before them, the tracker released them as leaked and each
    finalizer then printed a FileNotFoundError traceback. ``_exit_function`` and ``_stop`` are the standard
    library's own shutdown steps, run in its order, a little earlier.
    """
    import os

    util = sys.modules.get("multiprocessing.util")
    if util is not None and hasattr(util, "_exit_function"):
        util._exit_function()
    tracker = sys.modules.get("multiprocessing.resource_tracker")
    shared = getattr(tracker, "_resource_tracker", None)
    if shared is not None and getattr(shared, "_pid", None) is not None:
        try:
            shared._stop()
        except Exception:  # noqa: BLE001, S110 - at exit, a tracker that cannot stop is no reason to fail the command
            pass
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _run_app() -> int:
    """Run the app; click's own errors (unknown command, bad option value) become one line like every other."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # typer's click: UsageError, BadParameter, NoSuchOption, ...
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # type: ignore[attr-defined]  # a click UsageError (typer's private copy): `expt` alone prints help
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


if __name__ == "__main__":
    main()
