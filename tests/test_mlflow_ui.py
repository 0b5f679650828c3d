"""The `mlflow ui` command that `expt train` prints shows the run tree it wrote; `expt ui`'s link shows a big
sweep's tree first, in a real browser."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import EXPT, all_runs, train
from servers import free_port, server_env


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


@pytest.mark.slow
def test_mlflow_ui_serves_the_run_tree(store: str, tmp_path: Path) -> None:
    from expt.tracking.uri import ui_command

    result = train(store, "data=iris", "model=knn", "learner=quick", "tracking.log_model=false")
    port = free_port()
    command = ui_command(result.uri).split()[1:]
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen([mlflow, *command, "--host", "127.0.0.1", "--port", str(port)], cwd=tmp_path,
                            env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                runs = _post(f"{base}/runs/search", {"experiment_ids": [result.experiment_id]})["runs"]
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    by_id = {r["info"]["run_id"]: r for r in runs}
    assert result.run_id in by_id and len(runs) == 4
    parents = [{t["key"]: t["value"] for t in r["data"].get("tags", [])}.get("mlflow.parentRunId") for r in runs]
    assert parents.count(result.run_id) == 3


ROWS_JS = """
const rows = {};
document.querySelectorAll('.ag-row[row-index]').forEach(row => {
  const link = row.querySelector('a');
  const index = Number(row.getAttribute('row-index'));
  if (link && !(index in rows)) rows[index] = link.textContent.trim();
});
return Object.keys(rows).sort((a, b) => a - b).map(k => rows[k]);
"""


def _rows(browser, until=lambda rows: bool(rows), timeout: float = 90) -> list[str]:
    """The run names in the runs table, top to bottom, once they satisfy ``until`` (the UI loads and redraws)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(browser, timeout).until(lambda d: until(d.execute_script(ROWS_JS)))
    except TimeoutException:
        raise AssertionError(f"the runs table never showed what was expected: {browser.execute_script(ROWS_JS)}") \
            from None
    return browser.execute_script(ROWS_JS)


def _expand(browser, name: str) -> None:
    """Click the expander in the row of the run called ``name`` (the MLflow UI shows a parent collapsed)."""
    from selenium.webdriver.common.by import By

    for row in browser.find_elements(By.CSS_SELECTOR, ".ag-row[row-index]"):
        links = row.find_elements(By.TAG_NAME, "a")
        if links and links[0].text.strip() == name:
            row.find_element(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']").click()
            return
    raise AssertionError(f"no row {name!r} in {_rows(browser)}")


OUTER, TRIALS = 4, 20


def _session(sid: int) -> list[str]:
    """The command lines of the live processes in session ``sid`` (a server started with start_new_session)."""
    lines = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                lines.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160])
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while we looked
    return lines


@pytest.mark.slow
def test_expt_ui_shows_a_sweep_with_100_plus_runs_first_with_its_tree(browser, tmp_path: Path) -> None:
    """The UI's own first page (newest 100 runs) loses a big sweep's run behind its trials; the link
    `expt ui` prints shows the sweep first, its outer folds and trials nested under it."""
    # The fewest runs past one page: the sweep, 4 outer folds and the final search, 20 trials under each of those 5
    # (1 + 5 + 5 * 20 = 106). No model is logged: the tree is what the UI shows.
    sweep = subprocess.run([EXPT, "sweep", "data=iris", "model=knn", f"search.n_trials={TRIALS}",
                            f"search.outer_folds={OUTER}", "search.inner_folds=2", "tracking.plots=false",
                            "tracking.records=null", "tracking.log_model=false"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stderr
    sweep_run = next(r for r in all_runs(f"sqlite:///{tmp_path}/mlruns.db")
                     if r.data.tags.get("expt.run_type") == "sweep")
    name = sweep_run.info.run_name
    assert len(all_runs(f"sqlite:///{tmp_path}/mlruns.db")) == 1 + (OUTER + 1) * (1 + TRIALS) > 100  # over a page
    port = free_port()
    log = tmp_path / "ui.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([EXPT, "ui", "--port", str(port)], cwd=tmp_path,  # expt ui's own environment
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"expt ui did not come up:\n{log.read_text()}") from None
                time.sleep(1)
        link = next(line.split(None, 1)[1] for line in log.read_text().splitlines() if line.startswith("open "))
        assert "searchFilter=" in link and "orderByAsc=true" in link
        # mlflow ui and one uvicorn worker: not MLflow's 4 workers and 7 job-runner consumers, each importing MLflow
        serving = _session(proc.pid)
        assert len(serving) <= 2, "\n".join(serving)
        browser.get(f"{base}/#/experiments/{sweep_run.info.experiment_id}/runs")  # the UI's own default view
        default = _rows(browser)
        # the sweep fell off the first page: its outer folds and final search show as orphans, in whichever order
        # their start times put them (the final search is opened last, but a fold's time can tie with it)
        assert name not in default and default and set(default) <= {"final", *(f"outer-fold-{k}" for k in
                                                                              range(OUTER))}
        browser.get(link)
        assert _rows(browser, lambda rows: name in rows) == [name]  # the sweep first, its children collapsed
        _expand(browser, name)
        units = _rows(browser, lambda rows: len(rows) >= 6)
        assert units[0] == name and sorted(units[1:]) == ["final", *(f"outer-fold-{k}" for k in range(OUTER))]
        _expand(browser, "outer-fold-0")
        tree = _rows(browser, lambda rows: f"trial-{TRIALS - 1}" in rows)
        start = tree.index("outer-fold-0") + 1
        assert tree[start:start + TRIALS] == [f"trial-{n}" for n in range(TRIALS)]  # nested under its outer fold
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
