"""Composition: every packaged option composes, recipes and logged configs compose back, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT

from expt.core.build import build, check_targets
from expt.core.config import GROUPS, compose, conf_dir, logged_yaml, resolve_values
from expt.core.errors import ConfigError

OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((conf_dir() / g).glob("*.yaml")) if not p.stem.startswith("_")]


def test_defaults_compose() -> None:
    composed = compose()
    assert composed.choices == {"data": "iris", "model": "random_forest", "learner": "default", "tracking": "local",
                                "search": "random_forest"}
    assert composed.cfg.learner.cv.folds == 5


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group: str, option: str) -> None:
    composed = compose([f"{group}={option}"])
    assert composed.choices[group] == option
    assert set(GROUPS) <= set(composed.cfg)


def test_at_least_the_promised_options_exist() -> None:
    names = {g: {o for gg, o in OPTIONS if gg == g} for g in GROUPS}
    assert {"iris", "wine", "breast_cancer", "digits", "diabetes", "file", "rdataset"} <= names["data"]
    assert {"logistic_regression", "ridge", "random_forest", "extra_trees", "hist_gradient_boosting", "svm",
            "knn"} <= names["model"]


def test_overrides_apply() -> None:
    cfg = compose(["data=wine", "model=svm", "model.estimator.C=3", "learner.cv.folds=10"]).cfg
    assert (cfg.data.name, cfg.model.name, cfg.model.estimator.C, cfg.learner.cv.folds) == ("wine", "svm", 3, 10)


def test_recipe_file_composes_with_its_overrides() -> None:
    composed = compose([f"conf={ROOT / 'recipes' / 'wine_svm.yaml'}"])
    assert composed.choices["data"] == "wine" and composed.choices["model"] == "svm"
    assert composed.cfg.model.estimator.C == 3.0 and composed.cfg.learner.cv.folds == 10


def test_command_line_beats_recipe() -> None:
    cfg = compose([f"conf={ROOT / 'recipes' / 'wine_svm.yaml'}", "model.estimator.C=7"]).cfg
    assert cfg.model.estimator.C == 7


def _resolved(composed) -> dict:
    from omegaconf import open_dict

    with open_dict(composed.cfg):
        composed.cfg.data.task = composed.cfg.data.task if composed.cfg.data.task != "auto" else "regression"
    return resolve_values(composed.cfg)


@pytest.mark.parametrize("overrides", [["data=wine", "model=svm", "model.estimator.C=2.5"],
                                       ["data=diabetes", "model=knn", "learner=repeated"],
                                       ["data=rdataset", "model=ridge", "learner=quick", "seed=3"]])
def test_logged_config_composes_back_to_the_same_values(tmp_path: Path, overrides: list[str]) -> None:
    composed = compose(overrides)
    values = _resolved(composed)
    logged = tmp_path / "config.yaml"
    logged.write_text(logged_yaml(values, composed.choices))
    again = compose([f"conf={logged}"])
    assert again.choices == composed.choices
    assert resolve_values(again.cfg) == values


def test_logged_config_with_a_new_model_drops_the_old_model_values(tmp_path: Path) -> None:
    composed = compose(["model=svm"])
    logged = tmp_path / "config.yaml"
    logged.write_text(logged_yaml(_resolved(composed), composed.choices))
    cfg = compose([f"conf={logged}", "model=knn"]).cfg
    assert "C" not in cfg.model.estimator and cfg.model.name == "knn"


def test_user_config_dir_adds_options(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tiny_forest.yaml").write_text(
        "name: tiny_forest\nfamily: random_forest\ntasks: [classification]\n"
        "estimator:\n  _target_: sklearn.ensemble.RandomForestClassifier\n  n_estimators: 3\n"
    )
    composed = compose(["model=tiny_forest"], config_dir=tmp_path)
    assert composed.cfg.model.estimator.n_estimators == 3


def test_unknown_option_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError) as err:
        compose(["model=svn"])
    msg = str(err.value)
    assert "unknown model 'svn'" in msg and "did you mean 'svm'" in msg and "random_forest" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(("override", "expected"), [
    ("learner.cv.foldz=3", "unknown config key 'learner.cv.foldz'"),
    ("model.estimator.Cx=3", "+model.estimator.Cx=VALUE"),
    ("learner.cv.folds=[1", "cannot parse override"),
])
def test_bad_overrides_are_named(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose([override])
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("target", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_targets_outside_the_allow_list_are_refused(target: str) -> None:
    with pytest.raises(ConfigError, match="is not allowed"):
        check_targets({"estimator": {"_target_": "sklearn.svm.SVC", "inner": {"_target_": target}}})


def test_trusted_prefix_extends_the_allow_list() -> None:
    check_targets({"_target_": "mylib.Model"}, allowed=("sklearn.", "mylib."))


def test_build_checks_parameters_before_fitting() -> None:
    with pytest.raises(ConfigError, match="'C' parameter of SVC.*fix model.estimator.C"):
        build({"_target_": "sklearn.svm.SVC", "C": -1.0}, where="model.estimator")
    with pytest.raises(ConfigError, match="SVC has no parameter 'Cx'"):
        build({"_target_": "sklearn.svm.SVC", "Cx": 1.0}, where="model.estimator")
    with pytest.raises(ConfigError, match="cannot be imported"):
        build({"_target_": "sklearn.svm.SVX"}, where="model.estimator")
