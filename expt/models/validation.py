"""Input and parameter checks for the torch estimators, the scikit-learn way.

Through ``validate_data``, ``check_is_fitted`` and ``type_of_target`` rather than our
own checks, so that the errors are the ones scikit-learn users (and its estimator
checks) expect: sparse input refused by name, NaN and infinity named, the column count
of ``predict`` checked against ``fit``, unfitted use a ``NotFittedError``. The layer
sizes and the image shape get messages of their own, since those are what a config
gets wrong. No torch here; numpy and scikit-learn are imported
where used (expt's start-up rule), which costs nothing once the estimators are loaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike
    from sklearn.base import BaseEstimator


def check_fit_data(estimator: BaseEstimator, X: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """X as a writeable float32 table (what the network reads, and torch can share), y as one column.

    Two rows at least: training takes batches of two or more (batch norm needs them), and
    one row has neither a spread for the regressor's scaling nor a second class.
    """
    import numpy as np
    from sklearn.base import is_regressor
    from sklearn.utils.validation import validate_data

    return validate_data(estimator, X, y, accept_sparse=False, dtype=np.float32, ensure_min_samples=2,
                         y_numeric=is_regressor(estimator), multi_output=False, force_writeable=True)


def check_predict_data(estimator: BaseEstimator, X: ArrayLike) -> np.ndarray:
    """X for a fitted estimator: fitted first, then the same column count (and names, if any) as in fit."""
    import numpy as np
    from sklearn.utils.validation import check_is_fitted, validate_data

    check_is_fitted(estimator)
    return validate_data(estimator, X, accept_sparse=False, dtype=np.float32, reset=False, force_writeable=True)


def class_codes(estimator: BaseEstimator, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The classes and each row's class index; a continuous or multi-label y is refused by its kind."""
    import numpy as np
    from sklearn.utils.multiclass import type_of_target

    kind = type_of_target(y, input_name="y", raise_unknown=True)
    if kind not in ("binary", "multiclass"):
        raise ValueError(f"Unknown label type: {kind}. {type(estimator).__name__} needs class labels in y; "
                         "use a regressor for a continuous target")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"{type(estimator).__name__} needs at least 2 classes in y, got 1 class ({classes[0]!r})")
    return classes, codes.astype(np.int64)


def layer_sizes(value: Sequence[int] | str | int, name: str) -> list[int]:
    """[128, 64], 128 or "128-64" (text, so that a search can choose among layouts) → [128, 64]."""
    try:
        if isinstance(value, str):
            sizes = [int(part) for part in value.replace(",", "-").split("-") if part.strip()]
        elif isinstance(value, int | Integral):  # int: what the checker narrows on; Integral: numpy's too

            sizes = [int(value)]
        else:
            sizes = [int(v) for v in value]
    except (TypeError, ValueError):
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"{name} must be positive layer sizes like [128, 64] or \"128-64\", got {value!r}")
    return sizes


def image_shape(shape: Sequence[int] | None, n_features: int, name: str = "CNN") -> tuple[int, int, int]:
    """(channels, height, width) for rows of ``n_features`` pixels, or a ValueError that says what fits.

    A given shape must hold exactly ``n_features`` values. Without one the rows are read as
    one-channel images: square when ``n_features`` is a square of 2 or more (64 → 8x8, 784 →
    28x28), otherwise a single row of ``n_features`` pixels (a 1-D signal), so that the
    estimator fits any table the way scikit-learn's estimators do. ``expt`` itself does not
    rely on this guess: its config check refuses a CNN on data without ``data.image_shape``.
    """
    if shape is None:
        side = math.isqrt(n_features)
        return (1, side, side) if side >= 2 and side * side == n_features else (1, 1, n_features)
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        dims = ()
    if len(dims) == 2:
        dims = (1, *dims)
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"image_shape must be [height, width] or [channels, height, width], got {shape!r}")
    if math.prod(dims) != n_features:
        raise ValueError(f"{name} reads rows as {'x'.join(map(str, dims))} images ({math.prod(dims)} values) but "
                         f"the data has {n_features} columns; fix data.image_shape, or use model=mlp for tables")
    return dims
