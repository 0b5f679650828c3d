"""Cross-validation as plain functions, shaped like scikit-learn's ``cross_validate``.

Preprocessing is a Pipeline step, so it is fitted inside each fold on that fold's
training part only. The estimator is cloned per fold. A fold whose fit fails
becomes a warning and a NaN score; only when every fold fails is it an error.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from expt.core.errors import ConfigError, DataError, RunFailedError
from expt.core.metrics import get_scorer  # noqa: F401 - its old home; callers may import it from here

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import ArrayLike
    from sklearn.base import BaseEstimator
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.utils import Tags

    from expt.core.metrics import MultiScorer
    from expt.models.hooks import Scorer


class Splitter(Protocol):
    """What splits rows into folds: scikit-learn's KFold and its kin, :class:`expt.core.folds.GroupedSplit` and
    :class:`expt.core.folds.TimeSplit`."""

    def get_n_splits(self, X: object = None, y: object = None, groups: object = None) -> int: ...

    def split(self, X: pd.DataFrame | np.ndarray, y: ArrayLike | None = None,
              groups: ArrayLike | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...


@dataclass
class FoldResult:
    index: int
    score: float
    fit_time: float
    score_time: float
    n_train: int
    n_test: int
    started: float = 0.0
    train_score: float | None = None
    error: str | None = None
    model: Pipeline | None = None  # the fitted fold model, only with return_models=True
    history: list[dict[str, float]] | None = None  # per-epoch losses and scores of a torch model
    scores: dict[str, float] = field(default_factory=dict)  # every metric on the test part (the selecting one too)
    test_index: np.ndarray | None = None  # the test part's row positions (out-of-fold predictions are keyed by them)
    outputs: dict[str, Any] | None = None  # the model's predictions on the test part, with return_models=True


@dataclass
class CVResult:
    metric: str
    folds: list[FoldResult] = field(default_factory=list)

    @property
    def scores(self) -> list[float]:
        return [f.score for f in self.folds]

    @property
    def mean(self) -> float:
        import numpy as np

        return float(np.nanmean(self.scores))

    @property
    def std(self) -> float:
        import numpy as np

        return float(np.nanstd(self.scores))

    @property
    def n_failed(self) -> int:
        return sum(f.error is not None for f in self.folds)

    @property
    def metrics(self) -> list[str]:
        """Every metric the folds were scored on, the selecting one first."""
        names = [self.metric]
        for fold in self.folds:
            names += [k for k in fold.scores if k not in names]
        return names

    def fold_scores(self, name: str) -> list[float]:
        return [f.score if name == self.metric else f.scores.get(name, float("nan")) for f in self.folds]

    def summary(self) -> dict[str, float]:
        """``<metric>_mean`` and ``_std`` of every metric over the folds (a failed fold's NaN left out)."""
        import warnings

        import numpy as np

        out = {}
        for name in self.metrics:
            values = np.asarray(self.fold_scores(name), dtype=float)
            with warnings.catch_warnings():  # a metric NaN in every fold: its mean is NaN, said once by the fold
                warnings.simplefilter("ignore", RuntimeWarning)
                out[f"{name}_mean"], out[f"{name}_std"] = float(np.nanmean(values)), float(np.nanstd(values))
        return out


def make_splitter(task: str, n_rows: int, *, folds: int, repeats: int = 1, shuffle: bool = True,
                  stratify: bool | str = "auto", seed: int = 0, key: str = "learner.cv.folds") -> Splitter:
    """The CV splitter a learner config asks for, seeded when it shuffles (``key`` names the folds in errors)."""
    from sklearn.model_selection import KFold, RepeatedKFold, RepeatedStratifiedKFold, StratifiedKFold

    if folds > n_rows:
        raise DataError(f"the dataset has {n_rows} rows, fewer than {key}={folds}; lower {key}")
    stratified = task == "classification" if stratify == "auto" else bool(stratify)
    if stratified and task != "classification":
        raise ConfigError("learner.cv.stratify=true needs a classification target; set learner.cv.stratify=auto")
    if repeats > 1:
        if not shuffle:
            raise ConfigError("learner.cv.repeats > 1 needs learner.cv.shuffle=true (unshuffled repeats are identical)")
        cls = RepeatedStratifiedKFold if stratified else RepeatedKFold
        return cls(n_splits=folds, n_repeats=repeats, random_state=seed)
    cls = StratifiedKFold if stratified else KFold
    return cls(n_splits=folds, shuffle=shuffle, random_state=seed if shuffle else None)


def check_class_counts(y: ArrayLike, folds: int, *, stratified: bool = True) -> None:
    """Stratified k-fold needs every class in every fold's training part."""
    import numpy as np

    _, counts = np.unique(y, return_counts=True)
    if counts.min() < 2:
        raise DataError(
            f"a class of the target has only {counts.min()} row; every class needs at least 2 rows "
            "(drop or merge rare classes)"
        )
    if stratified and counts.max() < folds:  # StratifiedKFold refuses it at the first split, after runs exist
        raise DataError(f"every class of the target has fewer rows than learner.cv.folds={folds} (the largest has "
                        f"{counts.max()}); lower learner.cv.folds to {counts.max()} or add rows")
    if counts.min() < folds:
        warnings.warn(f"the rarest class has {counts.min()} rows, fewer than {folds} folds", stacklevel=2)


def _numeric_steps(options: Mapping[str, Any]) -> list[BaseEstimator]:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    scalers = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
    steps: list[BaseEstimator] = []
    if options["impute"] != "none":
        steps.append(SimpleImputer(strategy=options["impute"]))
    if options["scale"] != "none":
        steps.append(scalers[options["scale"]]())
    return steps


def build_preprocessor(numeric: list[str], categorical: list[str], options: Mapping[str, Any]) -> ColumnTransformer:
    """Impute and scale numeric columns, impute and encode categorical ones."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    num_steps = _numeric_steps(options)
    if options["one_hot"]:
        encoder = OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=options["max_categories"],
                                sparse_output=False)
    else:
        encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1)
    transformers = []
    if numeric:
        transformers.append(("numeric", make_pipeline(*num_steps) if num_steps else "passthrough", numeric))
    if categorical:
        cat = make_pipeline(SimpleImputer(strategy="most_frequent"), encoder)
        transformers.append(("categorical", cat, categorical))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)


def build_pipeline(estimator: BaseEstimator, numeric: list[str], categorical: list[str],
                   options: Mapping[str, Any], *, arrays: bool = False) -> Pipeline:
    """A booster asked for native categoricals (``categorical=native``) gets them as ordinal codes, not one-hot
    columns, and is told where they are (after the numeric ones, as the ColumnTransformer puts them).

    ``arrays``: a pipeline for :func:`feature_matrix`'s array instead of the frame (every feature numeric): the
    numeric steps alone, without the ColumnTransformer that selects and stacks columns around them."""
    from sklearn.pipeline import Pipeline, make_pipeline

    if getattr(estimator, "categorical", None) == "native" and type(estimator).__module__ == "expt.models.boosting":
        options = {**options, "one_hot": False}
        estimator.set_params(categorical_columns=list(range(len(numeric), len(numeric) + len(categorical))))
    if arrays:
        steps = _numeric_steps(options)
        return Pipeline([("preprocess", make_pipeline(*steps) if steps else "passthrough"), ("model", estimator)])
    return Pipeline([("preprocess", build_preprocessor(numeric, categorical, options)), ("model", estimator)])


def feature_matrix(X: pd.DataFrame, numeric: list[str], categorical: list[str]) -> np.ndarray | None:
    """Every feature numeric (one float64 block, as :mod:`expt.core.data` loads it): the features as one float
    array, for the folds that only fit and score (a sweep's inner folds); None otherwise.

    Fitting :func:`build_pipeline`'s ``arrays`` pipeline on :func:`rows_of` this array gives the same numbers, bit
    for bit, as the frame's pipeline on the same rows (tests/test_fast_path.py checks every preprocessing option):
    the ColumnTransformer hands its numeric steps the same float64 values in the same memory order. Column order
    matters to a scaler's sums, so the array is Fortran-ordered like the values of a frame's row selection. What it
    saves on a small table is the point: selecting, validating and stacking a frame's columns took ~3x the fit of a
    logistic regression on breast_cancer. Models that are kept (refits, the logged model) still fit on the frame,
    so they know their feature names.
    """
    import numpy as np

    if categorical or list(X.columns) != list(numeric) or any(d != np.float64 for d in X.dtypes):
        return None
    return np.asfortranarray(X.to_numpy())


def rows_of(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows of :func:`feature_matrix`'s array, in the memory order the frame's row selection has."""
    import numpy as np

    return np.asfortranarray(matrix[rows])


def cross_validate(pipeline: Pipeline, X: pd.DataFrame, y: np.ndarray, *, cv: Splitter, scoring: Scorer, metric: str,
                   on_fold: Callable[[FoldResult], None] | None = None, return_models: bool = False,
                   scorers: Mapping[str, Scorer] | None = None) -> CVResult:
    """Fit a clone per fold and score it; ``on_fold`` sees each fold as it finishes.

    ``scorers``: every metric to report (name -> scorer, ``metric`` among them), scored with one
    multimetric scorer so that the model predicts once per response method; a metric that fails in
    a fold is NaN there, and only the selecting metric failing fails the fold.
    """
    from sklearn.base import clone

    from expt.core.metrics import multi_scorer

    many = multi_scorer({metric: scoring, **(scorers or {})}) if scorers and set(scorers) - {metric} else None
    result = CVResult(metric=metric)
    for index, (train, test) in enumerate(cv.split(X, y)):
        fold = _run_fold(clone(pipeline), X, y, train, test, scoring, index, return_models, many, metric)
        result.folds.append(fold)
        if on_fold is not None:
            on_fold(fold)
    if result.n_failed == len(result.folds):
        raise RunFailedError(f"every fold failed; the first error was: {result.folds[0].error}")
    if result.n_failed:
        warnings.warn(f"{result.n_failed} of {len(result.folds)} folds failed and score NaN; "
                      f"first error: {next(f.error for f in result.folds if f.error)}", stacklevel=2)
    return result


def _run_fold(model: Pipeline, X: pd.DataFrame, y: np.ndarray, train: np.ndarray, test: np.ndarray, scoring: Scorer,
              index: int, keep: bool = False, many: MultiScorer | None = None, metric: str = "") -> FoldResult:
    from expt.models.hooks import epoch_hooks, history_of

    X_train, X_test = X.iloc[train], X.iloc[test]
    started = time.time()
    start = time.perf_counter()
    fold = FoldResult(index, float("nan"), 0.0, 0.0, len(train), len(test), started, test_index=test)
    try:
        with epoch_hooks(scorer=scoring):  # a torch model scores its validation split with the run's metric
            model.fit(X_train, y[train])
        fold.history = history_of(model)
        fold.fit_time = time.perf_counter() - start
        start = time.perf_counter()
        scored = Recording(model, X_test) if keep else model  # what it predicts is kept for the evaluation plots
        if many is None:
            fold.score = float(scoring(scored, X_test, y[test]))
            fold.scores = {metric: fold.score} if metric else {}
        else:
            fold.score = _score_all(fold, many(scored, X_test, y[test]), metric)
        fold.outputs = scored.outputs if keep else None
        fold.score_time = time.perf_counter() - start
        fold.train_score = float(scoring(model, X_train, y[train]))
    except Exception as exc:  # noqa: BLE001 - a failing fold is a result for the user, not a crash
        text = str(exc) if isinstance(exc, _MetricFailed) else f"{type(exc).__name__}: {exc}"
        fold.score, fold.error = float("nan"), text.splitlines()[0] if text else type(exc).__name__
        fold.fit_time = fold.fit_time or time.perf_counter() - start
    if keep:
        fold.model = model
    return fold


class Recording:
    """A fitted model as the scorers see it, keeping what it predicts for the held-out part ``X``.

    The out-of-fold predictions are the ones the fold was scored on, not a second pass over the same rows
    (a random forest's ``predict`` and ``predict_proba`` on a fold cost ~20 ms each). Calls on other data go
    straight through.
    """

    RESPONSES = ("predict", "predict_proba", "decision_function")

    def __init__(self, model: Pipeline, X: pd.DataFrame) -> None:
        self._model, self._X = model, X
        self.outputs: dict[str, Any] = {}

    def __sklearn_tags__(self) -> Tags:
        return self._model.__sklearn_tags__()

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - the model's attribute, whatever it is
        attr = getattr(self.__dict__["_model"], name)  # AttributeError as the model gives it (available_if)
        if name not in self.RESPONSES:
            return attr

        def record(X: ArrayLike, *args: object, **kwargs: object) -> Any:  # noqa: ANN401 - the method's answer
            if X is not self._X or args or kwargs:
                return attr(X, *args, **kwargs)
            if name not in self.outputs:
                self.outputs[name] = attr(X)
            return self.outputs[name]

        record.__name__ = name  # scikit-learn reads a response method's kind from its name
        return record


class _MetricFailed(Exception):
    """The selecting metric raised inside the multimetric scorer; its message is already "Type: text"."""


def _score_all(fold: FoldResult, values: Mapping[str, float | str], metric: str) -> float:
    """Every metric of a fold; the selecting one failing fails the fold, another one failing is a NaN and a warning."""
    from expt.core.metrics import scores_of

    fold.scores, errors = scores_of(values)
    if metric in errors:
        raise _MetricFailed(errors[metric])
    for name, error in errors.items():
        warnings.warn(f"metric {name} failed in fold {fold.index} and is NaN there: {error}", stacklevel=3)
    return fold.scores[metric]
