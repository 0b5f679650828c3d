"""What an epoch of the torch MLP costs through expt, against a plain hand-written torch loop.

Workload: scikit-learn's digits three times over (5,391 rows x 64 pixels), the MLP of
``conf/model/mlp.yaml`` (64-128-64-10, ReLU, dropout 0.1, AdamW lr 1e-3, weight decay
1e-4), batch size 64, a fixed number of epochs (early stopping off so both sides run
them all).

* hand-written: the rows expt trains on (its 90% training split) as tensors once, then
  per epoch ``randperm`` batches with zero_grad / forward / loss / backward / step. No
  validation, no scoring, no bookkeeping: the strict floor.
* expt: the fold path ``expt train`` takes (``expt.core.cv._run_fold``): the Pipeline with its
  preprocessing fitted on the fold's training part, the estimator converting the data to
  tensors once per fit, and each epoch the validation loss, the run's metric scored on the
  validation split (what is logged per epoch to MLflow), early-stopping bookkeeping and
  the epoch hook.

Per-epoch time = a fit's wall time / epochs. The sides run in interleaved rounds (this
machine drifts by up to 40% over minutes); the medians are compared. Reports only; it
does not fail on a slow result. ``python benchmarks/bench_torch_epoch.py [ROUNDS] [EPOCHS]``.
"""

from __future__ import annotations

import statistics
import sys
import time

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
BATCH = 64
SEED = 0


def data() -> tuple:
    import numpy as np
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True, as_frame=True)
    import pandas as pd

    X = pd.concat([X] * 3, ignore_index=True)
    y = np.concatenate([y.to_numpy()] * 3)
    return X, y


def expt_side(X, y) -> tuple[float, float]:
    from sklearn.model_selection import KFold

    from expt.core.cv import _run_fold, build_pipeline, get_scorer
    from expt.models import MLPClassifier

    estimator = MLPClassifier(hidden_sizes=[128, 64], dropout=0.1, max_epochs=EPOCHS, batch_size=BATCH,
                              patience=None, validation_fraction=0.1, device="cpu", random_state=SEED)
    pipeline = build_pipeline(estimator, list(X.columns), [], {"impute": "median", "scale": "standard",
                                                                "one_hot": True, "max_categories": 50})
    train, test = next(KFold(5, shuffle=True, random_state=SEED).split(X))
    start = time.perf_counter()
    fold = _run_fold(pipeline, X, y, train, test, get_scorer("accuracy", "classification"), 0)
    wall = time.perf_counter() - start
    assert fold.error is None, fold.error
    assert len(fold.history) == EPOCHS
    return wall / EPOCHS, fold.score


def hand_side(X, y) -> float:
    import numpy as np
    import torch
    from sklearn.model_selection import KFold, train_test_split
    from sklearn.preprocessing import StandardScaler
    from torch import nn

    train, _ = next(KFold(5, shuffle=True, random_state=SEED).split(X))
    Xtr = StandardScaler().fit_transform(X.to_numpy()[train]).astype(np.float32)
    ytr = y[train]
    rows, _ = train_test_split(np.arange(len(ytr)), test_size=0.1, random_state=SEED, stratify=ytr)
    start = time.perf_counter()
    torch.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 64), nn.ReLU(),
                          nn.Dropout(0.1), nn.Linear(64, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(Xtr[rows]), torch.from_numpy(ytr[rows].astype(np.int64))
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(Xt)).split(BATCH):
            optimizer.zero_grad()
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
    return (time.perf_counter() - start) / EPOCHS


def main() -> None:
    import torch

    X, y = data()
    print(f"digits x3: {len(X)} rows, MLP 64-128-64-10, batch {BATCH}, {EPOCHS} epochs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    hand_side(X, y), expt_side(X, y)  # warm-up: lazy imports, the first AdamW
    hand, expt = [], []
    for r in range(ROUNDS):
        order = [("hand", hand_side), ("expt", expt_side)] if r % 2 == 0 else [("expt", expt_side), ("hand", hand_side)]
        for name, side in order:
            out = side(X, y)
            (hand if name == "hand" else expt).append(out if name == "hand" else out[0])
        print(f"round {r + 1}: hand-written {hand[-1] * 1000:6.1f} ms/epoch   expt {expt[-1] * 1000:6.1f} ms/epoch   "
              f"ratio {expt[-1] / hand[-1]:.2f}x")
    ratios = [e / h for e, h in zip(expt, hand, strict=True)]
    print(f"median: hand-written {statistics.median(hand) * 1000:.1f} ms/epoch, "
          f"expt {statistics.median(expt) * 1000:.1f} ms/epoch; per-round ratios {min(ratios):.2f}-{max(ratios):.2f}x")
    print(f"expt MLP epoch / hand-written torch epoch = {statistics.median(expt) / statistics.median(hand):.2f}x")


if __name__ == "__main__":
    main()
