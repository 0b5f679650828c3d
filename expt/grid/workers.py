"""``--workers N``: jobs in N processes, each taking the next job from a queue.

Two kinds of job use it: a grid's cells (:func:`run_in_workers`: a worker runs its cell as the grid's own process
would, :func:`expt.grid.cells.run_job`), and the knowledge-base builder's (``expt.kb.build``: a dataset and a
slice of the portfolio, :func:`expt.kb.cells.run_job`), through :func:`run_jobs` with a job runner of their own.

Workers die with the process that started them (Linux's parent-death signal), so a grid killed with SIGKILL
leaves no worker finishing a cell that ``--resume`` would run a second time: the killed cell's run stays RUNNING,
and ``--resume`` marks it KILLED and runs the cell again. Each worker's thread pools get its share of the cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from expt.core.errors import ExptError, RunFailedError
from expt.core.offload import die_with_parent
from expt.grid.jobs import JobProgress, cap_threads
from expt.grid.plan import GridPlan, PlannedCell

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess
    from multiprocessing.queues import Queue

    from expt.grid.cells import CellProgress

T = TypeVar("T")





def run_in_workers(plan: GridPlan, todo: list[PlannedCell], tags: dict[str, dict[str, str]], workers: int,
                   grid_id: str, progress: CellProgress | None = None,
                   cluster: str | None = None) -> list[tuple[str, str]]:
    """Run a grid's ``todo`` on ``workers`` processes; returns the cells that failed (every fold failed), raises
    on any other error, after stopping the workers."""
    from expt.grid.cells import run_job, sweep_id

    config_dir = str(Path(plan.config_dir).resolve()) if plan.config_dir and cluster else plan.config_dir
    jobs = [{"kind": plan.kind, "key": c.cell.key, "overrides": c.cell.overrides, "config_dir": config_dir,
             "tags": tags[c.cell.key], "sweep_id": sweep_id(grid_id, c), "retried": cluster is not None,
             "claim": f"{grid_id}/{c.cell.key}"} for c in todo]
    watch = None if progress is None else _CellProgress(progress, todo)
    return run_jobs(jobs, workers, run_job, progress=watch, what="grid", unit="cell",
                    resume=f"continue with: expt {plan.kind} -m --resume {grid_id}" + (
                        f" --cluster {cluster}" if cluster else ""), cluster=cluster,
                    shared=[Path(config_dir)] if config_dir and cluster else None)


def run_cell_on_cluster(plan: GridPlan, c: PlannedCell, tags: dict[str, str], grid_id: str,
                        cluster: str) -> tuple[tuple[str, str] | None, dict[str, list[float]] | None]:
    """One cell on the cluster (a probe's candidate): (key, why) if it failed, and what the cell returned (its
    folds' scores and fit seconds)."""
    from expt.grid.cells import run_job, sweep_id

    got: dict[str, Any] = {}

    class Keep:
        def job_started(self, key: str) -> None: ...

        def job_done(self, key: str, ok: bool, value: dict[str, list[float]] | None) -> None:
            got["value"] = value

    job = {"kind": plan.kind, "key": c.cell.key, "overrides": c.cell.overrides, "config_dir": plan.config_dir,
           "tags": tags, "sweep_id": sweep_id(grid_id, c), "retried": True, "claim": f"{grid_id}/{c.cell.key}"}
    failed = run_jobs([job], 1, run_job, progress=Keep(), what="probe", unit="candidate", cluster=cluster)
    return (failed[0] if failed else None), got.get("value")


class _CellProgress:
    """The grid's progress display (it shows cells), told of jobs by their keys."""

    def __init__(self, progress: CellProgress, todo: list[PlannedCell]) -> None:
        self.progress, self.by_key = progress, {c.cell.key: c for c in todo}

    def job_started(self, key: str) -> None:
        self.progress.cell_started(self.by_key[key])

    def job_done(self, key: str, ok: bool, value: object) -> None:
        self.progress.cell_done(key, ok=ok)


def run_jobs(jobs: list[dict[str, Any]], workers: int, runner: Callable[[dict[str, Any]], T], *,
             progress: JobProgress[T] | None = None, what: str = "grid", unit: str = "cell",
             resume: str = "", cluster: str | None = None, shared: list[Path] | None = None) -> list[tuple[str, str]]:
    """Run ``runner(job)`` for every job (a picklable dict with a unique ``key``) on ``workers`` processes, in
    order; ``runner`` must be a module-level function, since a spawned worker finds it by its name.

    ``progress`` (optional) is told in this process as the workers report: ``job_started(key)`` and
    ``job_done(key, ok, value)``, ``value`` being what ``runner`` returned. A job that raises
    :class:`RunFailedError` failed (the others go on) and is returned as (key, why); any other error stops the
    workers and is raised as one line naming the job (``what unit key: ...``).

    With ``cluster`` (a Dask scheduler's address) the jobs go to that cluster instead, each in a process of its
    own with one thread per pool (:mod:`expt.grid.cluster`); ``shared``: folders its workers must see.
    """
    if cluster is not None:
        from expt.grid.cluster import run_on_cluster

        return run_on_cluster(jobs, cluster, runner, progress=progress, what=what, unit=unit, resume=resume,
                              shared=shared)
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")
    tasks: Queue[dict[str, Any] | None] = ctx.Queue()
    results: Queue[tuple[str, str, Any]] = ctx.Queue()
    for job in jobs:
        tasks.put(job)
    n = min(workers, len(jobs))
    for _ in range(n):
        tasks.put(None)
    procs = [ctx.Process(target=worker_main, args=(tasks, results, n, runner), name=f"expt-{what}-worker-{i + 1}")
             for i in range(n)]
    for p in procs:
        p.start()
    failed: list[tuple[str, str]] = []
    pending = len(jobs)
    try:
        while pending:
            try:
                kind, key, info = results.get(timeout=0.5)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    codes = [p.exitcode for p in procs]
                    raise RunFailedError(f"the {what}'s workers stopped (exit codes {codes}) before every {unit} "
                                         f"ran; {resume}") from None
                continue
            if kind == "started":
                if progress is not None:
                    progress.job_started(key)
                continue
            if kind == "error":
                raise RunFailedError(f"{what} {unit} {key}: {info}")
            pending -= 1
            if kind == "failed":
                failed.append((key, info))
            if progress is not None:
                progress.job_done(key, kind == "done", info if kind == "done" else None)
    except BaseException:
        _stop(procs)
        raise
    for p in procs:
        p.join(30)
    return failed


def _stop(procs: Sequence[BaseProcess]) -> None:
    """Ctrl-C reaches the workers too (their runs end KILLED); otherwise they are told to stop."""
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.terminate()
            p.join(10)


def worker_main(jobs: Queue[dict[str, Any] | None], results: Queue[tuple[str, str, Any]], workers: int,
                runner: Callable[[dict[str, Any]], object]) -> None:
    """A worker: take jobs until the queue says stop; report each as done (with what ``runner`` returned), failed
    or an error (then stop)."""
    import signal
    import warnings

    die_with_parent()
    warnings.filterwarnings("ignore")  # the parent process prints the results; a worker's warnings would interleave
    with thread_limits(workers):
        while (job := jobs.get()) is not None:
            results.put(("started", job["key"], None))
            try:
                value = runner(job)
            except RunFailedError as exc:
                results.put(("failed", job["key"], str(exc)))
                continue
            except KeyboardInterrupt:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                return
            except ExptError as exc:
                results.put(("error", job["key"], str(exc)))
                return
            except Exception as exc:  # noqa: BLE001 - one line to the parent process
                results.put(("error", job["key"], f"{type(exc).__name__}: {exc}"))
                return
            results.put(("done", job["key"], value))


def thread_limits(workers: int) -> AbstractContextManager[object]:
    """Split the cores between the workers: N workers each with every core would oversubscribe them."""
    return cap_threads(max(1, cores() // workers))


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
