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


def main(argv: list[str]) -> int:
    from expt.core.errors import ExptError, RunFailedError
    from expt.core.offload import die_with_parent
    from expt.grid.jobs import cap_threads

    result, parent = Path(argv[0]), int(argv[1])
    die_with_parent()
    if os.getppid() != parent:  # the worker died before the signal was asked for
        return 1
    module, name, job = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - from the worker that started us
    runner = getattr(importlib.import_module(module), name)
    warnings.filterwarnings("ignore")  # the client prints the results; a cell's warnings would go nowhere useful
    with cap_threads(int(os.environ.get("EXPT_CELL_THREADS", "1"))):
        try:
            outcome: tuple[str, object] = ("done", runner(job))
        except RunFailedError as exc:
            outcome = ("failed", str(exc))
        except ExptError as exc:
            outcome = ("error", str(exc))
        except Exception as exc:  # noqa: BLE001 - one line to the client
            outcome = ("error", f"{type(exc).__name__}: {exc}")
    tmp = result.with_name(result.name + ".tmp")
    tmp.write_bytes(pickle.dumps(outcome))
    tmp.replace(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
