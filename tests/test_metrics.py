"""Several metrics per run, a metric of one's own, the user's own run metadata, and the out-of-fold evaluation
(predictions.parquet and plots) a train run logs: against real SQLite stores."""

from __future__ import annotations

import getpass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import all_runs, train

from expt.core.build import trusting
from expt.core.config import compose
from expt.core.errors import ConfigError
from expt.core.prepare import prepare

QUICK = ["learner=quick", "tracking.log_model=false", "tracking.plots=false"]
COST = '''
import numpy as np


class FalseNegativeCost:
    """A user's scorer: minus the cost of the positives it misses (higher is better)."""

    def __init__(self, per_miss=1.0):
        self.per_miss = per_miss

    def __call__(self, estimator, X, y):
        return -self.per_miss * float(np.sum((estimator.predict(X) == 0) & (np.asarray(y) == 1)))


class NotAScorer:
    pass
'''


def _parent(store: str, run_id: str):
    return next(r for r in all_runs(store) if r.info.run_id == run_id)


def _children(store: str, run_id: str) -> list:
    return sorted((r for r in all_runs(store) if r.data.tags.get("mlflow.parentRunId") == run_id),
                  key=lambda r: int(r.data.tags["expt.fold"]))


@pytest.mark.parametrize(("args", "names"), [
    (["data=breast_cancer", "model=logistic_regression"],
     ["accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "neg_log_loss"]),
    (["data=iris", "model=logistic_regression"],
     ["accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr", "neg_log_loss"]),
    # no probabilities: neg_log_loss is left out, ROC AUC reads the decision function
    (["data=breast_cancer", "model=svm"], ["accuracy", "balanced_accuracy", "f1_macro", "roc_auc"]),
    (["data=wine", "model=svm"], ["accuracy", "balanced_accuracy", "f1_macro"]),
    (["data=diabetes", "model=ridge"], ["r2", "neg_root_mean_squared_error", "neg_mean_absolute_error"]),
], ids=["binary", "multiclass", "binary-no-proba", "multiclass-no-proba", "regression"])
def test_default_metrics_per_task_are_logged_per_fold_and_as_mean_and_std(store: str, args: list[str],
                                                                          names: list[str]) -> None:
    result = train(store, *args, *QUICK)
    assert result.cv.metrics == names  # the selecting metric first
    parent = _parent(store, result.run_id)
    for name in names:
        scores = result.cv.fold_scores(name)
        assert len(scores) == 3 and all(np.isfinite(scores))
        assert parent.data.metrics[f"{name}_mean"] == pytest.approx(np.mean(scores))
        assert parent.data.metrics[f"{name}_std"] == pytest.approx(np.std(scores))
        for child, score in zip(_children(store, result.run_id), scores, strict=True):
            assert child.data.metrics[name] == pytest.approx(score)
    from mlflow import MlflowClient

    history = MlflowClient(tracking_uri=store).get_metric_history(result.run_id, f"fold_{names[-1]}")
    assert [m.step for m in history] == [0, 1, 2]


def test_an_explicit_list_and_a_users_scorer_class_under_trust_target(store: str, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mycosts.py").write_text(COST)
    monkeypatch.syspath_prepend(str(tmp_path))
    metrics = "learner.metrics=[f1_macro,{_target_: mycosts.FalseNegativeCost, name: cost, per_miss: 2.5}]"
    with pytest.raises(ConfigError, match=r"learner\.metrics\[1\]\._target_ 'mycosts.FalseNegativeCost' is not "
                                          r"allowed .* pass --trust-target mycosts"):
        prepare(compose(["data=breast_cancer", "model=logistic_regression", metrics]))
    with trusting(["mycosts"]):
        result = train(store, "data=breast_cancer", "model=logistic_regression", metrics, *QUICK)
        assert result.cv.metrics == ["accuracy", "f1_macro", "cost"]
        costs = result.cv.fold_scores("cost")
        assert all(c <= 0 and c % 2.5 == 0 for c in costs)
        assert _parent(store, result.run_id).data.metrics["cost_mean"] == pytest.approx(np.mean(costs))
        # the user's metric can select too (a sweep would optimize it)
        chosen = prepare(compose(["data=breast_cancer", "model=logistic_regression", metrics,
                                  "learner.metric.classification=cost"]))
        assert chosen.metric == "cost" and list(chosen.scorers) == ["cost", "f1_macro"]
        with pytest.raises(ConfigError, match=r"built a NotAScorer, which cannot score"):
            prepare(compose(["data=breast_cancer", "learner.metrics=[{_target_: mycosts.NotAScorer}]"]))


@pytest.mark.parametrize(("overrides", "message"), [
    (["learner.metrics=[accuracy,balanced_acuracy]"],
     "unknown metric 'balanced_acuracy' for learner.metrics; did you mean balanced_accuracy"),
    (["model=svm", "learner.metrics=[accuracy,neg_log_loss]"],
     "learner.metrics 'neg_log_loss' needs predicted probabilities, which SVC does not give; set "
     "model.estimator.probability=true or choose a metric of predicted labels"),
    (["model=svm", "learner.metric.classification=neg_log_loss"],
     "learner.metric.classification 'neg_log_loss' needs predicted probabilities"),
    (["data=iris", "learner.metrics=[f1]"], "learner.metrics[0] 'f1' is for two classes and the target has 3"),
    (["learner.metrics=[r2]"], "'r2' is a regression metric but the data is a classification task; set "
                               "learner.metrics to a classification metric"),
    (["learner.metrics=[{C: 1}]"], "learner.metrics[0] is a mapping without _target_"),
    (["learner.metrics=[{_target_: os.system}]"], "'os.system' is not allowed"),
    (["learner.metrics=[{_target_: sklearn.svm.SVC}]"], "built a SVC, which cannot score"),
    (["learner.metrics=5"], "learner.metrics must be text or list"),
    (["learner.metrics=some"], "learner.metrics must be auto or a list of metric names"),
])
def test_bad_metrics_are_one_line_before_any_run(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        prepare(compose(["data=breast_cancer", "model=logistic_regression", *overrides]))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_user_tags_name_description_and_the_user_on_the_run(store: str) -> None:
    result = train(store, "data=iris", "model=knn", *QUICK, "tracking.tags={team: vision,ticket: ML-42,ok: true}",
                   "tracking.run_name=baseline knn", "tracking.description='first try, see http://u:pw@wiki/x'")
    parent = _parent(store, result.run_id)
    tags = parent.data.tags
    assert parent.info.run_name == "baseline knn"
    assert (tags["team"], tags["ticket"], tags["ok"]) == ("vision", "ML-42", "true")
    assert tags["mlflow.note.content"] == "first try, see http://u:***@wiki/x"  # the note MLflow shows
    assert tags["mlflow.user"] == getpass.getuser() and parent.info.user_id == getpass.getuser()
    children = _children(store, result.run_id)
    assert all(c.data.tags["mlflow.user"] == getpass.getuser() and "team" not in c.data.tags for c in children)


@pytest.mark.parametrize(("overrides", "message"), [
    (["tracking.tags={expt.run_type: sweep}"], "tracking.tags.expt.run_type uses a prefix expt and MLflow set"),
    (["tracking.tags={mlflow.user: root}"], "tracking.tags.mlflow.user uses a prefix"),
    (["tracking.tags={team: {a: 1}}"], "tracking.tags.team must be a single value"),
    (["tracking.tags=[a,b]"], "tracking.tags must be dict or null"),
    (["tracking.run_name=' '"], "tracking.run_name ' ' must be 1 to 250 characters"),
])
def test_bad_user_metadata_is_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        prepare(compose(["data=iris", *overrides]))


def _artifacts(store: str, run_id: str, tmp_path: Path) -> tuple[pd.DataFrame | None, set[str]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store)
    names = {a.path for a in client.list_artifacts(run_id)}
    plots = {Path(a.path).stem for a in client.list_artifacts(run_id, "plots")} if "plots" in names else set()
    if "predictions.parquet" not in names:
        return None, plots
    return pd.read_parquet(client.download_artifacts(run_id, "predictions.parquet", str(tmp_path))), plots


CLASSIFICATION_PLOTS = {"confusion_matrix", "roc_curve", "precision_recall_curve", "calibration_curve",
                        "permutation_importance"}


@pytest.mark.parametrize(("args", "plots"), [
    (["data=breast_cancer", "model=logistic_regression"], CLASSIFICATION_PLOTS),
    (["data=iris", "model=random_forest", "model.estimator.n_estimators=20"], CLASSIFICATION_PLOTS),
    (["data=breast_cancer", "model=svm"], CLASSIFICATION_PLOTS - {"calibration_curve"}),  # decision scores only
    (["data=diabetes", "model=ridge"], {"predicted_vs_actual", "residuals", "permutation_importance"}),
], ids=["binary", "multiclass", "decision-function", "regression"])
def test_out_of_fold_predictions_and_plots(store: str, tmp_path: Path, args: list[str], plots: set[str]) -> None:
    result = train(store, *args, "learner=quick", "tracking.log_model=false")
    table, logged = _artifacts(store, result.run_id, tmp_path)
    assert logged == plots
    data = result.prepared.dataset
    assert sorted(table["row"]) == list(range(data.n_rows))  # every row once, in the fold that held it out
    assert (table["y_true"].to_numpy() == np.asarray(data.y)[table["row"]]).all()
    for fold in result.cv.folds:
        part = table[table["fold"] == fold.index]
        assert sorted(part["row"]) == sorted(fold.test_index)
        if data.task == "classification":  # the logged fold score is the score of these predictions
            assert (part["y_true"] == part["y_pred"]).mean() == pytest.approx(fold.score)
        else:
            y, p = part["y_true"], part["y_pred"]
            assert 1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum() == pytest.approx(fold.score)
    proba = [c for c in table.columns if c.startswith("proba_")]
    if proba:
        assert np.allclose(table[proba].sum(axis=1), 1.0)


def test_plots_false_logs_neither_predictions_nor_plots(store: str, tmp_path: Path) -> None:
    result = train(store, "data=iris", "model=knn", "learner=quick", "tracking.log_model=false",
                   "tracking.plots=false")
    assert _artifacts(store, result.run_id, tmp_path) == (None, set())


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy", "r2", "neg_root_mean_squared_error",
                                    "neg_mean_absolute_error", "roc_auc", "neg_log_loss"])
def test_batched_permutation_importance_equals_the_scorer_called_per_block(metric: str) -> None:
    """The vectorized common metrics and the stand-in model give what the scorer gives on the real model."""
    from sklearn.base import clone
    from sklearn.metrics import get_scorer

    from expt.core.evaluation import FoldModel, permutation_drops

    regression = metric.startswith(("r2", "neg_root", "neg_mean"))
    prepared = prepare(compose(["data=diabetes" if regression else "data=breast_cancer",
                                "model=ridge" if regression else "model=logistic_regression"]))
    data = prepared.dataset
    test = np.arange(0, data.n_rows, 3)
    train_rows = np.setdiff1d(np.arange(data.n_rows), test)
    model = clone(prepared.pipeline).fit(data.X.iloc[train_rows], data.y[train_rows])
    fold = FoldModel(0, model, test)
    scorer = get_scorer(metric)
    batched = permutation_drops(fold, data.X, data.y, scorer, repeats=2)
    rng = np.random.default_rng(0)  # the same permutations, applied one by one to the real model
    X_test, y_test = data.X.iloc[test].reset_index(drop=True), data.y[test]
    base = scorer(model, X_test, y_test)
    orders = {c: [rng.permutation(len(test)) for _ in range(2)] for c in X_test.columns}
    for column in X_test.columns:
        expected = []
        for order in orders[column]:
            shuffled = X_test.copy()
            shuffled[column] = X_test[column].to_numpy()[order]
            expected.append(base - scorer(model, shuffled, y_test))
        assert batched[column] == pytest.approx(expected, abs=1e-9)


def test_the_writer_process_and_this_process_log_the_same_evaluation(store: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the writes go (a process of their own when a core is idle, else this one) changes no evaluation."""
    from expt.train.writer import MODE_ENV

    logged = {}
    for mode in ("side", "inline"):
        monkeypatch.setenv(MODE_ENV, mode)
        result = train(store, "data=wine", "model=knn", "learner=quick", "tracking.log_model=false")
        logged[mode] = _artifacts(store, result.run_id, tmp_path / mode)
    assert logged["side"][1] == logged["inline"][1] == CLASSIFICATION_PLOTS
    pd.testing.assert_frame_equal(logged["side"][0], logged["inline"][0])


def test_a_daemonic_worker_writes_from_its_own_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A multiprocessing Pool's worker may start no process of its own; its runs write from it."""
    import multiprocessing

    from expt.train.process import start_writer
    from expt.train.writer import MODE_ENV, LocalWriter

    monkeypatch.setenv(MODE_ENV, "side")
    monkeypatch.setattr(multiprocessing.current_process(), "daemon", True, raising=False)
    writer = start_writer()
    assert isinstance(writer, LocalWriter)
    writer.close()


def test_a_failed_evaluation_is_a_warning_and_hands_over_nothing() -> None:
    """The plots are extras of a run: an evaluation that raises leaves a warning, no files, and no folder."""
    from expt.core.offload import InlineEvaluator

    evaluator = InlineEvaluator()
    folder = Path(evaluator._folder)
    evaluator.submit({"folds": [(0, object(), [0], None)], "X": None, "y": None, "scorer": None, "metric": "accuracy",
                      "task": "classification", "seed": 0})
    with pytest.warns(UserWarning, match="no out-of-fold predictions or plots for this run"):
        assert evaluator.handover() is None
    evaluator.close()
    assert not folder.exists()
