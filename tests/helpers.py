"""Plain helpers the tests import by name (``from helpers import EXPT, all_runs, train``): paths, the store's runs,
and `expt train` in-process or as a subprocess. The fixtures live in ``fixtures/`` and in servers.py and browsers.py,
registered by conftest.py's ``pytest_plugins``: a test module never imports conftest."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPT = str(Path(sys.executable).with_name("expt"))
CONF = ROOT / "conf"
GROUP_NAMES = ("data", "model", "learner", "tracking", "search")
OPTIONS_BY_GROUP = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml") if not p.stem.startswith("_"))
                    for g in GROUP_NAMES}


def all_runs(uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, max_results=10_000) if experiments else []


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


def finished_runs_both_ways(uri: str) -> tuple[list, list]:
    """The same finished runs (a sweep's trials: tags, params, a NaN metric, an inner-score series, a long param)
    written through MLflow's client one run at a time and by ``Tracker.log_finished``'s one transaction, into
    the store at ``uri``; the two lists of (run, metric histories) as the store gives them back."""
    import math
    import os

    from expt.tracking.client import ONE_BY_ONE_ENV, FinishedRun, Tracker

    tracker = Tracker(uri, "bulk")
    parent = tracker.start("outer-fold-0", {"expt.key": "fold-0"})

    def batch(tag: str) -> list:
        return [FinishedRun(name=f"trial-{i}", parent_id=parent, start=1_700_000_000.25 + i, end=1_700_000_003.5 + i,
                            status="FINISHED" if i != 2 else "FAILED",
                            tags={"expt.key": f"fold-0/trial-{i}", "expt.run_type": "trial", "side": tag,
                                  "optuna.trial_number": str(i)},
                            metrics={"duration_s": 1.5 + i,
                                     "inner_accuracy_mean": math.nan if i == 1 else 0.9 + i / 100},
                            params={"model.estimator.C": 10.0 ** -i, "model.estimator.kernel": "rbf",
                                    "model.estimator.long": "x" * 5000},
                            series={"inner_accuracy": [0.9, 0.91 + i / 1000, math.nan if i == 3 else 0.92]})
                for i in range(5)]

    os.environ[ONE_BY_ONE_ENV] = "1"
    try:
        ids_client = tracker.log_finished(batch("client"))
    finally:
        del os.environ[ONE_BY_ONE_ENV]
    bulk = tracker._bulk_writer()  # the one-transaction path itself, not its fallback to the client
    assert bulk is not None, f"no one-transaction writer for {uri}"
    ids_bulk, commit = bulk(batch("bulk"))
    commit()

    def read(ids: list[str]) -> list:
        out = []
        for run_id in ids:
            run = tracker.client.get_run(run_id)
            histories = {k: sorted((m.step, m.value if not math.isnan(m.value) else "nan")
                                   for m in tracker.client.get_metric_history(run_id, k)) for k in run.data.metrics}
            out.append((run, histories))
        return out

    return read(ids_client), read(ids_bulk)


def comparable(run, histories: dict) -> dict:
    """Everything a reader of the store sees of a run, less what differs by design (its id and the side tag)."""
    import math

    info = run.info
    return {"name": info.run_name, "status": info.status, "start": info.start_time, "end": info.end_time,
            "user": info.user_id, "stage": info.lifecycle_stage, "experiment": info.experiment_id,
            "artifacts": info.artifact_uri.replace(info.run_id, "RUN"),
            "tags": {k: v for k, v in run.data.tags.items() if k != "side"}, "params": run.data.params,
            "metrics": {k: "nan" if math.isnan(v) else v for k, v in run.data.metrics.items()},
            "histories": histories}
