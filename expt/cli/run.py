"""``expt train`` and ``expt sweep``: run experiments."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from expt.cli.common import (
    WITH_OVERRIDES,
    Cluster,
    ConfigDir,
    Debug,
    Group,
    JsonOut,
    MultiRun,
    TrustTarget,
    check_name,
    split_args,
    user_errors,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from expt.core.config import Composed

group = Group()


@group.command(**WITH_OVERRIDES, options_metavar="[OPTIONS] [OVERRIDES]...")
def train(
    ctx: typer.Context,
    cfg: Annotated[bool, typer.Option("--cfg", help="Print the composed config and exit; runs nothing.")] = False,
    resolve: Annotated[bool, typer.Option("--resolve", help="With --cfg: resolve interpolations.")] = False,
    config_dir: ConfigDir = None,
    trust_target: TrustTarget = None,
    multirun: MultiRun = False,
    workers: Annotated[int, typer.Option("--workers", min=1, help="With -m: cells run in this many processes.")] = 1,
    resume: Annotated[str | None, typer.Option("--resume", metavar="GRID_ID", help="With -m: continue a stopped "
                                                "grid, skipping its finished cells.")] = None,
    cluster: Cluster = None,
    debug: Debug = False,
) -> None:
    """Cross-validate one configuration, refit it on all data, and track everything in MLflow.

    The refit is skipped with tracking.log_model=false. With -m, a grid of such runs, compared.
    """
    with user_errors(debug):
        if multirun or workers != 1 or resume or cluster:
            _grid("train", list(ctx.args), multirun=multirun, cfg=cfg, workers=workers, resume=resume,
                  config_dir=config_dir, trust_target=trust_target, cluster=cluster)
            return
        from expt.core.build import trusting

        if cfg:
            _print_cfg(_compose_one(split_args(list(ctx.args)), config_dir), resolve)
            return
        from expt.train.process import start_writer

        writer = start_writer()  # first: MLflow's imports (~1.5 s) overlap the compose, the data and the folds
        try:
            composed = _compose_one(split_args(list(ctx.args)), config_dir)
            from expt.core.timeline import mark

            mark("composed")
            from expt.cli.render import TrainProgress, print_train_result
            from expt.core.prepare import prepare
            from expt.train.run import run_train

            with trusting(trust_target):
                prepared = prepare(composed)
                mark("prepared (data, pipeline)")
                with TrainProgress(prepared) as progress:
                    result = run_train(prepared, on_fold=progress.advance, writer=writer)
        finally:
            writer.close()
        mark("train done")
        print_train_result(result)


@group.command(**WITH_OVERRIDES, options_metavar="[OPTIONS] [OVERRIDES]...")
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
    resolve: Annotated[bool, typer.Option("--resolve", help="With --cfg: resolve interpolations.")] = False,
    status: Annotated[str | None, typer.Option("--status", metavar="SWEEP_ID", help="Show a sweep's progress from "
                                                "its storage (with --json, as JSON); runs nothing.")] = None,
    json_out: JsonOut = False,
    config_dir: ConfigDir = None,
    trust_target: TrustTarget = None,
    multirun: MultiRun = False,
    cluster: Cluster = None,
    debug: Debug = False,
) -> None:
    """Nested cross-validation: an Optuna search per outer fold, every fold and trial tracked in MLflow.

    With -m, a grid of sweeps compared by their outer scores; there --workers runs cells in parallel and
    --resume takes a grid id. With --cluster (and a --storage on a database server), --workers N sweep
    processes start on a Dask cluster's workers and join the sweep with this one.
    """
    with user_errors(debug):
        from expt.core.errors import UsageError

        if multirun:
            _grid("sweep", list(ctx.args), multirun=True, cfg=cfg, workers=workers, resume=resume,
                  config_dir=config_dir, trust_target=trust_target, cluster=cluster, one_sweep={
                      "--sweep-id": sweep_id, "--storage": storage, "--warm-start": warm_start, "--status": status})
            return

        for option, value in (("--sweep-id", sweep_id), ("--resume", resume), ("--status", status)):
            check_name(option, value)
        if status:
            _sweep_status(status, storage, json_out)
            return
        overrides = split_args(list(ctx.args))
        if resume and overrides:
            raise UsageError("--resume continues the stored config; drop the overrides (or start a new sweep)")
        if resume and sweep_id and resume != sweep_id:
            raise UsageError("--resume and --sweep-id name different sweeps; pass one")

        composed = None if resume else _compose_one(overrides, config_dir, "sweep")
        if cfg:
            if composed is None:
                raise UsageError("--cfg shows a new sweep's config; it does not read a stored one")
            _print_cfg(composed, resolve)
            return
        from expt.core.timeline import mark

        mark("composed")
        from expt.cli.render import SweepProgress, print_sweep_result
        from expt.core.build import trusting
        from expt.sweep.runner import SweepOptions, run_sweep

        # The trust prefixes are an environment variable: the spawned workers inherit it, and the cluster's
        # workers are given it, so they are started inside the block.
        with trusting(trust_target):
            on_cluster = None
            if cluster is not None:
                sweep_id, storage, on_cluster = _sweep_on_cluster(cluster, composed, overrides, resume or sweep_id,
                                                                  storage, workers, config_dir)
                resume, workers = None, 1  # this process joins like the others; the workers run on the cluster
            options = SweepOptions(sweep_id=resume or sweep_id, storage=storage, resume=bool(resume),
                                   workers=workers, warm_start=warm_start,
                                   config_dir=str(config_dir) if config_dir else None)
            try:
                result_sweep, result = run_sweep(composed, options, progress_factory=SweepProgress)
            finally:
                for problem in on_cluster() if on_cluster is not None else []:
                    typer.echo(f"warning: {problem}", err=True)
        mark("sweep done")
        print_sweep_result(result_sweep, result)


def _sweep_on_cluster(cluster: str, composed: Composed | None, overrides: list[str], sweep_id: str | None,
                      storage: str | None, workers: int, config_dir: Path | None,
                      ) -> tuple[str, str, Callable[[], list[str]]]:
    """``expt sweep --workers N --cluster ADDRESS``: N processes on the cluster's workers join the sweep through
    its storage (a database server's), writing to a tracking store they share; refused in one line otherwise.
    Returns the sweep's id and storage, and what waits for the workers."""
    from expt.core.config import resolve_values
    from expt.core.errors import UsageError
    from expt.core.settings import settings_of
    from expt.grid.cluster import reachable_storage, shared_uri, start_sweep_workers
    from expt.sweep.storage import new_sweep_id

    if composed is None:
        raise UsageError("--cluster starts workers on a new or named sweep: pass its overrides with --sweep-id "
                         "instead of --resume (they join it where it stopped)")
    storage = reachable_storage(storage)
    shared_uri(settings_of(resolve_values(composed.cfg)).tracking.uri)
    sweep_id = sweep_id or new_sweep_id()
    argv = [*overrides, "--sweep-id", sweep_id, "--storage", storage]
    if config_dir is not None:
        argv += ["--config-dir", str(config_dir.resolve())]
    return sweep_id, storage, start_sweep_workers(cluster, argv, workers)


def _compose_one(overrides: list[str], config_dir: Path | None, kind: str = "train") -> Composed:
    """One run's config; an override that lists several values gets the hint that -m runs them all."""
    from expt.core.config import compose
    from expt.core.errors import ConfigError

    try:
        return compose(overrides, config_dir=config_dir)
    except ConfigError:
        from expt.grid.spec import sweep_overrides

        swept = sweep_overrides(overrides)
        if swept:
            raise ConfigError(f"{swept[0]!r} lists several values; add -m to run one run per value and compare "
                              f"them (expt {kind} -m {' '.join(overrides)})") from None
        raise


def _grid(kind: str, args: list[str], *, multirun: bool, cfg: bool, workers: int, resume: str | None,
          config_dir: Path | None, trust_target: list[str] | None, cluster: str | None = None,
          one_sweep: dict[str, str | None] | None = None) -> None:
    """``-m``: plan every cell (nothing runs if any is wrong), then run the grid and print its comparison."""
    from expt.core.errors import RunFailedError, UsageError

    if not multirun:
        raise UsageError("--workers, --resume and --cluster run a grid; add -m (e.g. expt train -m data=wine,iris "
                         "model=svm,knn)")
    given = [option for option, value in (one_sweep or {}).items() if value]
    if given:
        raise UsageError(f"{given[0]} names one sweep; a grid (-m) names its sweeps itself: drop {given[0]}")
    check_name("--resume", resume)
    overrides = split_args(args)
    from expt.cli.grid_render import GridProgress, print_cells, print_grid
    from expt.core.build import trusting
    from expt.grid.plan import plan_grid
    from expt.grid.runner import check_options, new_grid_id, resume_plan, run_grid

    check_options(workers, resume, overrides)
    from expt.grid.cluster import cluster_address

    cluster = cluster_address(cluster)
    writer = None
    if kind == "train" and workers == 1 and not cfg and cluster is None:
        from expt.train.process import start_writer

        writer = start_writer(evaluates=True)  # first: MLflow's imports overlap the planning of every cell
    try:
        with trusting(trust_target):
            plan, state = resume_plan(resume, kind) if resume else (plan_grid(kind, overrides, config_dir), None)
            from expt.core.timeline import mark

            mark("grid: planned")
            if cfg:
                print_cells(plan)
                return
            grid_id = resume or new_grid_id()
            try:
                with GridProgress() as progress:
                    outcome = run_grid(plan, workers=workers, grid_id=grid_id, state=state, progress=progress,
                                       writer=writer, cluster=cluster)
            except KeyboardInterrupt:
                again = f" --cluster {cluster}" if cluster else ""
                typer.echo(f"grid {grid_id} stopped; continue it with: expt {kind} -m --resume {grid_id}{again}",
                           err=True)
                raise
    finally:
        if writer is not None:
            writer.close()
    print_grid(outcome.comparison, outcome.spec, outcome.run_id, outcome.uri, ran=outcome.ran, failed=outcome.failed)
    if outcome.failed:
        key, why = outcome.failed[0]
        raise RunFailedError(f"{len(outcome.failed)} cell(s) failed ({key}: {why}); run them again with: "
                             f"expt {kind} -m --resume {outcome.grid_id}")


def _print_cfg(composed: Composed, resolve: bool) -> None:
    """The composed config as a recipe that ``conf=`` runs as is: the group options as its defaults list, then
    the values (interpolations kept unless --resolve). Values alone would merge onto the default options (a knn
    config onto random_forest's parameters)."""
    from omegaconf import OmegaConf

    from expt.core.config import logged_yaml, resolve_values
    from expt.tracking.uri import masked_config

    cfg = composed.cfg
    values = resolve_values(cfg) if resolve else cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=False))
    typer.echo(logged_yaml(masked_config(values), composed.choices), nl=False)


def _sweep_status(sweep_id: str, storage: str | None, as_json: bool) -> None:
    import json

    from expt.sweep.status import print_status, sweep_status
    from expt.sweep.storage import default_storage

    result = sweep_status(sweep_id, storage or default_storage(sweep_id))
    if as_json:
        typer.echo(json.dumps(result, indent=1))
    else:
        print_status(result)

