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
    """Every test works in its own folder: defaults like ./records.jsonl and ./outputs never land in the checkout."""
    monkeypatch.chdir(tmp_path)


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


def train(store: str, *overrides: str):
    """Compose, prepare and run `expt train` in this process against `store`."""
    from expt.core.config import compose
    from expt.core.prepare import prepare
    from expt.train import run_train

    records = f"tracking.records={Path(store.removeprefix('sqlite:///')).parent / 'records.jsonl'}"
    explicit = any(o.startswith("tracking.records=") for o in overrides)
    composed = compose([*([] if explicit else [records]), *overrides, f"tracking.uri={store}"])
    return run_train(prepare(composed))


BAD_INPUT_TRIED: list[str] = []  # ids of the bad-input cases run this session (tests/test_bad_input.py)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if BAD_INPUT_TRIED:
        terminalreporter.write_line(f"bad-input suite: {len(BAD_INPUT_TRIED)} cases")
