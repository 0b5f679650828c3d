"""The names that lived here before the split (issue 14), for the sweep's sink until it imports from the new homes.

Dataset meta-features are in :mod:`expt.meta.dataset_features`, model features (a configuration's
identity, a fitted model's size) in :mod:`expt.meta.model_features`.
"""

from __future__ import annotations

from expt.meta.dataset_features import VERSION, dataset_features
from expt.meta.model_features import model_features, n_parameters

__all__ = ["VERSION", "dataset_features", "model_features", "n_parameters"]
