"""Torch models, and early-stopping gradient-boosting boosters, as scikit-learn estimators.

Configs name them as ``expt.models.MLPClassifier`` and so on. The classes are
loaded on first attribute access, so ``import expt.models.hooks`` (which the CV code
does) never imports torch.
"""

from __future__ import annotations

__all__ = ["BoostedClassifier", "BoostedRegressor", "CNNClassifier", "CNNRegressor", "MLPClassifier", "MLPRegressor",
           "TorchEstimator"]
BOOSTING = ("BoostedClassifier", "BoostedRegressor")  # LightGBM, XGBoost and CatBoost boosters; no torch


def __getattr__(name: str) -> type:
    if name in BOOSTING:
        from expt.models import boosting

        return getattr(boosting, name)
    if name in __all__:
        from expt.models import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'expt.models' has no attribute {name!r}")
