"""One cluster job in a process of its own: ``python -m expt.grid.cluster_cell RESULT PARENT_PID`` with
``pickle((module, runner name, job))`` on stdin (:func:`expt.grid.cluster._task` starts it on a Dask worker).

It dies with the worker process that started it (Linux's parent-death signal), caps its thread pools at
``$EXPT_CELL_THREADS``, runs the runner on the job and writes ``("done", value)``, ``("failed", why)`` (the job
raised RunFailedError) or ``("error", why)`` to RESULT. A process killed before that writes nothing, which the
task reports as an error; Dask runs the task again when the worker itself was lost.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any


def run_capped(module: str, name: str, job: dict[str, Any], threads: int) -> tuple[str, Any]:
    """The runner ``module.name`` on ``job`` with every thread pool at ``threads`` and warnings silenced (the
    client prints the results): ("done", value), ("failed", why) when it raised RunFailedError, or ("error",
    why) in one line. Used by this process and by a one-thread worker's own process alike."""
    from expt.core.errors import ExptError, RunFailedError
    from expt.grid.jobs import cap_threads

    try:
        runner = getattr(importlib.import_module(module), name)
        with cap_threads(threads), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return "done", runner(job)
    except RunFailedError as exc:
        return "failed", str(exc)
    except ExptError as exc:
        return "error", str(exc)
    except Exception as exc:  # noqa: BLE001 - one line to the client
        return "error", f"{type(exc).__name__}: {exc}"


def main(argv: list[str]) -> int:
    from expt.core.offload import die_with_parent

    result, parent = Path(argv[0]), int(argv[1])
    die_with_parent()
    if os.getppid() != parent:  # the worker died before the signal was asked for
        return 1
    module, name, job = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - from the worker that started us
    outcome = run_capped(module, name, job, int(os.environ.get("EXPT_CELL_THREADS", "1")))
    tmp = result.with_name(result.name + ".tmp")
    tmp.write_bytes(pickle.dumps(outcome))
    tmp.replace(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
