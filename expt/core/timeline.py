"""Where an expt process spends its wall time: phase marks, off unless ``EXPT_TIMELINE`` names a file.

``benchmarks/timeline.py`` sets it and reads the marks back, one JSON line per phase of every process of a
command (the command, a sweep's MLflow sink, a train run's writer, grid workers): when it got there, its CPU
seconds so far, and the top-level packages it imported since its previous mark. In ``core``, below every layer
that marks, and importing only the standard library, so that a mark costs one environment lookup when off.
"""

from __future__ import annotations

import os

TIMELINE_ENV = "EXPT_TIMELINE"  # a file: every expt process appends its phases to it (benchmarks/timeline.py)
_seen_packages: set[str] = set()


def mark(phase: str, **measured: float) -> None:
    """With ``EXPT_TIMELINE=FILE``, append when this process reached ``phase`` and which top-level packages it
    imported since its last mark, as one JSON line (with ``measured``, e.g. a trial's lag from its end to the
    store); without it, nothing (one environment lookup)."""
    path = os.environ.get(TIMELINE_ENV)
    if not path:
        return
    import json
    import sys
    import time

    now = time.time()
    packages = {name.partition(".")[0] for name in list(sys.modules)}
    new = sorted(p for p in packages - _seen_packages if not p.startswith("_"))
    _seen_packages.update(packages)
    with open(path, "a") as fh:
        fh.write(json.dumps({"t": now, "cpu": time.process_time(), "pid": os.getpid(), "phase": phase,
                                "new": new, **measured}) + "\n")
