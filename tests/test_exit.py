"""Issue 22: nothing of a command outlives it, zombies included. The `<defunct>` python seen after `expt sweep`
returned was multiprocessing's resource tracker, orphaned to a PID 1 that does not reap."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from helpers import EXPT


def group_members(pgid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if int(line.split()[1]) == pgid]


@pytest.mark.slow
def test_a_sweep_leaves_no_process_behind(tmp_path: Path, store: str) -> None:
    sweep = subprocess.Popen([EXPT, "sweep", "data=iris", "model=logistic_regression", "search.n_trials=2",
                              "search.outer_folds=2", "search.inner_folds=2", f"tracking.uri={store}"],
                             cwd=tmp_path, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    spawned = set()
    while sweep.poll() is None:  # the sink and the tracker it starts are in the command's process group
        spawned.update(group_members(sweep.pid))
        time.sleep(0.1)
    err = sweep.stderr.read()
    assert sweep.returncode == 0, err
    assert "Traceback" not in err  # the tracker stopped after multiprocessing's finalizers, not before
    assert any("multiprocessing" in p for p in spawned)  # the case this is about: the command spawned a worker
    time.sleep(0.5)
    assert group_members(sweep.pid) == []
