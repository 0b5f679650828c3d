"""``--workers N``: a grid's cells in N processes, each taking the next cell from a queue.

A worker runs its cell as the grid's own process would (:func:`expt.grid.cells.run_job`). Workers die with the
grid process (Linux's parent-death signal), so a grid killed with SIGKILL leaves no worker finishing a cell that
``--resume`` would run a second time: the killed cell's run stays RUNNING, and ``--resume`` marks it KILLED and
runs the cell again.
"""

from __future__ import annotations

import os
from typing import Any

from expt.core.errors import ExptError, RunFailedError
from expt.grid.cells import run_job, sweep_id
from expt.grid.plan import GridPlan, PlannedCell


def run_in_workers(plan: GridPlan, todo: list[PlannedCell], tags: dict[str, dict[str, str]], workers: int,
                   grid_id: str, progress: Any = None) -> list[tuple[str, str]]:
    """Run ``todo`` on ``workers`` processes; returns the cells that failed (every fold failed), raises on any other
    error, after stopping the workers."""
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")
    jobs, results = ctx.Queue(), ctx.Queue()
    for c in todo:
        jobs.put({"kind": plan.kind, "key": c.cell.key, "overrides": c.cell.overrides, "config_dir": plan.config_dir,
                  "tags": tags[c.cell.key], "sweep_id": sweep_id(grid_id, c)})
    n = min(workers, len(todo))
    for _ in range(n):
        jobs.put(None)
    procs = [ctx.Process(target=worker_main, args=(jobs, results, n), name=f"expt-grid-worker-{i + 1}")
             for i in range(n)]
    for p in procs:
        p.start()
    by_key = {c.cell.key: c for c in todo}
    failed: list[tuple[str, str]] = []
    pending = len(todo)
    try:
        while pending:
            try:
                kind, key, info = results.get(timeout=0.5)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    codes = [p.exitcode for p in procs]
                    raise RunFailedError(f"the grid's workers stopped (exit codes {codes}) before every cell ran; "
                                         f"continue with: expt {plan.kind} -m --resume {grid_id}") from None
                continue
            if kind == "started":
                if progress is not None:
                    progress.cell_started(by_key[key])
                continue
            if kind == "error":
                raise RunFailedError(f"grid cell {key}: {info}")
            pending -= 1
            if kind == "failed":
                failed.append((key, info))
            if progress is not None:
                progress.cell_done(key, ok=kind == "done")
    except BaseException:
        _stop(procs)
        raise
    for p in procs:
        p.join(30)
    return failed


def _stop(procs: list[Any]) -> None:
    """Ctrl-C reaches the workers too (their runs end KILLED); otherwise they are told to stop."""
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.terminate()
            p.join(10)


def worker_main(jobs: Any, results: Any, workers: int) -> None:
    """A worker: take cells until the queue says stop; report each as done, failed or an error (then stop)."""
    import signal
    import warnings

    die_with_parent()
    warnings.filterwarnings("ignore")  # the grid process prints the results; a worker's warnings would interleave
    with thread_limits(workers):
        while (job := jobs.get()) is not None:
            results.put(("started", job["key"], None))
            try:
                run_job(job)
            except RunFailedError as exc:
                results.put(("failed", job["key"], str(exc)))
                continue
            except KeyboardInterrupt:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                return
            except ExptError as exc:
                results.put(("error", job["key"], str(exc)))
                return
            except Exception as exc:  # noqa: BLE001 - one line to the grid process
                results.put(("error", job["key"], f"{type(exc).__name__}: {exc}"))
                return
            results.put(("done", job["key"], None))


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the grid process dies (PR_SET_PDEATHSIG); elsewhere, best effort."""
    import ctypes
    import multiprocessing
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():  # it died before the signal was asked for
        os._exit(1)


def thread_limits(workers: int) -> Any:
    """Split the cores between the workers: N workers each with every core would oversubscribe them."""
    from threadpoolctl import threadpool_limits

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return threadpool_limits(limits=max(1, cores // workers))
