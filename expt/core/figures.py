"""Evaluation plots drawn from out-of-fold predictions (:mod:`expt.core.evaluation`), never from the fit data.

Classification: the confusion matrix normalized per true class, ROC and precision-recall
curves (one-vs-rest for more than two classes) and a calibration curve, where the model gives
probabilities (ROC and PR also from a binary model's decision scores). Regression: predicted
against actual, and residuals. Both: permutation importance on the held-out parts, top 20.

Fixed margins rather than ``tight_layout``: it cost ~50 ms a figure, and these are drawn for
every run. Each plot is a PNG under the folder given; one that cannot be drawn (a single class
in the held-out rows, say) is left out, not an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

TOP_FEATURES = 20
MAX_CURVES = 10  # one-vs-rest curves drawn per plot; more classes: the 10 most frequent
DPI = 80


def draw(table: pd.DataFrame, classes: list[Any], importances: Mapping[str, list[float]], task: str, metric: str,
         out: Path) -> list[Path]:
    """Every plot an evaluation's predictions, classes and importances (:class:`expt.core.evaluation.Evaluation`)
    allow, as files in ``out``."""
    if len(table) == 0:
        return []
    makers = ([_confusion, _roc, _precision_recall, _calibration] if task == "classification"
              else [_predicted_vs_actual, _residuals])
    # No warnings.catch_warnings here: this may run in a thread beside the train run's own work, and the
    # filters it sets are the whole process's. A class without positives is left out of its curves instead.
    files = [make(table, classes, out) for make in makers]
    files.append(_importance(importances, metric, out))
    return [f for f in files if f is not None]


def _figure(width: float = 5.5, height: float = 4.5, left: float = 0.14, right: float = 0.96) -> tuple[Figure, Axes]:
    """A figure without pyplot: no global state, and 0.3 s less to import in a process that only draws files."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    ax = fig.subplots()
    margin = 0.55 / height  # inches for the axis label below and the title above
    fig.subplots_adjust(left=left, right=right, bottom=margin + 0.05, top=1 - margin)
    return fig, ax


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _scores(table: pd.DataFrame, classes: list[Any]) -> tuple[np.ndarray, list[Any]] | None:
    """Per-class scores (n x k) from probabilities, or a binary model's decision score as the positive column."""
    import numpy as np

    proba = [f"proba_{c}" for c in classes]
    if classes and all(c in table.columns for c in proba):
        return table[proba].to_numpy(dtype=float), classes
    if "score" in table.columns and len(classes) == 2:
        s = table["score"].to_numpy(dtype=float)
        return np.column_stack([-s, s]), classes
    return None


def _shown(table: pd.DataFrame, classes: list[Any]) -> list[int]:
    """The classes (by position) that get a curve: the positive one of two, else the most frequent."""
    if len(classes) == 2:
        return [1]
    counts = table["y_true"].value_counts()
    ranked = sorted(range(len(classes)), key=lambda i: -int(counts.get(classes[i], 0)))
    return sorted(ranked[:MAX_CURVES])


def _confusion(table: pd.DataFrame, classes: list[Any], out: Path) -> Path | None:
    import numpy as np
    from sklearn.metrics import confusion_matrix

    labels = classes or sorted(set(table["y_true"]) | set(table["y_pred"]))
    matrix = confusion_matrix(table["y_true"], table["y_pred"], labels=labels, normalize="true")
    k = len(labels)
    size = min(9.0, 3.5 + 0.35 * k)
    fig, ax = _figure(size + 0.5, size, left=0.16, right=0.96)
    image = ax.imshow(np.nan_to_num(matrix), vmin=0, vmax=1, cmap="Blues")
    if k > 15:  # too many cells to write their values in
        fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true",
           title="confusion matrix (each true class sums to 1)")
    ax.set_xticklabels([str(c) for c in labels], rotation=45 if k > 6 else 0, fontsize=8)
    ax.set_yticklabels([str(c) for c in labels], fontsize=8)
    if k <= 15:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > 0.5 else "black")
    return _save(fig, out / "confusion_matrix.png")


def _one_vs_rest(table: pd.DataFrame, classes: list[Any]) -> list[tuple[str, np.ndarray, np.ndarray]] | None:
    """(label, is-this-class, score) for each class a curve is drawn for (both kinds present in y); None where the
    model gave no scores. Shared by the ROC and precision-recall curves."""
    found = _scores(table, classes)
    if found is None:
        return None
    scores, classes = found
    y = table["y_true"].to_numpy()
    out = []
    for i in _shown(table, classes):
        positive = y == classes[i]
        if positive.all() or not positive.any():
            continue
        label = f"{classes[i]} vs rest" if len(classes) > 2 else f"positive class {classes[i]}"
        out.append((label, positive, scores[:, i]))
    return out


def _roc(table: pd.DataFrame, classes: list[Any], out: Path) -> Path | None:
    from sklearn.metrics import auc, roc_curve

    curves = _one_vs_rest(table, classes)
    if curves is None:
        return None
    fig, ax = _figure()
    for label, positive, score in curves:
        fpr, tpr, _ = roc_curve(positive, score)
        ax.plot(fpr, tpr, lw=1.5, label=f"{label} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve (out-of-fold)")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out / "roc_curve.png")


def _precision_recall(table: pd.DataFrame, classes: list[Any], out: Path) -> Path | None:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    curves = _one_vs_rest(table, classes)
    if curves is None:
        return None
    fig, ax = _figure()
    for label, positive, score in curves:
        precision, recall, _ = precision_recall_curve(positive, score)
        ap = average_precision_score(positive, score)
        ax.plot(recall, precision, lw=1.5, label=f"{label} (AP {ap:.3f})")
    ax.set(xlabel="recall", ylabel="precision", title="precision-recall curve (out-of-fold)", ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower left")
    return _save(fig, out / "precision_recall_curve.png")


def _calibration_curve(positive: ArrayLike, proba: ArrayLike, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Observed frequency and mean predicted probability per non-empty uniform bin (scikit-learn's
    ``calibration_curve``, without importing ``sklearn.calibration``'s 0.3 s for it)."""
    import numpy as np

    which = np.clip((np.asarray(proba, dtype=float) * bins).astype(int), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    hits = np.bincount(which, weights=np.asarray(positive, dtype=float), minlength=bins)
    sums = np.bincount(which, weights=np.asarray(proba, dtype=float), minlength=bins)
    filled = counts > 0
    return hits[filled] / counts[filled], sums[filled] / counts[filled]


def _calibration(table: pd.DataFrame, classes: list[Any], out: Path) -> Path | None:
    if not classes or not all(f"proba_{c}" in table.columns for c in classes):
        return None
    y = table["y_true"].to_numpy()
    fig, ax = _figure()
    for i in _shown(table, classes):
        positive = y == classes[i]
        if positive.all() or not positive.any():
            continue
        observed, predicted = _calibration_curve(positive, table[f"proba_{classes[i]}"])
        ax.plot(predicted, observed, marker="o", ms=3, lw=1.2, label=f"class {classes[i]}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfectly calibrated")
    ax.set(xlabel="mean predicted probability", ylabel="observed frequency", title="calibration (out-of-fold)",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, out / "calibration_curve.png")


def _predicted_vs_actual(table: pd.DataFrame, classes: list[Any], out: Path) -> Path | None:
    y, p = table["y_true"].to_numpy(dtype=float), table["y_pred"].to_numpy(dtype=float)
    fig, ax = _figure(5, 5)
    ax.scatter(y, p, s=8, alpha=0.5)
    low, high = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    ax.plot([low, high], [low, high], ls="--", color="grey", lw=1)
    ax.set(xlabel="actual", ylabel="predicted (out-of-fold)", title="predicted vs actual")
    return _save(fig, out / "predicted_vs_actual.png")


def _residuals(table: pd.DataFrame, classes: list[Any], out: Path) -> Path | None:
    from matplotlib.figure import Figure

    y, p = table["y_true"].to_numpy(dtype=float), table["y_pred"].to_numpy(dtype=float)
    residual = y - p
    fig = Figure(figsize=(8, 3.8))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})
    fig.subplots_adjust(left=0.09, right=0.97, bottom=0.14, top=0.88, wspace=0.25)
    left.scatter(p, residual, s=8, alpha=0.5)
    left.axhline(0, ls="--", color="grey", lw=1)
    left.set(xlabel="predicted", ylabel="actual - predicted", title="residuals (out-of-fold)")
    right.hist(residual, bins=30, orientation="horizontal", color="tab:blue", alpha=0.7)
    right.set(xlabel="rows", title="distribution")
    return _save(fig, out / "residuals.png")


def _importance(importances: Mapping[str, list[float]], metric: str, out: Path) -> Path | None:
    import numpy as np

    if not importances:
        return None
    means = {k: float(np.mean(v)) for k, v in importances.items() if v}
    top = sorted(means, key=lambda k: -means[k])[:TOP_FEATURES]
    if not top:
        return None
    widest = max(len(str(k)) for k in top)
    fig, ax = _figure(7, 0.28 * len(top) + 1.6, left=min(0.45, 0.06 + 0.012 * widest))
    ax.barh(range(len(top))[::-1], [means[k] for k in top], xerr=[float(np.std(importances[k])) for k in top],
            color="tab:blue", alpha=0.8, error_kw={"lw": 0.8})
    ax.set_yticks(range(len(top))[::-1])
    ax.set_yticklabels([str(k) for k in top], fontsize=7)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set(xlabel=f"drop in {metric} when shuffled", title=f"permutation importance, held-out parts (top {len(top)})")
    return _save(fig, out / "permutation_importance.png")
