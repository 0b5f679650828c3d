"""Cross-validation as plain functions, shaped like scikit-learn's ``cross_validate``.

Preprocessing is a Pipeline step, so it is fitted inside each fold on that fold's
training part only. The estimator is cloned per fold. A fold whose fit fails
becomes a warning and a NaN score; only when every fold fails is it an error.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from expt.core.errors import ConfigError, DataError, RunFailedError


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
    model: Any = None  # the fitted fold model, only with return_models=True
    history: list[dict[str, float]] | None = None  # per-epoch losses and scores of a torch model


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


def make_splitter(task: str, n_rows: int, *, folds: int, repeats: int = 1, shuffle: bool = True,
                  stratify: bool | str = "auto", seed: int = 0, key: str = "learner.cv.folds") -> Any:
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


def check_class_counts(y: Any, folds: int, *, stratified: bool = True) -> None:
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


def build_preprocessor(numeric: list[str], categorical: list[str], options: Mapping[str, Any]) -> Any:
    """Impute and scale numeric columns, impute and encode categorical ones."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, RobustScaler, StandardScaler

    scalers = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}
    num_steps = []
    if options["impute"] != "none":
        num_steps.append(SimpleImputer(strategy=options["impute"]))
    if options["scale"] != "none":
        num_steps.append(scalers[options["scale"]]())
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


def build_pipeline(estimator: Any, numeric: list[str], categorical: list[str], options: Mapping[str, Any]) -> Any:
    from sklearn.pipeline import Pipeline

    return Pipeline([("preprocess", build_preprocessor(numeric, categorical, options)), ("model", estimator)])


def get_scorer(name: str, task: str) -> Any:
    from sklearn.metrics import get_scorer, get_scorer_names

    try:
        scorer = get_scorer(name)
    except ValueError:
        import difflib

        close = difflib.get_close_matches(name, get_scorer_names(), 3)
        hint = f"did you mean {', '.join(close)}?" if close else "see sklearn.metrics.get_scorer_names()"
        raise ConfigError(f"unknown metric {name!r} for learner.metric.{task}; {hint}") from None
    # Checked now: inside the folds a metric of the other task fails every fold, after the runs exist.
    module = getattr(getattr(scorer, "_score_func", None), "__module__", "") or ""
    kind = "regression" if module.endswith("._regression") else "classification"
    if module.startswith("sklearn.metrics") and kind != task:
        default = "accuracy" if task == "classification" else "r2"
        raise ConfigError(f"{name!r} is a {kind} metric but the data is a {task} task; "
                          f"set learner.metric.{task} to a {task} metric (e.g. {default})")
    return scorer


def cross_validate(pipeline: Any, X: Any, y: Any, *, cv: Any, scoring: Any, metric: str,
                   on_fold: Callable[[FoldResult], None] | None = None, return_models: bool = False) -> CVResult:
    """Fit a clone per fold and score it; ``on_fold`` sees each fold as it finishes."""
    from sklearn.base import clone

    result = CVResult(metric=metric)
    for index, (train, test) in enumerate(cv.split(X, y)):
        fold = _run_fold(clone(pipeline), X, y, train, test, scoring, index, return_models)
        result.folds.append(fold)
        if on_fold is not None:
            on_fold(fold)
    if result.n_failed == len(result.folds):
        raise RunFailedError(f"every fold failed; the first error was: {result.folds[0].error}")
    if result.n_failed:
        warnings.warn(f"{result.n_failed} of {len(result.folds)} folds failed and score NaN; "
                      f"first error: {next(f.error for f in result.folds if f.error)}", stacklevel=2)
    return result


def _run_fold(model: Any, X: Any, y: Any, train: Any, test: Any, scoring: Any, index: int,
              keep: bool = False) -> FoldResult:
    from expt.models.hooks import epoch_hooks, history_of

    X_train, X_test = X.iloc[train], X.iloc[test]
    started = time.time()
    start = time.perf_counter()
    fold = FoldResult(index, float("nan"), 0.0, 0.0, len(train), len(test), started)
    try:
        with epoch_hooks(scorer=scoring):  # a torch model scores its validation split with the run's metric
            model.fit(X_train, y[train])
        fold.history = history_of(model)
        fold.fit_time = time.perf_counter() - start
        start = time.perf_counter()
        fold.score = float(scoring(model, X_test, y[test]))
        fold.score_time = time.perf_counter() - start
        fold.train_score = float(scoring(model, X_train, y[train]))
    except Exception as exc:  # a failing fold is a result for the user, not a crash
        fold.score, fold.error = float("nan"), f"{type(exc).__name__}: {exc}".splitlines()[0]
        fold.fit_time = fold.fit_time or time.perf_counter() - start
    if keep:
        fold.model = model
    return fold
