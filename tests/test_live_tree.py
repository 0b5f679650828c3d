"""A sweep's run tree, watched from outside while it runs (issue 26, part 2), and the sink's order of work.

A user opens the MLflow UI to watch a sweep, as the command suggests. What they must see while it runs: the sweep
run with its config, every outer fold, and trials arriving as they finish, not the whole tree at the end. The
reader here is a plain MLflow client polling the same SQLite store from this process, as the UI does. No timing is
asserted (a loaded machine only stretches the times); what is asserted is what the reader saw while the command
was still running.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from helpers import EXPT

from expt.sweep.plots import _one_parameter
from expt.sweep.sink import Background, Inbox
from expt.tracking.tags import KEY_TAG, RUN_TYPE_TAG, TRIAL_RUN

OUTER = 2
TRIALS = 10
# A user's own model (trusted with --trust-target) whose fit waits 0.1 s: the trials then end over several seconds
# however fast or loaded the machine is, and the command leaves the CPU to the sink meanwhile. A process's first fit
# also waits (up to 2 minutes) until the sink has opened the store and made the sweep's tree: on a loaded machine
# the sink's start (importing MLflow) once took longer than all 30 trials, which then reached the store together.
# A trial that ends before the store is open cannot be seen earlier than it opens; what is watched here is what
# comes after.
SLOW_MODEL = """
import os
import sqlite3
import time

from sklearn.linear_model import LogisticRegression

TREE = int(os.environ["LIVE_TREE_RUNS"])
_tree_seen = False


def _wait_for_the_tree():
    global _tree_seen
    deadline = time.monotonic() + 120
    while not _tree_seen and time.monotonic() < deadline:
        try:
            con = sqlite3.connect(f"file:{os.environ['LIVE_TREE_DB']}?mode=ro", uri=True, timeout=1)
            try:
                _tree_seen = con.execute("SELECT count(*) FROM runs").fetchone()[0] >= TREE
            finally:
                con.close()
        except sqlite3.Error:
            pass
        if not _tree_seen:
            time.sleep(0.05)


class SlowClassifier(LogisticRegression):
    def fit(self, X, y, sample_weight=None):
        _wait_for_the_tree()
        time.sleep(0.1)
        return super().fit(X, y, sample_weight)
"""


def test_an_outside_reader_sees_the_sweep_and_its_folds_while_it_runs_and_trials_as_they_finish(
        tmp_path: Path) -> None:
    import os

    from mlflow import MlflowClient

    (tmp_path / "slowmodels.py").write_text(SLOW_MODEL)
    db = tmp_path / "mlruns.db"
    store = f"sqlite:///{db}"
    proc = subprocess.Popen([EXPT, "sweep", "--trust-target", "slowmodels", "data=breast_cancer",
                             "model=logistic_regression", "model.estimator._target_=slowmodels.SlowClassifier",
                             f"search.outer_folds={OUTER}", f"search.n_trials={TRIALS}", f"tracking.uri={store}"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(tmp_path), "LIVE_TREE_DB": str(db),
                                 "LIVE_TREE_RUNS": str(OUTER + 2)})  # the sweep, its final search, its folds
    seen: list[tuple[set[str], int, bool]] = []  # per poll while the command ran: run keys, trials, config logged
    client = None
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            if client is None and not has_a_run(db):
                # Open it with MLflow only once expt has created it: two processes migrating a new SQLite store
                # at once is the store race (tests/test_store_race.py), not what this test watches.
                continue
            try:
                client = client or MlflowClient(tracking_uri=store)
                runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=5000)
            except Exception:  # noqa: BLE001, S112 - the store is being created by the command right now
                continue
            if proc.poll() is not None:
                break  # the command ended during the read: not a view of a running sweep
            keys = {r.data.tags.get(KEY_TAG, "") for r in runs}
            sweep = next((r for r in runs if r.data.tags.get(KEY_TAG) == "sweep"), None)
            config = sweep is not None and "config.yaml" in {a.path for a in client.list_artifacts(sweep.info.run_id)}
            seen.append((keys, sum(r.data.tags.get(RUN_TYPE_TAG) == TRIAL_RUN for r in runs), config))
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    tree = {"sweep", "final", *(f"fold-{k}" for k in range(OUTER))}
    whole = [i for i, (keys, _, config) in enumerate(seen) if tree <= keys and config]
    assert whole, f"the reader never saw the sweep, its config and every fold while the sweep ran: {seen[-3:]}"
    trials_then = [n for _, n, _ in seen[whole[0]:]]
    total = (OUTER + 1) * TRIALS
    assert any(0 < n < total for n in trials_then), (
        f"trials did not arrive while the sweep ran (counts seen: {sorted(set(trials_then))})")
    assert trials_then == sorted(trials_then)  # the store only grows


def has_a_run(db: Path) -> bool:
    """Whether the SQLite store holds a run yet, read with sqlite3 alone (MLflow would migrate a new file)."""
    import sqlite3

    if not db.exists():
        return False
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
        finally:
            con.close()
    except sqlite3.Error:
        return False


def frozen(params: dict[str, float], value: float, number: int) -> optuna.trial.FrozenTrial:
    dists = {"model.estimator.C": optuna.distributions.FloatDistribution(1e-3, 1e3, log=True),
             "model.estimator.l1_ratio": optuna.distributions.FloatDistribution(0.0, 1.0)}
    return optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in params}, value=value)


@pytest.mark.parametrize("n", [2, 5, 20])
@pytest.mark.filterwarnings("ignore:Target and region quantiles")  # Optuna's, on few or equal scores
def test_one_parameters_importance_is_what_optuna_says_without_asking_it(n: int) -> None:
    optuna.logging.set_verbosity(logging.WARNING)
    trials = [frozen({"model.estimator.C": 10 ** (i % 9 / 3 - 2)}, 0.9 - abs(i - 3) * 0.01, i) for i in range(n)]
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    assert _one_parameter(trials) == optuna.importance.get_param_importances(study)
    flat = [frozen({"model.estimator.C": 10 ** (i % 9 / 3 - 2)}, 0.5, i) for i in range(n)]  # every score the same
    study = optuna.create_study(direction="maximize")
    study.add_trials(flat)
    assert _one_parameter(flat) == optuna.importance.get_param_importances(study)


def test_several_parameters_or_one_trial_are_left_to_optuna() -> None:
    two = [frozen({"model.estimator.C": 1.0 + i, "model.estimator.l1_ratio": 0.1 * i}, 0.5 + 0.01 * i, i)
           for i in range(4)]
    assert _one_parameter(two) is None
    assert _one_parameter(two[:1]) is None
    assert _one_parameter([frozen({"model.estimator.C": 1.0}, 0.5, 0)]) is None


class ListQueue:
    """What the sink's inbox reads: a multiprocessing queue's get and get_nowait, on a list."""

    def __init__(self, items: list[dict]) -> None:
        self.items = list(items)

    def get(self, timeout: float | None = None) -> dict:
        return self.items.pop(0)

    def get_nowait(self) -> dict:
        from queue import Empty

        if not self.items:
            raise Empty
        return self.items.pop(0)


def test_the_inbox_puts_trials_before_an_evaluation_but_never_past_their_own_fold_or_an_op() -> None:
    heavy = Background.HEAVY[1]
    messages = [
        {"key": "fold-0", "status": "FINISHED", heavy: "eval-0.pkl"},  # fold 0 closes with its evaluation
        {"key": "fold-1/trial-0", "status": "FINISHED"},  # another fold's trial: may go first
        {"key": "fold-0", "update": True},  # the same fold's next message: stays behind its evaluation
        {"key": "fold-1/trial-1", "status": "FINISHED"},
        {"op": "stop"},  # nothing passes it
        {"key": "fold-2/trial-0", "status": "FINISHED"},
    ]
    inbox = Inbox(ListQueue(messages))  # type: ignore[arg-type]
    order = [inbox.next() for _ in messages]
    assert [m.get("key", m.get("op")) for m in order] == [
        "fold-1/trial-0", "fold-1/trial-1", "fold-0", "fold-0", "stop", "fold-2/trial-0"]
    assert order[2] is messages[0] and order[3] is messages[2]


def test_trials_written_in_one_transaction_are_the_runs_the_client_writes(store: str) -> None:
    from helpers import comparable, finished_runs_both_ways
    from mlflow import MlflowClient

    client_side, bulk_side = finished_runs_both_ways(store)
    assert [comparable(*r) for r in bulk_side] == [comparable(*r) for r in client_side]
    assert {r.data.tags["side"] for r, _ in bulk_side} == {"bulk"}
    # What the UI and `expt runs` ask the store: the latest-metric table behind a metric filter, and the tree.
    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("bulk").experiment_id
    for side in ("client", "bulk"):
        found = client.search_runs([exp], f"tags.side = '{side}' and metrics.inner_accuracy_mean > 0.905",
                                   order_by=["metrics.duration_s DESC"])
        assert [r.info.run_name for r in found] == ["trial-4", "trial-3", "trial-2"]


def test_a_batch_takes_the_waiting_trials_but_not_past_their_own_fold_or_an_op() -> None:
    heavy = Background.HEAVY[1]
    messages = [
        {"key": "fold-0/trial-0", "status": "FINISHED"},
        {"key": "fold-1", "status": "FINISHED", heavy: "eval-1.pkl"},  # fold 1 closes: its trials stay behind it
        {"key": "fold-1/trial-9", "status": "FINISHED"},
        {"key": "fold-0/trial-1", "status": "FINISHED"},
        {"key": "fold-0/trial-1", "status": "FINISHED"},  # the same run twice: never twice in one batch
        {"op": "rescan"},
        {"key": "fold-0/trial-2", "status": "FINISHED"},
    ]
    inbox = Inbox(ListQueue(messages))  # type: ignore[arg-type]
    trial = lambda msg: "/trial-" in msg.get("key", "")  # noqa: E731 - what Sink.whole says of these
    batches = []
    while inbox.pending or inbox.queue.items:  # type: ignore[attr-defined]
        batches.append([m.get("key", m.get("op")) for m in inbox.next_batch(trial) or []])
    assert batches == [["fold-0/trial-0", "fold-0/trial-1"], ["fold-0/trial-1"], ["fold-1"], ["fold-1/trial-9"],
                       ["rescan"], ["fold-0/trial-2"]]
