"""The torch estimators pass scikit-learn's own estimator checks, as any estimator in a Pipeline, a search or a
cross-validation expects: input validated the scikit-learn way, honest tags, NotFittedError, clone and pickling.

Small networks and a higher learning rate keep the file fast; the accuracy checks (training accuracy > 0.83,
R² > 0.5) still have to be met by training, with room to spare (about 0.92 and 0.8 here). No check is marked
as an expected failure.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from expt.models import CNNClassifier, CNNRegressor, MLPClassifier, MLPRegressor

FAST = {"max_epochs": 20, "patience": None, "device": "cpu",
        "optimizer": functools.partial(torch.optim.AdamW, lr=0.01)}
ESTIMATORS = [
    MLPClassifier(hidden_sizes=[16], **FAST),
    MLPRegressor(hidden_sizes=[16], **FAST),
    # no image_shape: the checks' tables (1 to 10 columns) are read as square or one-row images
    CNNClassifier(channels=[4], hidden_size=16, **FAST),
    CNNRegressor(channels=[4], hidden_size=16, **FAST),
]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Networks this small gain nothing from a second thread, and lose a lot when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


def test_cnn_reads_a_table_without_image_shape_as_square_or_one_row_images() -> None:
    rng = np.random.RandomState(0)
    y = np.arange(40) % 2
    for n_features, shape in [(16, (1, 4, 4)), (10, (1, 1, 10)), (1, (1, 1, 1))]:
        est = CNNClassifier(channels=[4], hidden_size=8, **FAST).fit(rng.normal(size=(40, n_features)), y)
        assert est.image_shape_ == shape
    est = CNNRegressor(image_shape=[3, 2, 2], channels=[4], hidden_size=8, **FAST)
    assert est.fit(rng.normal(size=(40, 12)), y * 1.0).image_shape_ == (3, 2, 2)


def test_cnn_refuses_a_table_that_does_not_fit_its_image_shape() -> None:
    X, y = np.random.RandomState(0).normal(size=(40, 10)), np.arange(40) % 2
    with pytest.raises(ValueError, match=r"reads rows as 1x4x4 images \(16 values\) but the data has 10 columns"):
        CNNClassifier(image_shape=[4, 4], **FAST).fit(X, y)
    with pytest.raises(ValueError, match=r"image_shape must be \[height, width\]"):
        CNNClassifier(image_shape=[10], **FAST).fit(X, y)


def test_a_fit_on_a_frame_keeps_its_column_names_and_the_clone_is_unfitted() -> None:
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(np.random.RandomState(0).normal(size=(40, 3)), columns=["a", "b", "c"])
    y = np.arange(40) % 3
    est = MLPClassifier(hidden_sizes=[8], **FAST).fit(X, y)
    assert list(est.feature_names_in_) == ["a", "b", "c"] and est.predict(X).shape == (40,)
    with pytest.raises(ValueError, match="Feature names unseen at fit time"):
        est.predict(X.rename(columns={"c": "d"}))
    assert not hasattr(clone(est), "module_")
