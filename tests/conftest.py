"""Shared fixtures: real MLflow SQLite stores in tmp_path, and a helper to run `train` in-process."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from browsers import browser  # noqa: F401  (a fixture: headless Chromium, installed when missing)
from servers import mlflow_server, postgres  # noqa: F401  (fixtures: a real PostgreSQL and mlflow server)

ROOT = Path(__file__).resolve().parents[1]
EXPT = str(Path(sys.executable).with_name("expt"))
CONF = ROOT / "conf"
GROUP_NAMES = ("data", "model", "learner", "tracking", "search")
OPTIONS_BY_GROUP = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml") if not p.stem.startswith("_"))
                    for g in GROUP_NAMES}


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test works in its own folder: defaults like ./records.jsonl and ./outputs never land in the checkout.

    And a train run writes from its own process unless the test asks for both ways (``writer_mode``): where the
    writes go is otherwise chosen by the idle cores, which would make a test's path depend on the load of the
    machine running it; tests/test_writer.py shows both ways write the same run tree."""
    from expt.train.writer import MODE_ENV

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(MODE_ENV, "inline")
    # A store named by the environment is every command's default store: none leaks from one test into the next
    # (mlflow.set_tracking_uri exports it), so a command without -u uses the store its test gave it.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow database, made once: creating one costs seconds."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlruns.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path: Path, template_db: Path) -> str:
    """A fresh tracking URI of a real SQLite store in this test's tmp_path."""
    path = tmp_path / "mlruns.db"
    shutil.copy(template_db, path)
    return f"sqlite:///{path}"


def all_runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, max_results=10_000) if experiments else []


@pytest.fixture(params=["side", "inline"])
def writer_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where a train run's writes go (expt.train.process): a process of its own, or this one. The choice is made
    by the idle cores otherwise, so a test of what a run writes runs both."""
    from expt.train.writer import MODE_ENV

    monkeypatch.setenv(MODE_ENV, request.param)
    return request.param


def long_train_until_running(store: str, cwd: Path, trees: int = 3000):
    """``expt train`` of a random forest long enough that a signal sent now lands mid-run, as a subprocess,
    returned once its parent run shows RUNNING in the store (polling is slow on a loaded machine)."""
    import subprocess
    import time

    proc = subprocess.Popen([EXPT, "train", "data=digits", "model=random_forest",
                             f"model.estimator.n_estimators={trees}", "learner=repeated", f"tracking.uri={store}"],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_as_a_terminal_sends_it)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(r.info.status == "RUNNING" for r in all_runs(store)):
        time.sleep(0.3)
    return proc


def _ctrl_c_as_a_terminal_sends_it() -> None:
    """SIGINT back to its default in the child: a test suite started in the background (``cmd &`` in a script)
    inherits SIGINT ignored, and so would the command, which then, as Unix programs should, ignores Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def train(store: str, *overrides: str):
    """Compose, prepare and run `expt train` in this process against `store`."""
    from expt.core.config import compose
    from expt.core.prepare import prepare
    from expt.train.run import run_train

    records = f"tracking.records={Path(store.removeprefix('sqlite:///')).parent / 'records.jsonl'}"
    explicit = any(o.startswith("tracking.records=") for o in overrides)
    composed = compose([*([] if explicit else [records]), *overrides, f"tracking.uri={store}"])
    return run_train(prepare(composed))


BAD_INPUT_TRIED: list[str] = []  # ids of the bad-input cases run this session (tests/test_bad_input.py)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if BAD_INPUT_TRIED:
        terminalreporter.write_line(f"bad-input suite: {len(BAD_INPUT_TRIED)} cases")
