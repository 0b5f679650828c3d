"""LightGBM, XGBoost and CatBoost boosters as scikit-learn estimators that stop early on their own training part.

The libraries' scikit-learn interfaces stop early only on an ``eval_set`` the caller passes to
``fit``; a Pipeline inside cross-validation cannot pass one that went through the fold's own
preprocessing. :class:`BoostedClassifier` and :class:`BoostedRegressor` hold a booster (the
library's estimator, built through the one door) and, in ``fit``, carve ``validation_fraction``
of the rows they are given (a fold's training part: the fold's test part never reaches ``fit``)
as the validation split for the library's own early stopping.

In a sweep's inner folds, every ``report_every`` rounds they score the sweep's metric on that
split with the model as it stands and hand it to the epoch hooks (:mod:`expt.models.hooks`),
which report it to Optuna at a step unique across the inner folds and may prune. optuna-integration's
callbacks are not used: they report step = round, which repeats in every inner fold (Optuna keeps
the first value of a step), and the booster's own metric, not the sweep's.

``categorical="native"``: the preprocessing hands categorical columns over as ordinal codes
(``build_pipeline`` sees to it and says where they are), and LightGBM or CatBoost split on them
as categories instead of on one-hot columns.

Library imports happen in ``fit``: this module is imported by the CV code for every model.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from expt.models import hooks

if TYPE_CHECKING:
    import lightgbm
    import pandas as pd
    import xgboost
    from numpy.typing import ArrayLike
    from sklearn.utils import Tags

# A booster (LightGBM, XGBoost or CatBoost estimator) is typed Any, each time with its `noqa: ANN401`: the code
# branches on library_of(booster), not on its class, and CatBoost ships no types.

__all__ = ["BoostedClassifier", "BoostedRegressor", "library_of"]

LIBRARIES = ("lightgbm", "xgboost", "catboost")
NATIVE = ("lightgbm", "catboost")
# The sweep's metric as CatBoost computes it on the validation split each round (its callbacks see metric values,
# not the model): name -> (CatBoost metric, sign that makes it the scorer's "higher is better" value).
CATBOOST_METRICS = {"accuracy": ("Accuracy", 1), "balanced_accuracy": ("BalancedAccuracy", 1),
                    "roc_auc": ("AUC", 1), "f1": ("F1", 1), "neg_log_loss": ("Logloss", -1), "r2": ("R2", 1),
                    "neg_root_mean_squared_error": ("RMSE", -1), "neg_mean_absolute_error": ("MAE", -1)}


def library_of(booster: Any) -> str:  # noqa: ANN401 - a booster (see above)
    """lightgbm | xgboost | catboost, from where the booster's class is defined."""
    root = type(booster).__module__.split(".")[0]
    if root not in LIBRARIES:
        raise ValueError(f"booster must be a LightGBM, XGBoost or CatBoost estimator, got {type(booster).__name__}")
    return root


class _Boosted(BaseEstimator):
    _parameter_constraints: dict[str, list[Any]] = {
        "booster": [object],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "early_stopping_rounds": [Interval(Integral, 1, None, closed="left"), None],
        "categorical": [StrOptions({"onehot", "native"})],
        "report_every": [Interval(Integral, 1, None, closed="left")],
        "categorical_columns": [list, None],
    }

    def __init__(self, booster: Any = None, *, validation_fraction: float = 0.1,  # noqa: ANN401 - a booster
                 early_stopping_rounds: int | None = 50, categorical: str = "onehot", report_every: int = 10,
                 categorical_columns: list[int] | None = None) -> None:
        self.booster = booster
        self.validation_fraction = validation_fraction
        self.early_stopping_rounds = early_stopping_rounds
        self.categorical = categorical
        self.report_every = report_every
        self.categorical_columns = categorical_columns

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # every library routes missing values itself
        return tags

    # -- fit ---------------------------------------------------------------------------------------------------
    def fit(self, X: ArrayLike, y: ArrayLike) -> _Boosted:
        library = library_of(self.booster)
        self._check_params(library)
        X = np.asarray(X, dtype=np.float64)
        y = self._encode(np.asarray(y))
        self.n_features_in_ = X.shape[1]
        booster = _copy(self.booster)
        current = hooks.current()
        split = self._split(X, y)
        fit_params: dict[str, Any] = {}
        cats = list(self.categorical_columns or []) if self.categorical == "native" else []
        if cats and library == "lightgbm":
            fit_params["categorical_feature"] = cats
        if cats and library == "catboost":
            fit_params["cat_features"] = cats
        reporter = None
        if split is not None:
            X, y, X_split, y_val = split
            X_val = self._input(X_split)
            reporter = _Reporter(self, current, X_val, y_val, library)
            fit_params.update(self._early_stopping(booster, library, X_val, y_val, reporter))
        booster.fit(self._input(X), y, **fit_params)
        if library == "xgboost":
            booster.set_params(callbacks=None)  # the reporter holds the trial: not part of the fitted model
        if reporter is not None and reporter.pruned is not None:
            self.n_rounds_ = reporter.last_round + 1  # what the pruned fit cost (benchmarks count it)
            raise reporter.pruned
        self.booster_ = booster
        self.n_rounds_ = _rounds_trained(booster, library)
        self.best_iteration_ = _best_iteration(booster, library)
        return self

    def _check_params(self, library: str) -> None:
        if self.categorical not in ("onehot", "native"):
            raise ValueError(f"categorical must be onehot or native, got {self.categorical!r}")
        if self.categorical == "native" and library not in NATIVE:
            raise ValueError(f"categorical=native is for LightGBM and CatBoost; {library} takes one-hot columns "
                             "here (set model.estimator.categorical=onehot)")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.early_stopping_rounds is not None and not self.validation_fraction:
            raise ValueError("early stopping needs a validation split: set validation_fraction above 0, or "
                             "early_stopping_rounds=null")

    def _encode(self, y: np.ndarray) -> np.ndarray:
        return y

    def _split(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The validation split, carved from the rows ``fit`` was given (stratified for classes where it can be)."""
        if self.early_stopping_rounds is None:
            return None
        from sklearn.model_selection import train_test_split

        seed = _seed(self.booster)
        n_val = max(1, int(round(self.validation_fraction * len(y))))
        stratify = y if isinstance(self, ClassifierMixin) else None
        if stratify is not None and (np.bincount(y).min() < 2 or n_val < len(self.classes_)):
            stratify = None
        X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=n_val, random_state=seed, stratify=stratify)
        return X_fit, y_fit, X_val, y_val

    def _early_stopping(self, booster: Any, library: str,  # noqa: ANN401 - a booster
                        X_val: np.ndarray | pd.DataFrame, y_val: np.ndarray,
                        reporter: _Reporter | None) -> dict[str, Any]:
        assert self.early_stopping_rounds is not None  # a validation split is carved only with early stopping
        rounds = int(self.early_stopping_rounds)
        if library == "lightgbm":
            import lightgbm

            callbacks: list[Callable[[lightgbm.callback.CallbackEnv], None]] = [
                lightgbm.early_stopping(rounds, first_metric_only=True, verbose=False)]
            if reporter is not None and reporter.active:
                callbacks.append(reporter.lightgbm)
            import inspect

            if "eval_X" in inspect.signature(booster.fit).parameters:  # LightGBM 4.7 deprecates eval_set
                return {"eval_X": (X_val,), "eval_y": (y_val,), "callbacks": callbacks}
            return {"eval_set": [(X_val, y_val)], "callbacks": callbacks}
        if library == "xgboost":
            xgb_callbacks = [reporter.xgboost_callback()] if reporter is not None and reporter.active else None
            booster.set_params(early_stopping_rounds=rounds, callbacks=xgb_callbacks)
            return {"eval_set": [(X_val, y_val)], "verbose": False}
        params: dict[str, Any] = {"eval_set": (X_val, y_val), "early_stopping_rounds": rounds, "use_best_model": True}
        if reporter is not None and reporter.active:
            metric = reporter.catboost_metric()
            if metric is not None:
                booster.set_params(custom_metric=[metric])
            params["callbacks"] = [reporter]
        return params

    def _input(self, X: np.ndarray) -> np.ndarray | pd.DataFrame:
        """CatBoost takes categorical columns as whole numbers (ordinal codes; -1 for unknown or missing)."""
        cats = self.categorical_columns if self.categorical == "native" else None
        if not cats or library_of(self.booster) != "catboost":
            return X
        import pandas as pd

        frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
        for i in cats:
            frame[f"x{i}"] = np.nan_to_num(frame[f"x{i}"].to_numpy(), nan=-1).astype(np.int64)
        return frame

    # -- predict -----------------------------------------------------------------------------------------------
    def _raw(self, X: ArrayLike) -> np.ndarray | pd.DataFrame:
        check_is_fitted(self, "booster_")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[-1]} features, but {type(self).__name__} was fitted with "
                             f"{self.n_features_in_}")
        return self._input(X)

    @property
    def n_tree_nodes_(self) -> int:
        """Tree nodes summed over the trees the fitted booster holds (what n_parameters counts, as for forests)."""
        check_is_fitted(self, "booster_")
        return _tree_nodes(self.booster_, library_of(self.booster_))


class BoostedClassifier(ClassifierMixin, _Boosted):
    """A LightGBM, XGBoost or CatBoost classifier with early stopping on its own training part."""

    def _encode(self, y: np.ndarray) -> np.ndarray:
        # Codes 0..K-1 for every library (XGBoost refuses other labels); classes_ maps them back.
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 classes in y, got 1 ({self.classes_[0]!r})")
        return codes.astype(np.int64)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        proba = np.asarray(self.booster_.predict_proba(self._raw(X)), dtype=np.float64)
        return proba.reshape(len(proba), -1)

    def predict(self, X: ArrayLike) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class BoostedRegressor(RegressorMixin, _Boosted):
    """A LightGBM, XGBoost or CatBoost regressor with early stopping on its own training part."""

    def _encode(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.float64)

    def predict(self, X: ArrayLike) -> np.ndarray:
        return np.asarray(self.booster_.predict(self._raw(X)), dtype=np.float64).ravel()


class _Reporter:
    """Scores the sweep's metric on the validation split every ``report_every`` rounds and hands it to the
    epoch hooks; a prune (Optuna's TrialPruned) stops the booster and is raised again once ``fit`` returns."""

    def __init__(self, owner: _Boosted, current: hooks.EpochHooks, X_val: np.ndarray | pd.DataFrame, y_val: np.ndarray,
                 library: str) -> None:
        self.owner, self.hooks, self.library = owner, current, library
        self.X_val, self.y_val = X_val, y_val
        self.every = max(1, int(owner.report_every))
        self.active = current.on_epoch is not None and (current.scorer is not None or library == "catboost")
        self.pruned: BaseException | None = None
        self.metric: tuple[str, int] | None = None
        self.last_round = -1

    def _report(self, round_index: int, score: float) -> bool:
        """False once the trial is pruned (the booster stops)."""
        self.last_round = round_index
        assert self.hooks.on_epoch is not None  # reporting only when active
        try:
            self.hooks.on_epoch(round_index, {"valid_score": float(score)})
        except Exception as exc:  # noqa: BLE001 - Optuna's TrialPruned, raised again after fit
            self.pruned = exc
            return False
        return True

    def _due(self, round_index: int) -> bool:
        return (round_index + 1) % self.every == 0

    def _score(self, outputs: np.ndarray) -> float:
        assert self.hooks.scorer is not None  # scoring only when active, and not for CatBoost
        y = self.y_val
        if isinstance(self.owner, ClassifierMixin):
            outputs = outputs.reshape(len(outputs), -1)
            proba = np.column_stack([1 - outputs[:, 0], outputs[:, 0]]) if outputs.shape[1] == 1 else outputs
            y = self.owner.classes_[y]
            return self.hooks.scorer(_Snapshot(self.owner.classes_, proba), self.X_val, y)
        return self.hooks.scorer(_Snapshot(None, outputs.ravel()), self.X_val, y)

    def lightgbm(self, env: lightgbm.callback.CallbackEnv) -> None:
        if self._due(env.iteration):
            model = cast("lightgbm.Booster", env.model)  # a CVBooster only under lightgbm.cv, never here
            outputs = model.predict(self.X_val, num_iteration=env.iteration + 1)
            if not self._report(env.iteration, self._score(np.asarray(outputs))):
                from lightgbm.callback import EarlyStopException

                raise EarlyStopException(env.iteration, [])

    def xgboost_callback(self) -> xgboost.callback.TrainingCallback:
        import xgboost

        reporter = self

        class _Callback(xgboost.callback.TrainingCallback):
            def after_iteration(self, model: xgboost.Booster, epoch: int,
                                evals_log: xgboost.callback.TrainingCallback.EvalsLog) -> bool:
                if not reporter._due(epoch):
                    return False
                outputs = model.inplace_predict(reporter.X_val, iteration_range=(0, epoch + 1))
                return not reporter._report(epoch, reporter._score(np.asarray(outputs)))

        return _Callback()

    def catboost_metric(self) -> str | None:
        name = self.hooks.metric
        binary = isinstance(self.owner, ClassifierMixin) and len(self.owner.classes_) == 2
        if name in CATBOOST_METRICS and (binary or name in ("accuracy", "balanced_accuracy", "r2",
                                                            "neg_root_mean_squared_error", "neg_mean_absolute_error")):
            self.metric = CATBOOST_METRICS[name]
        elif name == "neg_log_loss":
            self.metric = ("MultiClass", -1)
        return self.metric[0] if self.metric else None

    def after_iteration(self, info: Any) -> bool:  # noqa: ANN401 - CatBoost's untyped callback info
        """CatBoost's callback: it sees metric values, not the model, so the sweep's metric is one CatBoost
        computes itself (:data:`CATBOOST_METRICS`); a metric it lacks is not reported per round."""
        if self.metric is None or not self._due(info.iteration - 1):
            return True
        values = info.metrics.get("validation", {})
        found = next((v for k, v in values.items() if k.split(":")[0] == self.metric[0]), None)
        if not found:
            return True
        return self._report(info.iteration - 1, self.metric[1] * found[-1])


class _Snapshot:
    """A booster as it stands after some rounds, as a scorer sees it: what it predicts for the validation split."""

    def __init__(self, classes: np.ndarray | None, outputs: np.ndarray) -> None:
        self._outputs = outputs
        if classes is not None:  # a regressor's snapshot has no classes_
            self.classes_ = classes

    def __sklearn_tags__(self) -> Tags:
        from sklearn.utils import ClassifierTags, RegressorTags, Tags, TargetTags

        if hasattr(self, "classes_"):
            return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                        classifier_tags=ClassifierTags())
        return Tags(estimator_type="regressor", target_tags=TargetTags(required=True), regressor_tags=RegressorTags())

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        return self._outputs

    def predict(self, X: ArrayLike) -> np.ndarray:
        if hasattr(self, "classes_"):
            return self.classes_[np.argmax(self._outputs, axis=1)]
        return self._outputs


def _copy(booster: Any) -> Any:  # noqa: ANN401 - a booster, and its copy
    """A fresh unfitted booster with the same parameters (CatBoost's are not scikit-learn estimators)."""
    if isinstance(booster, BaseEstimator):
        return clone(booster)
    return type(booster)(**booster.get_params())


def _seed(booster: Any) -> int:  # noqa: ANN401 - a booster
    params = booster.get_params()
    seed = params.get("random_state", params.get("random_seed"))
    return int(seed) if isinstance(seed, int | np.integer) else 0


def _rounds_trained(booster: Any, library: str) -> int:  # noqa: ANN401 - a booster
    """Boosting rounds actually run: early stopping ends them before n_estimators, and LightGBM and CatBoost then
    keep only the best iteration's trees, so the count comes from the validation scores, one per round."""
    if library == "lightgbm":
        evals = getattr(booster, "evals_result_", None) or {}
    elif library == "xgboost":
        evals = booster.evals_result() if hasattr(booster, "evals_result_") else {}
    else:
        evals = booster.get_evals_result()
    lengths = [len(v) for metrics in evals.values() for v in metrics.values()]
    if lengths:
        return max(lengths)
    if library == "lightgbm":
        return int(booster.booster_.current_iteration())
    if library == "xgboost":
        return int(booster.get_booster().num_boosted_rounds())
    return int(booster.tree_count_)


def _best_iteration(booster: Any, library: str) -> int | None:  # noqa: ANN401 - a booster
    if library == "lightgbm":
        value = booster.best_iteration_
    elif library == "xgboost":
        value = getattr(booster, "best_iteration", None)
    else:
        value = booster.get_best_iteration()
    return int(value) if value is not None and value >= 0 else None


def _tree_nodes(booster: Any, library: str) -> int:  # noqa: ANN401 - a booster
    """A full binary tree of L leaves has 2L - 1 nodes (LightGBM, CatBoost); XGBoost's dump has a line per node."""
    if library == "lightgbm":
        return int(sum(2 * t["num_leaves"] - 1 for t in booster.booster_.dump_model()["tree_info"]))
    if library == "xgboost":
        return int(sum(len(tree.splitlines()) for tree in booster.get_booster().get_dump()))
    return int(sum(2 * int(leaves) - 1 for leaves in booster.get_tree_leaf_counts()))
