"""Meta-features: finite, deterministic, and saying what a user would expect of the data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from expt.core.data import _make_dataset, load_dataset
from expt.meta.dataset_features import dataset_features
from expt.meta.model_features import model_features


def messy(task: str, n: int = 240, seed: int = 0):
    """Missing values, a constant column, an all-missing column, categoricals (one with a level per row)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "a": rng.normal(size=n), "b": rng.lognormal(size=n), "const": 3.0, "empty": np.nan,
        "colour": rng.choice(["red", "green", "blue", None], size=n), "id": [f"row{i}" for i in range(n)],
    })
    frame.loc[::5, "a"] = np.nan
    frame["y"] = (frame["b"] > 1).map({True: "big", False: "small"}) if task == "classification" \
        else frame["b"] * 2 + rng.normal(size=n)
    return _make_dataset(frame, "y", task, f"messy-{task}")


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_meta_features_are_finite_and_the_same_for_a_seed(task: str) -> None:
    data = messy(task)
    first, again = dataset_features(data, seed=3), dataset_features(data, seed=3)
    assert first == again
    assert all(math.isfinite(v) for v in first.values())
    assert first["general.missing_ratio"] > 0 and first["general.categorical_ratio"] == pytest.approx(2 / 6)
    assert first["stat.constant_ratio"] > 0
    groups = {k.split(".")[0] for k in first}
    assert {"general", "stat", "info", "land"} <= groups
    assert ("general.class_entropy" in first) == (task == "classification")
    assert ("target.skew" in first) == (task == "regression")


def test_landmarkers_tell_signal_from_noise() -> None:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=400, n_features=8, n_informative=6, class_sep=2.0, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(8)])
    signal = dataset_features(_make_dataset(frame.assign(y=y), "y", "classification", "signal"))
    shuffled = np.random.default_rng(0).permutation(y)
    noise = dataset_features(_make_dataset(frame.assign(y=shuffled), "y", "classification", "noise"))
    assert signal["land.linear"] > 0.6 and abs(noise["land.linear"]) < 0.2
    assert signal["info.mi_mean"] > 3 * noise["info.mi_mean"]


def test_large_data_is_subsampled_but_its_size_is_kept() -> None:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(6000, 5)), columns=list("abcde")).assign(y=rng.integers(0, 3, 6000))
    data = _make_dataset(frame, "y", "classification", "big")
    features = dataset_features(data, max_rows=500)
    assert features["general.log_rows"] == pytest.approx(math.log10(6000))
    assert features == dataset_features(data, max_rows=500)


def test_bundled_datasets_differ_where_they_should() -> None:
    iris = dataset_features(load_dataset({"source": "sklearn", "id": "iris", "target": "target"}))
    digits = dataset_features(load_dataset({"source": "sklearn", "id": "digits", "target": "target"}))
    assert digits["general.log_features"] > iris["general.log_features"]
    assert digits["general.log_classes"] > iris["general.log_classes"]
    assert digits["stat.zero_ratio"] > iris["stat.zero_ratio"]


def test_a_configuration_is_identified_by_what_it_learns_not_how_it_runs() -> None:
    from dataclasses import replace

    from expt.core.config import compose, resolve_values
    from expt.core.settings import Config, Model, settings_of

    config = settings_of(resolve_values(compose(["model=svm", "data.task=classification"]).cfg))

    def svm(**params: object) -> Config:
        return replace(config, model=Model("svm", "svm", ("classification",), {"_target_": "sklearn.svm.SVC",
                                                                              **params}))

    base, again, other = svm(C=1.0), svm(C=1.0, random_state=7, n_jobs=2), svm(C=10.0)
    assert model_features(base)["config_key"] == model_features(again)["config_key"]
    assert model_features(base)["config_key"] != model_features(other)["config_key"]
    assert model_features(base)["params"] == {"C": 1.0}
