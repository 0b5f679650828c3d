"""Small torch networks as scikit-learn estimators: an MLP for tables, a CNN for images.

Our own thin wrapper rather than skorch, which installs and works here (1.4.0): on
digits (5391 rows, batch 64, a 64-128-128-10 MLP) an epoch through skorch cost 1.66x
a hand-written loop with its DataLoader, and still 1.27x with an iterator over
pre-converted tensors (its per-batch history and callback calls are the rest); the
budget is 1.2x. What expt needs is small: tensors made once per fit, index slices
per batch, early stopping on a split of the training part, a per-epoch hook
(:mod:`expt.models.hooks`) for MLflow and Optuna pruning, and a seeded, forked RNG so
a fit is deterministic without touching the caller's random state.

These are plain ``BaseEstimator`` subclasses: ``clone()``, ``get_params()`` and
pickling work, parameters are checked up front through ``_parameter_constraints``,
and a fitted model lives on the CPU so it loads anywhere. Input is checked the way
scikit-learn's own estimators check it (:mod:`expt.models.validation`), and the tags say
what they take (dense numeric tables, one target column), so they pass scikit-learn's
estimator checks (tests/test_estimator_checks.py) and behave in any scikit-learn tool.
"""

from __future__ import annotations

import abc
import copy
import math
from collections.abc import Callable, Iterable, Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import Tags
from sklearn.utils._param_validation import Interval, StrOptions
from torch import nn

from expt.models import hooks
from expt.models.nets import CNN, MLP
from expt.models.validation import check_fit_data, check_predict_data, class_codes, image_shape, layer_sizes

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["CNNClassifier", "CNNRegressor", "MLPClassifier", "MLPRegressor", "TorchEstimator", "image_shape",
           "layer_sizes", "resolve_device"]  # image_shape: expt.core.prepare checks data.image_shape with it

_BASE_CONSTRAINTS: dict[str, list[Any]] = {
    "optimizer": [callable, None],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "patience": [Interval(Integral, 1, None, closed="left"), None],
    "validation_fraction": [Interval(Real, 0, 1, closed="left")],
    "device": [StrOptions({"auto", "cpu", "cuda"})],
    "random_state": [Interval(Integral, 0, None, closed="left")],
}


def resolve_device(device: str) -> str:
    """``auto`` is CUDA when torch sees a GPU; asking for CUDA without one is a clear error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but torch sees no CUDA GPU here; set model.estimator.device=auto or cpu")
    return device


def default_optimizer(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3)


class TorchEstimator(BaseEstimator, abc.ABC):
    """Training loop, early stopping and prediction shared by every network."""

    _parameter_constraints = _BASE_CONSTRAINTS

    def __sklearn_tags__(self) -> Tags:
        """What the estimator takes, said out loud: dense, finite numeric tables (no sparse input, no NaN: the
        network reads every cell), one target column; and the same fit from the same data and seed."""
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.input_tags.categorical = False
        tags.input_tags.string = False
        tags.target_tags.required = True
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = False
        tags.non_deterministic = False
        return tags

    # -- what subclasses define: the network (_MLPParams, _CNNParams) and the task (_Classifier, _Regressor)
    @abc.abstractmethod
    def _make_module(self, n_features: int, n_outputs: int) -> nn.Module: ...

    @abc.abstractmethod
    def _loss(self) -> nn.Module: ...

    @abc.abstractmethod
    def _encode_target(self, y: np.ndarray) -> np.ndarray: ...

    def _check_layout(self, n_features: int) -> None:
        """A network that reads the columns in a layout (the CNN's image) refuses a table that does not fit it."""

    # -- fitting
    def fit(self, X: ArrayLike, y: ArrayLike) -> TorchEstimator:
        self._validate_params()
        X_in = X
        X, y = check_fit_data(self, X, y)
        self._check_layout(X.shape[1])
        target = self._encode_target(y)
        device = resolve_device(self.device)
        self.device_ = device
        fork = [torch.cuda.current_device()] if device == "cuda" else []
        with torch.random.fork_rng(devices=fork):  # seeded here, the caller's RNG untouched
            torch.manual_seed(self.random_state)
            self._train(X_in, X, y, target, device)
        return self

    def _train(self, X_in: ArrayLike, X: np.ndarray, y: np.ndarray, target: np.ndarray, device: str) -> None:
        train, valid = self._split(y)
        module = self._make_module(X.shape[1], self._n_outputs()).to(device)
        make_optimizer = self.optimizer or default_optimizer
        optimizer = make_optimizer(module.parameters())
        loss_fn = self._loss()
        # One conversion per fit; batches are index slices of these tensors.
        Xt, yt = torch.as_tensor(X, device=device), torch.as_tensor(target, device=device)
        X_train, y_train = Xt[train], yt[train]
        X_valid, y_valid = Xt[valid], yt[valid]
        generator = torch.Generator().manual_seed(self.random_state)
        listener = hooks.current()
        if listener.scorer is not None:  # scored as given: a frame fitted by column names is predicted by them
            X_score = X_in.iloc[valid] if hasattr(self, "feature_names_in_") and hasattr(X_in, "iloc") else X[valid]
        self.module_, self.history_ = module, []
        best_loss, best_state, best_epoch, waited = math.inf, None, 0, 0
        for epoch in range(self.max_epochs):
            row = {"epoch": epoch, "train_loss": self._epoch(module, optimizer, loss_fn, X_train, y_train, generator)}
            if len(valid):
                module.eval()
                with torch.no_grad():
                    row["valid_loss"] = float(loss_fn(module(X_valid), y_valid))
                if listener.scorer is not None:
                    row["valid_score"] = float(listener.scorer(self, X_score, y[valid]))
            if not math.isfinite(row["train_loss"]):
                raise FloatingPointError(f"the training loss became {row['train_loss']} at epoch {epoch}; lower the "
                                         "optimizer's lr or scale the features (learner.preprocessing.scale)")
            self.history_.append(row)
            if listener.on_epoch is not None:
                listener.on_epoch(epoch, row)
            if len(valid) and self.patience is not None:
                if row["valid_loss"] < best_loss - 1e-6:
                    best_loss, best_epoch, waited = row["valid_loss"], epoch, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    waited += 1
                    if waited >= self.patience:
                        break
        if best_state is not None:
            module.load_state_dict(best_state)  # the weights of the best validation epoch
        self.best_epoch_ = best_epoch if best_state is not None else len(self.history_) - 1
        self.n_epochs_ = len(self.history_)
        self.module_ = module.cpu().eval()

    def _epoch(self, module: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, X: torch.Tensor,
               y: torch.Tensor, generator: torch.Generator) -> float:
        module.train()
        total = torch.zeros((), device=X.device)
        order = torch.randperm(len(X), generator=generator).to(X.device)
        for idx in order.split(self.batch_size):
            if len(idx) < 2 and len(order) > 1:
                continue  # a batch of one breaks batch norm and is noise anyway
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(module(X[idx]), y[idx])
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)  # summed on the device: no sync per batch
        return float(total) / len(X)

    def _split(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Early stopping's validation rows, carved from the rows ``fit`` was given (the training part)."""
        n = len(y)
        n_valid = int(round(self.validation_fraction * n))
        if self.validation_fraction == 0 or n_valid < 1 or n - n_valid < 2:
            return np.arange(n), np.arange(0)
        from sklearn.model_selection import train_test_split

        stratify = y if self._stratify(y, n_valid) else None
        train, valid = train_test_split(np.arange(n), test_size=n_valid, random_state=self.random_state,
                                        stratify=stratify)
        return np.sort(train), np.sort(valid)

    def _stratify(self, y: np.ndarray, n_valid: int) -> bool:
        return False

    def _n_outputs(self) -> int:
        return 1

    # -- prediction
    def _forward(self, X: ArrayLike) -> np.ndarray:
        X = check_predict_data(self, X)  # before any fitted attribute is read: unfitted is a NotFittedError
        module = self.module_
        device = next(module.parameters()).device
        was_training = module.training
        module.eval()
        with torch.no_grad():
            out = module(torch.as_tensor(X, device=device))
        module.train(was_training)
        return out.cpu().numpy()


class _MLPParams(TorchEstimator):
    _parameter_constraints = {
        **_BASE_CONSTRAINTS,
        "hidden_sizes": ["array-like", str, Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "batch_norm": ["boolean"],
        "activation": [StrOptions({"relu", "gelu", "tanh", "silu"})],
    }

    def __init__(self, *, hidden_sizes: Sequence[int] = (128, 64), dropout: float = 0.1, batch_norm: bool = False,
                 activation: str = "relu", optimizer: Callable[..., Any] | None = None, max_epochs: int = 200,
                 batch_size: int = 64, patience: int | None = 10, validation_fraction: float = 0.1,
                 device: str = "auto", random_state: int = 0) -> None:
        self.hidden_sizes, self.dropout = hidden_sizes, dropout
        self.batch_norm, self.activation = batch_norm, activation
        self.optimizer, self.max_epochs, self.batch_size, self.patience = optimizer, max_epochs, batch_size, patience
        self.validation_fraction, self.device, self.random_state = validation_fraction, device, random_state

    def _make_module(self, n_features: int, n_outputs: int) -> nn.Module:
        return MLP(n_features, layer_sizes(self.hidden_sizes, "hidden_sizes"), n_outputs, dropout=self.dropout,
                   batch_norm=self.batch_norm, activation=self.activation)

    def _validate_params(self) -> None:
        super()._validate_params()
        _check_sizes(self, "hidden_sizes")


class _CNNParams(TorchEstimator):
    """Rows are images flattened row-major: ``image_shape`` is [height, width] or [channels, height, width].

    Without an ``image_shape`` the rows are read as one-channel images whose shape follows from the
    column count (square when it is a square, else one row of pixels; see :func:`image_shape`); the shape
    used is ``image_shape_``. A table that does not fit a given ``image_shape`` is a ValueError at fit.
    """

    needs_image = True
    _parameter_constraints = {
        **_BASE_CONSTRAINTS,
        "image_shape": ["array-like", None],
        "channels": ["array-like", str, Interval(Integral, 1, None, closed="left")],
        "hidden_size": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(self, *, image_shape: Sequence[int] | None = None, channels: Sequence[int] = (16, 32),
                 hidden_size: int = 64, dropout: float = 0.1, optimizer: Callable[..., Any] | None = None,
                 max_epochs: int = 100, batch_size: int = 64, patience: int | None = 10,
                 validation_fraction: float = 0.1, device: str = "auto", random_state: int = 0) -> None:
        self.image_shape, self.channels, self.hidden_size, self.dropout = image_shape, channels, hidden_size, dropout
        self.optimizer, self.max_epochs, self.batch_size, self.patience = optimizer, max_epochs, batch_size, patience
        self.validation_fraction, self.device, self.random_state = validation_fraction, device, random_state

    def _check_layout(self, n_features: int) -> None:
        self.image_shape_ = image_shape(self.image_shape, n_features, type(self).__name__)

    def _make_module(self, n_features: int, n_outputs: int) -> nn.Module:
        return CNN(self.image_shape_, layer_sizes(self.channels, "channels"), self.hidden_size, n_outputs,
                   dropout=self.dropout)

    def _validate_params(self) -> None:
        super()._validate_params()
        _check_sizes(self, "channels")


def _check_sizes(estimator: TorchEstimator, param: str) -> None:
    """Layer sizes are checked with the other parameters, before any run exists."""
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        layer_sizes(getattr(estimator, param), param)
    except ValueError:
        raise InvalidParameterError(f"The {param!r} parameter of {type(estimator).__name__} must be positive layer "
                                    f"sizes like [128, 64] or '128-64'. Got {getattr(estimator, param)!r} instead.")\
            from None


class _Classifier(ClassifierMixin):
    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True  # one softmax output per class
        tags.classifier_tags.multi_label = False
        return tags

    def _encode_target(self, y: np.ndarray) -> np.ndarray:
        self.classes_, codes = class_codes(self, y)
        return codes

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def _loss(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def _stratify(self, y: np.ndarray, n_valid: int) -> bool:
        _, counts = np.unique(y, return_counts=True)
        return counts.min() >= 2 and n_valid >= len(counts) and len(y) - n_valid >= len(counts)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        logits = torch.from_numpy(self._forward(X))
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, X: ArrayLike) -> np.ndarray:
        scores = self._forward(X)  # checks X (and that there is a fit) before classes_ is read
        return self.classes_[scores.argmax(axis=1)]


class _Regressor(RegressorMixin):
    """The target is standardized for training (an MLP learns a unit-scale output far better)."""

    def _encode_target(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)  # one finite column: check_fit_data saw to that
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std()) or 1.0
        return ((y - self.y_mean_) / self.y_scale_).astype(np.float32)[:, None]

    def _loss(self) -> nn.Module:
        return nn.MSELoss()

    def predict(self, X: ArrayLike) -> np.ndarray:
        return self._forward(X)[:, 0].astype(np.float64) * self.y_scale_ + self.y_mean_


class MLPClassifier(_Classifier, _MLPParams):
    """A tabular MLP classifier (cross-entropy, softmax probabilities)."""


class MLPRegressor(_Regressor, _MLPParams):
    """A tabular MLP regressor (mean squared error on the standardized target)."""


class CNNClassifier(_Classifier, _CNNParams):
    """A small CNN classifier for rows that are flattened images."""


class CNNRegressor(_Regressor, _CNNParams):
    """A small CNN regressor for rows that are flattened images."""

