"""LightGBM, XGBoost and CatBoost as expt models: early stopping on each fit's own rows, pruning per boosting round at
steps unique across inner folds, native categoricals, tree nodes, what the one door lets them build, and each family
from train to a served model and an exact rerun."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from helpers import all_runs, train
from sklearn.datasets import make_classification
from sklearn.model_selection import KFold
from typer.testing import CliRunner

from expt.cli import app
from expt.core.build import build
from expt.core.errors import ConfigError
from expt.models import BoostedClassifier, BoostedRegressor

FAMILIES = ("lightgbm", "xgboost", "catboost")
ROUNDS = 40  # a booster's most rounds here: a sweep's steps are inner fold x ROUNDS + round
TINY = {
    "lightgbm": ["model=lightgbm", f"model.estimator.booster.n_estimators={ROUNDS}",
                 "model.estimator.booster.num_leaves=7"],
    "xgboost": ["model=xgboost", f"model.estimator.booster.n_estimators={ROUNDS}",
                "model.estimator.booster.max_depth=3"],
    "catboost": ["model=catboost", f"model.estimator.booster.iterations={ROUNDS}", "model.estimator.booster.depth=3",
                 "model.estimator.booster.learning_rate=0.2"],
}
NO_EXTRAS = ["learner=quick", "tracking.plots=false", "tracking.records=null"]
DISTRIBUTION = {"lightgbm": "lightgbm", "xgboost": "xgboost-cpu", "catboost": "catboost"}


def booster(family: str, task: str = "classification", **params: Any) -> Any:
    import catboost
    import lightgbm
    import xgboost

    if family == "lightgbm":
        cls = lightgbm.LGBMClassifier if task == "classification" else lightgbm.LGBMRegressor
        return cls(**{"n_estimators": ROUNDS, "num_leaves": 7, "n_jobs": 1, "verbosity": -1, "random_state": 0,
                      **params})
    if family == "xgboost":
        cls = xgboost.XGBClassifier if task == "classification" else xgboost.XGBRegressor
        return cls(n_estimators=ROUNDS, max_depth=3, n_jobs=1, random_state=0, **params)
    cls = catboost.CatBoostClassifier if task == "classification" else catboost.CatBoostRegressor
    return cls(iterations=ROUNDS, depth=3, thread_count=1, verbose=False, allow_writing_files=False, random_seed=0,
               **params)


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


# -- early stopping -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_early_stopping_validates_on_the_training_part_and_never_on_the_test_fold(
        family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Column 0 is each row's id: every row the booster trained or validated on is of the fold's training part."""
    X, y = make_classification(n_samples=120, n_features=5, random_state=0)
    X[:, 0] = np.arange(len(X))
    seen: list[tuple[set[int], set[int]]] = []
    fit = type(booster(family)).fit

    def spy(self: Any, X_fit: Any, y_fit: Any, **kwargs: Any) -> Any:
        X_val = kwargs["eval_X"][0] if "eval_X" in kwargs else (
            kwargs["eval_set"][0][0] if isinstance(kwargs["eval_set"], list) else kwargs["eval_set"][0])
        seen.append(({int(v) for v in np.asarray(X_fit)[:, 0]}, {int(v) for v in np.asarray(X_val)[:, 0]}))
        return fit(self, X_fit, y_fit, **kwargs)

    monkeypatch.setattr(type(booster(family)), "fit", spy)
    for train_rows, test_rows in KFold(3, shuffle=True, random_state=0).split(X):
        model = BoostedClassifier(booster(family), validation_fraction=0.2, early_stopping_rounds=5)
        model.fit(X[train_rows], y[train_rows])
        fitted, validated = seen[-1]
        assert validated and not validated & set(test_rows.tolist()) and not fitted & set(test_rows.tolist())
        assert fitted | validated == set(train_rows.tolist()) and not fitted & validated
        assert len(validated) == round(0.2 * len(train_rows))
        assert model.n_rounds_ <= ROUNDS and model.predict(X[test_rows]).shape == (len(test_rows),)


def test_early_stopping_stops_before_the_last_round() -> None:
    X, y = make_classification(n_samples=300, n_features=8, flip_y=0.3, random_state=1)
    model = BoostedRegressor(booster("lightgbm", "regression", learning_rate=0.5, n_estimators=500),
                             early_stopping_rounds=5).fit(X, y.astype(float))
    assert model.n_rounds_ < 500 and model.best_iteration_ is not None and model.best_iteration_ < model.n_rounds_
    with pytest.raises(ValueError, match="validation split"):
        BoostedClassifier(booster("lightgbm"), validation_fraction=0.0, early_stopping_rounds=5).fit(X, y)


# -- native categoricals ------------------------------------------------------------------------------------------

def categorical_table(n: int = 360) -> tuple[pd.DataFrame, np.ndarray]:
    """The label is which of 12 colours a row has (half of them say 1): one-hot needs many splits, a category one."""
    rng = np.random.default_rng(0)
    colours = np.array([f"c{i}" for i in range(12)])
    colour = colours[rng.integers(0, 12, n)]
    y = np.isin(colour, colours[[0, 3, 4, 7, 9, 10]]).astype(int)
    return pd.DataFrame({"colour": colour, "noise": rng.normal(size=n)}), y


@pytest.mark.parametrize("family", ["lightgbm", "catboost"])
def test_native_categoricals_reach_the_booster_as_categories(family: str) -> None:
    from expt.core.cv import build_pipeline

    X, y = categorical_table()
    estimator = BoostedClassifier(booster(family), categorical="native", early_stopping_rounds=None)
    options = {"impute": "median", "scale": "none", "one_hot": True, "max_categories": 50}
    pipeline = build_pipeline(estimator, ["noise"], ["colour"], options).fit(X, y)
    encoder = pipeline.named_steps["preprocess"].named_transformers_["categorical"].steps[-1][1]
    assert type(encoder).__name__ == "OrdinalEncoder"  # not one-hot, whatever the learner says
    fitted = pipeline.named_steps["model"]
    assert fitted.categorical_columns == [1]
    if family == "lightgbm":
        trees = fitted.booster_.booster_.dump_model()["tree_info"]
        assert any(t["tree_structure"].get("decision_type") == "==" for t in trees)  # a categorical split
    else:
        assert fitted.booster_.get_cat_feature_indices() == [1]
    assert pipeline.score(X, y) > 0.95
    with pytest.raises(ValueError, match="categorical=native is for LightGBM and CatBoost"):
        BoostedClassifier(booster("xgboost"), categorical="native").fit(np.zeros((4, 2)), [0, 1, 0, 1])


def test_native_categoricals_through_expt_train(store: str, tmp_path: Path) -> None:
    X, y = categorical_table()
    X.assign(target=y).to_csv(tmp_path / "colours.csv", index=False)
    result = train(store, "data=file", f"data.path={tmp_path / 'colours.csv'}", "data.target=target", *TINY["lightgbm"],
                   "model.estimator.categorical=native", "+model.estimator.booster.min_data_per_group=5",
                   "+model.estimator.booster.cat_smooth=1", *NO_EXTRAS)
    assert result.cv.mean > 0.9
    assert result.prepared.pipeline.named_steps["model"].categorical_columns == [1]


# -- size -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_n_parameters_counts_tree_nodes(family: str) -> None:
    from expt.meta.model_features import n_parameters

    X, y = make_classification(n_samples=100, n_features=5, random_state=0)
    model = BoostedClassifier(booster(family), early_stopping_rounds=None).fit(X, y)
    inner = model.booster_
    if family == "lightgbm":
        expected = len(inner.booster_.trees_to_dataframe())
    elif family == "xgboost":
        expected = len(inner.get_booster().trees_to_dataframe())
    else:
        expected = inner.tree_count_ * (2 ** (3 + 1) - 1)  # symmetric trees of depth 3: 15 nodes each
    assert n_parameters(model) == expected > ROUNDS


# -- the one door ---------------------------------------------------------------------------------------------------

VICTIM = "VICTIM"
REFUSED = {
    "lightgbm.Booster": ({"_target_": "lightgbm.Booster", "model_file": VICTIM}, "not a class a config may build"),
    "xgboost.DMatrix": ({"_target_": "xgboost.DMatrix", "data": VICTIM}, "not a class a config may build"),
    "catboost.Pool": ({"_target_": "catboost.Pool", "data": VICTIM}, "not a class a config may build"),
    "xgboost.callback": ({"_target_": "xgboost.callback.EarlyStopping", "rounds": 1}, "not a class a config may build"),
    "lightgbm.train": ({"_target_": "lightgbm.train", "params": {}, "train_set": VICTIM}, "is a function, not a class"),
    "catboost.to_classifier": ({"_target_": "catboost.to_classifier", "model": VICTIM}, "is a function, not a class"),
    "traversal": ({"_target_": "xgboost.core.os.makedirs", "name": VICTIM}, "cannot be imported"),
    "CatBoost writing files": ({"_target_": "catboost.CatBoostClassifier", "iterations": 2},
                               "allow_writing_files must be false"),
    "CatBoost train_dir": ({"_target_": "catboost.CatBoostClassifier", "allow_writing_files": False,
                            "train_dir": VICTIM}, "read or write files"),
    "LightGBM output_model": ({"_target_": "lightgbm.LGBMClassifier", "output_model": VICTIM}, "read or write files"),
    "LightGBM machines": ({"_target_": "lightgbm.LGBMClassifier", "machines": "10.0.0.1:12400"}, "open a connection"),
    "nested in the wrapper": ({"_target_": "expt.models.BoostedClassifier",
                               "booster": {"_target_": "lightgbm.Booster", "model_file": VICTIM}},
                              "not a class a config may build"),
}


@pytest.mark.parametrize("name", REFUSED)
def test_the_door_builds_their_estimators_and_nothing_else_of_theirs(name: str, tmp_path: Path) -> None:
    node, message = REFUSED[name]
    victim = tmp_path / "victim"
    node = _replace(node, str(victim))
    with pytest.raises(ConfigError, match=message):
        build(node, where="model.estimator")
    assert not victim.exists()


def _replace(node: Any, victim: str) -> Any:
    if isinstance(node, dict):
        return {k: _replace(v, victim) for k, v in node.items()}
    return victim if node == VICTIM else node


def test_a_config_file_naming_a_non_estimator_of_theirs_is_refused_in_one_line(store: str, tmp_path: Path) -> None:
    import yaml

    victim = tmp_path / "victim"
    groups = tmp_path / "evil" / "model"
    groups.mkdir(parents=True)
    node = {"_target_": "expt.models.BoostedClassifier",
            "booster": {"_target_": "catboost.CatBoostClassifier", "allow_writing_files": False,
                        "snapshot_file": str(victim), "save_snapshot": True}}
    (groups / "evil.yaml").write_text(yaml.safe_dump({"name": "evil", "family": "catboost", "tasks": ["classification"],
                                                      "estimator": node}))
    result = run_cli("train", "--config-dir", str(tmp_path / "evil"), "model=evil", "data=iris",
                     f"tracking.uri={store}")
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "read or write files" in result.stderr
    assert not victim.exists() and all_runs(store) == []
    for family in FAMILIES:  # and the shipped configs pass the same door
        from expt.core.config import model_configs

        model = model_configs((family,), {"seed": 0, "data": {"task": "classification"}}, None)[family]
        assert type(build(model["estimator"], where="model.estimator")).__name__ == "BoostedClassifier"


# -- end to end ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_train_logs_a_model_with_complete_requirements_that_predicts(family: str, store: str, tmp_path: Path) -> None:
    from test_serve import new_data, requirements

    result = train(store, "data=breast_cancer", *TINY[family], *NO_EXTRAS)
    assert result.cv.mean > 0.9
    listed = set(requirements(store, result.run_id, tmp_path))
    assert {"scikit-learn", "cloudpickle", "expt-runner", DISTRIBUTION[family]} <= listed, listed
    assert not {"torch", "xgboost"} & listed  # no GPU build, no torch for a booster
    table = new_data(result, tmp_path / "new.csv", rows=10)
    done = run_cli("predict", "--model", result.run_id, str(tmp_path / "new.csv"), "--tracking-uri", store)
    assert done.exit_code == 0, done.output
    predicted = pd.read_csv(pd.io.common.StringIO(done.stdout))
    model = result.prepared.pipeline.fit(result.prepared.dataset.X, result.prepared.dataset.y)
    assert (predicted["prediction"].to_numpy() == model.predict(table)).all()
    outer = [r for r in all_runs(store) if r.info.run_id == result.run_id]
    assert outer and outer[0].data.params.get("model.estimator.booster._target_", "").startswith(family)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_sweep_prunes_per_boosting_round_at_steps_unique_across_inner_folds(family: str, store: str,
                                                                              tmp_path: Path) -> None:
    from expt.core.config import compose
    from expt.sweep.runner import SweepOptions, run_sweep
    from expt.sweep.storage import open_storage

    storage = str(tmp_path / "optuna.journal")
    composed = compose(["data=breast_cancer", *TINY[family], f"search={family}", "search.outer_folds=2",
                        "search.inner_folds=2", "search.n_trials=8", "search.sampler=random",
                        "model.estimator.report_every=4", f"model.estimator.early_stopping_rounds={ROUNDS}",
                        "learner.metric.classification=neg_log_loss", "tracking.records=null", "tracking.plots=false",
                        f"tracking.uri={store}"])
    run_sweep(composed, SweepOptions(sweep_id="gb", storage=storage))
    states: collections.Counter = collections.Counter()
    for unit in ("fold-0", "fold-1", "final"):
        study = optuna.load_study(study_name=f"gb/{unit}", storage=open_storage(storage))
        states.update(t.state.name for t in study.trials)
        for t in study.trials:
            steps = sorted(t.intermediate_values)
            assert steps and all(step % 4 == 3 for step in steps)  # every 4th round, 0-based
            by_fold = collections.Counter(step // ROUNDS for step in steps)
            if t.state.name == "COMPLETE":  # both inner folds reported, each in its own range of steps
                assert set(by_fold) == {0, 1}, steps
        pruned = [t for t in study.trials if t.state.name == "PRUNED"]
        assert all("inner fold" in t.user_attrs["pruned_at"] for t in pruned)
    assert states["PRUNED"] > 0 and states["COMPLETE"] + states["PRUNED"] == 24
    assert not [r for r in all_runs(store) if r.info.status == "RUNNING"]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_rerun_is_exact_and_mlflow_serves_what_expt_predict_says(family: str, store: str, tmp_path: Path) -> None:
    from test_serve import new_data, served_predictions

    result = train(store, "data=breast_cancer", *TINY[family], *NO_EXTRAS)
    rerun = run_cli("rerun", result.run_id, "--tracking-uri", store, "--check")
    assert rerun.exit_code == 0, rerun.output
    assert "match exactly" in rerun.output
    table = new_data(result, tmp_path / "new.csv")
    done = run_cli("predict", "--model", f"runs:/{result.run_id}/model", str(tmp_path / "new.csv"), "-o",
                   str(tmp_path / "p.csv"), "-u", store)
    assert done.exit_code == 0, done.output
    expected = pd.read_csv(tmp_path / "p.csv")["prediction"].tolist()
    served = served_predictions(store, result.run_id, table, tmp_path)
    assert served == expected and len(served) == len(table)


def test_recommend_and_model_selection_leave_out_a_family_that_is_not_installed(monkeypatch: pytest.MonkeyPatch,
                                                                                store: str) -> None:
    from types import SimpleNamespace

    import expt.core.build as door
    from expt.core.config import compose
    from expt.meta.advise import constraints
    from expt.sweep.plan import make_plan

    monkeypatch.setattr(door, "missing_libraries", lambda: {"catboost"})
    table = SimpleNamespace(task="classification", configs=[{"model": {"name": n, "family": n}}
                                                             for n in ("lightgbm", "catboost", "svm")])
    allowed, notes = constraints(table, families=None, max_fit_seconds=None, n_rows=100)
    assert allowed.tolist() == [True, False, True] and "expt-runner[boosting]" in notes[0]
    plan = make_plan(compose(["data=iris", "search=model_selection", "tracking.records=null", f"tracking.uri={store}"]))
    model = next(p for p in plan.space.params if p.name == "model")
    assert "catboost" not in model.choices and {"lightgbm", "xgboost"} <= set(model.choices)
