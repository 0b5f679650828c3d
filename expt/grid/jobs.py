"""What runs a set of independent jobs tells its caller: :func:`expt.grid.workers.run_jobs` (local processes)
and :func:`expt.grid.cluster.run_on_cluster` (a Dask cluster) alike."""

from __future__ import annotations

from typing import Protocol, TypeVar

T_contra = TypeVar("T_contra", contravariant=True)


class JobProgress(Protocol[T_contra]):
    """Told of jobs as the workers report them: ``value`` is what the job's runner returned (None for a job
    that failed)."""

    def job_started(self, key: str) -> None: ...

    def job_done(self, key: str, ok: bool, value: T_contra | None) -> None: ...
