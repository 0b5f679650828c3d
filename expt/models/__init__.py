"""Torch models as scikit-learn estimators.

Configs name them as ``expt.models.MLPClassifier`` and so on. The classes are
loaded on first attribute access, so ``import expt.models.hooks`` (which the CV code
does) never imports torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CNNClassifier", "CNNRegressor", "MLPClassifier", "MLPRegressor", "TorchEstimator"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from expt.models import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'expt.models' has no attribute {name!r}")
