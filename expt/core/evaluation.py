"""Out-of-fold predictions and permutation importance, from fitted fold models and their held-out parts.

What the evaluation plots are drawn from (:mod:`expt.core.figures`). A train run hands its fold
models to :mod:`expt.core.offload`, which runs this beside the run or in it; a sweep's sink does
the same for each outer fold in its own process.

Permutation importance asks the model for one prediction per feature and repeat; one call
each costs a random forest ~10 ms of overhead, 90 calls per fold for 30 features. Here the
permuted copies of the held-out part are stacked and predicted in one call per response
method (a forest predicts 10,000 rows in ~35 ms), and the scorer reads each block's share
through a stand-in model that replays it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import ArrayLike
    from sklearn.base import BaseEstimator
    from sklearn.utils import Tags

    from expt.models.hooks import Scorer

    Plan = list[tuple[str | None, np.ndarray | None]]  # per block: the column permuted and its order, or none

IMPORTANCE_REPEATS = 3
IMPORTANCE_MAX_ROWS = 500  # held-out rows per fold that importance is measured on (a seeded subsample)
BATCH_CELLS = 2_000_000  # rows x columns predicted per call


@dataclass
class FoldModel:
    """One fold's fitted model and the positions of its held-out rows."""

    fold: int
    model: BaseEstimator
    test_index: np.ndarray
    outputs: Mapping[str, np.ndarray] | None = None  # what the model predicted there when the fold was scored


@dataclass
class Evaluation:
    predictions: pd.DataFrame  # row, fold, y_true, y_pred[, proba_<class>... | score]
    importances: dict[str, list[float]] = field(default_factory=dict)  # feature -> drops (folds x repeats)
    classes: list[Any] = field(default_factory=list)


def predictions_table(folds: Sequence[FoldModel], X: pd.DataFrame, y: ArrayLike) -> tuple[pd.DataFrame, list[Any]]:
    """Every fold's predictions on its held-out rows, keyed by row position and fold."""
    import numpy as np
    import pandas as pd

    parts: list[pd.DataFrame] = []
    classes: list[Any] = []
    for f in folds:
        X_test = X.iloc[f.test_index]
        known = dict(f.outputs or {})

        def output(method: str, _known: dict[str, np.ndarray] = known, _f: FoldModel = f,
                   _X: pd.DataFrame = X_test) -> ArrayLike:
            return _known[method] if method in _known else getattr(_f.model, method)(_X)

        part = {"row": np.asarray(f.test_index, dtype=np.int64), "fold": np.full(len(f.test_index), f.fold),
                "y_true": np.asarray(y)[f.test_index], "y_pred": np.asarray(output("predict"))}
        classes = list(getattr(f.model, "classes_", classes))
        if hasattr(f.model, "predict_proba"):
            proba = np.asarray(output("predict_proba"), dtype=float)
            part.update({f"proba_{c}": proba[:, i] for i, c in enumerate(f.model.classes_)})
        elif len(classes) == 2 and hasattr(f.model, "decision_function"):
            part["score"] = np.asarray(output("decision_function"), dtype=float)
        parts.append(pd.DataFrame(part))
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return table, classes


class _Replayed:
    """A fitted model's stand-in that answers with outputs computed beforehand (a scorer sees no difference)."""

    def __init__(self, model: BaseEstimator, outputs: Mapping[str, np.ndarray], tags: Tags) -> None:
        self._outputs, self._tags = outputs, tags  # tags once per fold: a pipeline's cost ~1 ms a call
        if hasattr(model, "classes_"):
            self.classes_ = model.classes_

    def __sklearn_tags__(self) -> Tags:
        return self._tags

    def __getattr__(self, name: str) -> Callable[[object], np.ndarray]:
        outputs = self.__dict__.get("_outputs", {})
        if name not in outputs:
            raise AttributeError(name)

        def replay(X: object) -> np.ndarray:
            return outputs[name]

        replay.__name__ = name  # scikit-learn reads a response method's kind from its name
        return replay


def _fast_metric(scorer: Scorer) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """For the common label and regression metrics, a function of (y, predictions per block) that scores every
    block at once: scikit-learn's checks cost ~2 ms a call, 455 calls per run on 30 features."""
    import numpy as np
    from sklearn import metrics

    def balanced(y: np.ndarray, P: np.ndarray) -> np.ndarray:
        return np.mean([((P == c) & (y == c)).sum(1) / (y == c).sum() for c in np.unique(y)], axis=0)

    known = {metrics.accuracy_score: lambda y, P: (P == y).mean(1), metrics.balanced_accuracy_score: balanced,
             metrics.r2_score: lambda y, P: 1 - ((y - P) ** 2).sum(1) / ((y - y.mean()) ** 2).sum(),
             metrics.mean_squared_error: lambda y, P: ((y - P) ** 2).mean(1),
             metrics.root_mean_squared_error: lambda y, P: np.sqrt(((y - P) ** 2).mean(1)),
             metrics.mean_absolute_error: lambda y, P: np.abs(y - P).mean(1)}
    func = getattr(scorer, "_score_func", None)
    if func not in known or getattr(scorer, "_kwargs", None) or response_methods_of(scorer) != ("predict",):
        return None
    sign = getattr(scorer, "_sign", 1)
    return lambda y, P: sign * known[func](y, P)


def response_methods_of(scorer: Scorer) -> tuple[str, ...]:
    from expt.core.metrics import response_methods

    return response_methods(scorer)


def _block_scores(scorer: Scorer, model: BaseEstimator, outputs: Mapping[str, np.ndarray], X: pd.DataFrame,
                  y: np.ndarray, blocks: int) -> list[float]:
    """The scorer's value on each block of the stacked outputs."""
    import numpy as np
    import sklearn

    n = len(y)
    fast = _fast_metric(scorer) if "predict" in outputs else None
    if fast is not None:
        if y.dtype.kind in "iufb" and len(y):
            y = y.astype(float)
        P = np.asarray(outputs["predict"]).reshape(blocks, n)
        return [float(v) for v in fast(y, P.astype(float) if y.dtype.kind == "f" else P)]
    tags = model.__sklearn_tags__()
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        return [float(scorer(_Replayed(model, {m: out[b * n:(b + 1) * n] for m, out in outputs.items()}, tags), X, y))
                for b in range(blocks)]


def _methods(scorer: Scorer, model: BaseEstimator) -> list[str]:
    """The response methods a scorer will ask the model for (a user's scorer: whatever the model has)."""
    from expt.core.metrics import response_methods

    wanted = response_methods(scorer)
    if wanted:
        first = next((m for m in wanted if hasattr(model, m)), None)
        return [first] if first else []
    return [m for m in ("predict", "predict_proba", "decision_function") if hasattr(model, m)]


def permutation_drops(fold: FoldModel, X: pd.DataFrame, y: ArrayLike, scorer: Scorer, *, seed: int = 0,
                      repeats: int = IMPORTANCE_REPEATS, max_rows: int = IMPORTANCE_MAX_ROWS) -> dict[str, list[float]]:
    """How much the score drops when each column of the held-out part is shuffled (``repeats`` shuffles each)."""
    import numpy as np

    rng = np.random.default_rng(seed + fold.fold)
    index = np.asarray(fold.test_index)
    if len(index) > max_rows:
        index = np.sort(rng.choice(index, max_rows, replace=False))
    X_test, y_test = X.iloc[index].reset_index(drop=True), np.asarray(y)[index]
    methods = _methods(scorer, fold.model)
    if not methods:
        return {}
    columns = list(X_test.columns)
    shuffles = [(c, rng.permutation(len(X_test))) for c in columns for _ in range(repeats)]
    plan: Plan = [(None, None), *shuffles]
    outputs = _predict_blocks(fold.model, X_test, plan, methods)
    scores = _block_scores(scorer, fold.model, outputs, X_test, y_test, len(plan))
    drops: dict[str, list[float]] = {c: [] for c in columns}
    for (column, _order), score in zip(shuffles, scores[1:], strict=True):
        drops[column].append(scores[0] - score)
    return drops


def _predict_blocks(model: BaseEstimator, X: pd.DataFrame, plan: Plan, methods: list[str]) -> dict[str, np.ndarray]:
    """Each response method over the blocks of ``plan`` (the held-out part with one column permuted, or none),
    stacked column by column (pandas' concat of the blocks cost more than the predictions) and predicted in as
    few calls as the batch size allows."""
    import numpy as np
    import pandas as pd

    n = len(X)
    per_call = max(1, BATCH_CELLS // max(1, X.size))
    values = {c: X[c].to_numpy() for c in X.columns}
    outputs: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    for start in range(0, len(plan), per_call):
        chunk = plan[start:start + per_call]
        stacked = {c: np.tile(v, len(chunk)) for c, v in values.items()}
        for b, (column, order) in enumerate(chunk):
            if column is not None:
                stacked[column][b * n:(b + 1) * n] = values[column][order]
        batch = pd.DataFrame(stacked).astype(X.dtypes.to_dict())  # pandas 3 copies lazily (its copy= is deprecated)
        for method in methods:
            outputs[method].append(np.asarray(getattr(model, method)(batch)))
    return {m: np.concatenate(parts) for m, parts in outputs.items()}


def evaluate(folds: Sequence[FoldModel], X: pd.DataFrame, y: ArrayLike, scorer: Scorer, *, seed: int = 0,
             importance: bool = True) -> Evaluation:
    """Out-of-fold predictions, and permutation importance pooled over the folds' held-out parts."""
    table, classes = predictions_table(folds, X, y)
    pooled: dict[str, list[float]] = {}
    if importance:
        for fold in folds:
            for column, drops in permutation_drops(fold, X, y, scorer, seed=seed).items():
                pooled.setdefault(column, []).extend(drops)
    return Evaluation(table, pooled, classes)


def write_predictions(table: pd.DataFrame, path: str) -> None:
    table.to_parquet(path, index=False)


def evaluate_and_draw(payload: Mapping[str, Any], out: str) -> dict[str, Any]:
    """Everything a run logs from its fold models: ``predictions.parquet`` and ``plots/*.png`` under ``out``."""
    folds = [FoldModel(*fold) for fold in payload["folds"]]
    result = evaluate(folds, payload["X"], payload["y"], payload["scorer"], seed=payload["seed"])
    return write_all(result, payload["task"], payload["metric"], out)


def evaluate_holdout(payload: Mapping[str, Any], out: str) -> tuple[Evaluation, dict[str, Any]]:
    """One fitted model on one held-out part (a sweep's outer fold): its predictions keyed by the rows' positions
    in the dataset, every metric, and the plots, under ``out``."""
    import numpy as np

    from expt.core.metrics import multi_scorer, scores_of

    X, y, rows = payload["X"], np.asarray(payload["y"]), np.asarray(payload["rows"])
    fold = FoldModel(payload["fold"], payload["model"], np.arange(len(rows)))
    result = evaluate([fold], X.reset_index(drop=True), y, payload["scorer"], seed=payload["seed"])
    result.predictions["row"] = rows
    scores, _errors = scores_of(multi_scorer(payload["scorers"])(payload["model"], X, y))
    files = write_all(result, payload["task"], payload["metric"], out)
    return result, {**files, "metrics": scores}


def pooled(evaluations: Sequence[Evaluation]) -> Evaluation:
    """Several folds' evaluations as one: predictions stacked, importance drops pooled."""
    import pandas as pd

    merged: dict[str, list[float]] = {}
    for e in evaluations:
        for column, drops in e.importances.items():
            merged.setdefault(column, []).extend(drops)
    table = pd.concat([e.predictions for e in evaluations], ignore_index=True)
    return Evaluation(table.sort_values(["fold", "row"], ignore_index=True), merged,
                      next((e.classes for e in evaluations if e.classes), []))


def write_all(result: Evaluation, task: str, metric: str, out: str) -> dict[str, Any]:
    """``predictions.parquet`` and ``plots/*.png`` of an evaluation, under ``out``."""
    from pathlib import Path

    from expt.core.figures import draw

    Path(out, "plots").mkdir(parents=True, exist_ok=True)
    write_predictions(result.predictions, str(Path(out, "predictions.parquet")))
    plots = draw(result.predictions, result.classes, result.importances, task, metric, Path(out, "plots"))
    return {"predictions": str(Path(out, "predictions.parquet")), "plots": [str(p) for p in plots]}
