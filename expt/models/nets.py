"""The torch modules behind the estimators in :mod:`expt.models.estimators`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class MLP(nn.Module):
    """Linear layers, each followed by optional batch norm, an activation and dropout."""

    def __init__(self, n_features: int, hidden: Sequence[int], n_outputs: int, *, dropout: float = 0.0,
                 batch_norm: bool = False, activation: str = "relu") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(ACTIVATIONS[activation]())
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, n_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.net(X)


class CNN(nn.Module):
    """3x3 convolutions with 2x2 max pooling while the image is at least 2 pixels wide, then a small head."""

    def __init__(self, shape: tuple[int, int, int], channels: Sequence[int], hidden: int, n_outputs: int, *,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.shape = shape
        c, h, w = shape
        layers: list[nn.Module] = []
        for out in channels:
            layers += [nn.Conv2d(c, out, kernel_size=3, padding=1), nn.ReLU()]
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, n_outputs))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(X.reshape(len(X), *self.shape)))
