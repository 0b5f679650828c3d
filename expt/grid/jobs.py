"""What runs a set of independent jobs tells its caller: :func:`expt.grid.workers.run_jobs` (local processes)
and :func:`expt.grid.cluster.run_on_cluster` (a Dask cluster) alike."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Protocol, TypeVar

T_contra = TypeVar("T_contra", contravariant=True)


class JobProgress(Protocol[T_contra]):
    """Told of jobs as the workers report them: ``value`` is what the job's runner returned (None for a job
    that failed)."""

    def job_started(self, key: str) -> None: ...

    def job_done(self, key: str, ok: bool, value: T_contra | None) -> None: ...


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # read as each library loads


def cap_threads(threads: int) -> AbstractContextManager[object]:
    """Every thread pool of this process at ``threads`` (BLAS, OpenMP, torch's own); returns threadpoolctl's
    context.

    threadpoolctl reaches only the libraries already loaded, and a fresh worker has loaded none (numpy, scikit-learn
    and torch come with its first job): the environment variables cap those that load later, torch's pool included,
    for the rest of the process. Uncapped, 2 knowledge-base workers kept 4+ threads spinning on 2 cores.
    """
    import sys

    from threadpoolctl import threadpool_limits

    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:  # loaded already: it read the variables at its import
        torch.set_num_threads(threads)
    return threadpool_limits(limits=threads)
