"""Where a train run's evaluation (:func:`expt.core.evaluation.evaluate_and_draw`) runs: in a thread of the
process that holds the fold models, while that process goes on (refit and model for a train run, the next
writes for a grid's writer process: :mod:`expt.train.process`).

Out-of-fold predictions, permutation importance and plots are extras of a run, so they should not make it
wait. An earlier build drew them in a process of its own when a core was idle; since a train run's MLflow
writes took that core (they cost more: MLflow's import is on the critical path, matplotlib's is not), a second
interpreter importing scikit-learn, pandas and matplotlib beside them only competed with the folds.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

from expt.core.evaluation import evaluate_and_draw


class InlineEvaluator:
    """:func:`evaluate_and_draw` in a thread of this process: it works while this one refits and logs; where
    scikit-learn's fit releases the GIL, and where the cores are shared with others (the scheduler shares them
    per thread), that is time the run does not wait for."""

    def __init__(self) -> None:
        self._tmp = self._folder = tempfile.mkdtemp(prefix="expt-eval-")
        self._thread: threading.Thread | None = None
        self._done: dict[str, Any] = {}

    def submit(self, payload: Mapping[str, Any]) -> None:
        self._thread = threading.Thread(target=self._work, args=(payload,), name="expt-evaluation", daemon=True)
        self._thread.start()

    def _work(self, payload: Mapping[str, Any]) -> None:
        try:
            self._done["files"] = evaluate_and_draw(payload, os.path.join(self._tmp, "out"))
        except Exception as exc:  # noqa: BLE001 - one line: the run is fine without its plots
            self._done["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

    def result(self, timeout: float = 600) -> dict[str, Any]:
        if self._thread is None:
            raise RuntimeError("nothing was submitted")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"no result after {timeout:.0f} s")
        if "error" in self._done:
            raise RuntimeError(self._done["error"])
        return self._done["files"]

    def close(self) -> None:
        import shutil

        if self._thread is not None and self._thread.is_alive():
            self._thread.join(60)  # its files are in the folder removed next
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def handover(self) -> tuple[dict[str, Any], str] | None:
        """The files written and their folder, which the caller now owns (:meth:`close` leaves it); None after a
        warning when the evaluation failed: a run without its plots is still a run."""
        import warnings

        try:
            files = self.result()
        except RuntimeError as exc:
            warnings.warn(f"no out-of-fold predictions or plots for this run: {exc}", stacklevel=3)
            return None
        self._tmp = ""
        return files, self._folder


def idle_core() -> bool:
    """Whether a core is free beside this process: by the 1-minute load average (which counts this one), or, as
    that average lags a burst that just ended by a minute (the run before this one, say), by the processes
    runnable now (Linux's ``/proc/loadavg``: this one among them)."""
    try:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if cores - os.getloadavg()[0] >= 0.75:
            return True
    except OSError:
        return True
    try:
        with open("/proc/loadavg") as fh:
            running = int(fh.read().split()[3].partition("/")[0])
    except (OSError, ValueError, IndexError):
        return False
    return cores - running >= 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG); elsewhere, best effort."""
    import ctypes
    import multiprocessing
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():  # it died before the signal was asked for
        os._exit(1)
