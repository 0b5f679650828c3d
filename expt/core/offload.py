"""Where a train run's evaluation (:func:`expt.core.evaluation.evaluate_and_draw`) runs: beside it or in it.

Out-of-fold predictions, permutation importance and plots are extras of a run, so they should not make
it wait: with a core to spare they run in a process of its own, started before the folds so that its
imports overlap them, and the train process collects the files after logging its model.
"""

from __future__ import annotations

import os
import pickle
import signal
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

from expt.core.evaluation import evaluate_and_draw


def warm_up() -> None:
    """Import what the work needs while the caller is busy (folds, refit): 1-2 s that would otherwise be waited for."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import sklearn.pipeline  # noqa: F401


def _side_main(conn: Any) -> None:
    """The side process: warm up, take one job (a pickle file's path), send back its result or error, leave."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it terminates this one
    try:
        warm_up()
        if not conn.poll(3600):
            os._exit(0)
        job = conn.recv()
        if job is None:
            os._exit(0)
        with open(job["payload"], "rb") as fh:
            payload = pickle.load(fh)  # noqa: S301 - written by the parent process a moment ago
        conn.send(("ok", evaluate_and_draw(payload, job["out"])))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        try:
            conn.send(("error", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
        except OSError:
            pass
    conn.close()
    os._exit(0)  # no interpreter teardown: matplotlib and scikit-learn's take ~0.5 s and guard nothing


class SideEvaluator:
    """:func:`evaluate_and_draw` in a process of its own, started early so that its imports overlap the caller's work.

    Measured on 2 cores (breast_cancer, random forest): in the train process the evaluation adds ~1 s
    after the folds (matplotlib's import, the importance and five figures); here, with a core idle, it runs
    beside the refit and the model logging and the run does not wait for it. The job goes through a pickle
    file, not the pipe: a pipe that the warming child does not read yet would block the sender.
    """

    def __init__(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_side_main, args=(child,), name="expt-evaluation", daemon=True)
        self.process.start()
        child.close()
        self._tmp = self._folder = tempfile.mkdtemp(prefix="expt-eval-")
        self._error = ""

    def submit(self, payload: Mapping[str, Any]) -> None:
        """Hand the job over; a model that cannot be pickled (a user's class) is reported by :meth:`result`."""
        path = os.path.join(self._tmp, "payload.pkl")
        try:
            with open(path, "wb") as fh:
                pickle.dump(dict(payload), fh, protocol=pickle.HIGHEST_PROTOCOL)
            self._conn.send({"payload": path, "out": os.path.join(self._tmp, "out")})
        except Exception as exc:  # noqa: BLE001 - pickling raises many kinds; the run goes on without plots
            self._error = f"cannot hand the fold models over ({type(exc).__name__}: {str(exc)[:200]})"

    def result(self, timeout: float = 600) -> dict[str, Any]:
        """The files written, or a RuntimeError with the side process's one-line error."""
        if self._error:
            raise RuntimeError(self._error)
        if not self._conn.poll(timeout):
            raise RuntimeError(f"no result after {timeout:.0f} s")
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"the evaluation process exited with code {self.process.exitcode}") from None
        if status != "ok":
            raise RuntimeError(value)
        return value

    def close(self) -> None:
        """Stop the process (if still at work) and remove its files; the caller has logged what it needs."""
        import shutil

        try:
            self._conn.send(None)
        except OSError:
            pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self._conn.close()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def handover(self) -> tuple[dict[str, Any], str]:
        """The files written and their folder, which the caller now owns (:meth:`close` leaves it)."""
        files, self._tmp = self.result(), ""
        return files, self._folder


class InlineEvaluator:
    """:class:`SideEvaluator`'s interface in this process, in a thread of its own: for a machine with no idle
    core (a second interpreter's imports then cost ~1.5 s of CPU that nothing hides), and for a daemonic
    multiprocessing worker (a Pool's), which may start no process. The thread works while this one refits
    and logs the model; where scikit-learn's fit releases the GIL, and where the cores are shared with
    others (the scheduler shares them per thread), that is time the run does not wait for."""

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
        except Exception as exc:  # noqa: BLE001 - the same one line the side process would send
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

    def handover(self) -> tuple[dict[str, Any], str]:
        """The files written and their folder, which the caller now owns (:meth:`close` leaves it)."""
        files, self._tmp = self.result(), ""
        return files, self._folder


MODE_ENV = "EXPT_EVALUATION"  # side | inline: overrides the choice below (tests, benchmarks)


def start_evaluator(side: bool = True) -> SideEvaluator | InlineEvaluator:
    """A side process when a core is idle, else a thread of this process.

    Measured on 2 cores (breast_cancer, random forest, whole ``expt train``): with a core idle the side
    process added nothing to the wall time (its imports and work run beside the folds, the refit and
    the model logging); with both cores busy with other work it added ~2.5 s (a second interpreter
    importing scikit-learn, pandas and matplotlib), where this process adds ~1 s. A daemonic process
    (a multiprocessing Pool's worker) may have no children at all.
    """
    import multiprocessing

    mode = os.environ.get(MODE_ENV, "")
    if multiprocessing.current_process().daemon or mode == "inline" or not side:
        return InlineEvaluator()
    if mode != "side" and not idle_core():
        return InlineEvaluator()
    return SideEvaluator()


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
