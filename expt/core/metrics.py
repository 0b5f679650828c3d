"""The metrics a run reports: ``learner.metric`` selects, ``learner.metrics`` describes.

One number rarely says enough about a model (accuracy hides a minority class, a ranking
metric ignores calibration), so every fold is scored on several metrics; the selecting
metric stays one, since a sweep can optimize only one. Every name is checked here, before
any run exists: an unknown name, a metric of the other task, or one that needs predicted
probabilities from a model that gives none would otherwise be a NaN in every fold.

A metric of one's own is a scorer object (``__call__(estimator, X, y)``, higher is
better) made by a class under ``--trust-target``, built through :func:`expt.core.build.build`
like everything else a config builds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from expt.core.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import ArrayLike
    from sklearn.base import BaseEstimator

    from expt.models.hooks import Scorer

    # scikit-learn's multimetric scorer (raise_exc=False): each metric's value, or the text of the error it raised
    MultiScorer = Callable[[BaseEstimator, ArrayLike, ArrayLike], dict[str, float | str]]

DEFAULTS = {
    "classification": ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "neg_log_loss"),
    "regression": ("r2", "neg_root_mean_squared_error", "neg_mean_absolute_error"),
}
AUTO = "auto"
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,79}")  # an MLflow metric key, and a column in tables
BINARY_ONLY = ("f1", "precision", "recall", "jaccard", "average_precision", "roc_auc")
RESPONSE = {"predict_proba": "predicted probabilities", "decision_function": "decision scores"}


def resolve_metrics(spec: str | Sequence[str | Mapping[str, Any]] | None, *, task: str, selection: str,
                    estimator: BaseEstimator, n_classes: int = 0) -> dict[str, Scorer]:
    """Name -> scorer for every metric a run logs, the selecting one first.

    ``spec`` is ``learner.metrics``: ``auto`` (the task's defaults, leaving out those the
    model cannot compute) or a list of scikit-learn scorer names and ``_target_`` mappings.
    """
    auto = spec == AUTO or spec is None
    if not auto and not isinstance(spec, list | tuple):
        raise ConfigError(f"learner.metrics must be auto or a list of metric names, got {spec!r}; "
                          "e.g. learner.metrics=[accuracy,f1_macro]")
    entries = list(spec) if isinstance(spec, list | tuple) else list(DEFAULTS[task])  # auto: checked above
    custom: dict[str, Scorer] = {}
    named: list[tuple[str, Scorer]] = []
    for i, entry in enumerate(entries):
        where = f"learner.metrics[{i}]"
        if isinstance(entry, Mapping):
            name, scorer = _custom(entry, where)
            custom[name] = scorer
            named.append((name, scorer))
            continue
        if not isinstance(entry, str):
            raise ConfigError(f"{where} must be a scorer name or a _target_ mapping, got {entry!r}")
        name = multiclass_name(entry, n_classes)
        if n_classes > 2 and name in BINARY_ONLY:
            raise ConfigError(f"{where} {entry!r} is for two classes and the target has {n_classes}; use "
                              f"{entry}_macro or {entry}_weighted (roc_auc_ovr for roc_auc)")
        scorer = get_scorer(name, task, where="learner.metrics")
        missing = missing_response(scorer, estimator)
        if missing:
            if auto:
                continue  # a default the model cannot compute is left out, not an error
            raise ConfigError(needs_message(entry, missing, estimator, "learner.metrics"))
        named.append((name, scorer))
    chosen = custom.get(selection)
    if chosen is None:
        chosen = get_scorer(selection, task)
        missing = missing_response(chosen, estimator)
        if missing:
            raise ConfigError(needs_message(selection, missing, estimator, f"learner.metric.{task}"))
    out = {selection: chosen}
    for name, scorer in named:
        out.setdefault(name, scorer)
    return out


def get_scorer(name: str, task: str, *, where: str | None = None) -> Scorer:
    """A scikit-learn scorer by name, checked against the task (``where``: the config key, for the message)."""
    from sklearn.metrics import get_scorer, get_scorer_names

    where = where or f"learner.metric.{task}"
    try:
        scorer = get_scorer(name)
    except (ValueError, TypeError):
        import difflib

        close = difflib.get_close_matches(str(name), get_scorer_names(), 3)
        hint = f"did you mean {', '.join(close)}?" if close else "see sklearn.metrics.get_scorer_names()"
        raise ConfigError(f"unknown metric {name!r} for {where}; {hint}") from None
    # Checked now: inside the folds a metric of the other task fails every fold, after the runs exist.
    module = getattr(getattr(scorer, "_score_func", None), "__module__", "") or ""
    kind = "regression" if module.endswith("._regression") else "classification"
    if module.startswith("sklearn.metrics") and kind != task:
        default = "accuracy" if task == "classification" else "r2"
        raise ConfigError(f"{name!r} is a {kind} metric but the data is a {task} task; "
                          f"set {where} to a {task} metric (e.g. {default})")
    return scorer


def multiclass_name(name: str, n_classes: int) -> str:
    """ROC AUC on more than two classes is one-vs-rest: scikit-learn's ``roc_auc`` refuses them."""
    return "roc_auc_ovr" if name == "roc_auc" and n_classes > 2 else name


def _custom(entry: Mapping[str, Any], where: str) -> tuple[str, Scorer]:
    """A user's scorer: a class under --trust-target, built through the one door; ``name`` names its metric."""
    from expt.core.build import build

    node = {k: v for k, v in entry.items() if k != "name"}
    if "_target_" not in node:
        raise ConfigError(f"{where} is a mapping without _target_; name a scorer class (_target_: mylib.MyScorer) "
                          "or give a scikit-learn scorer name")
    scorer = build(node, where=where)
    if not callable(scorer):
        raise ConfigError(f"{where}._target_ {node['_target_']!r} built a {type(scorer).__name__}, which cannot "
                          "score; a metric class needs __call__(self, estimator, X, y) returning a number")
    name = entry.get("name") or _snake(type(scorer).__name__)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{where}.name {name!r} is not a metric name (letters, digits, '_', '.', '-'); "
                          f"set {where}.name=my_metric")
    return name, scorer


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def response_methods(scorer: Scorer) -> tuple[str, ...]:
    """What a scikit-learn scorer asks of the model (any one of them); () for a user's scorer."""
    methods = getattr(scorer, "_response_method", None)
    if methods is None:
        return ()
    return (methods,) if isinstance(methods, str) else tuple(methods)


def missing_response(scorer: Scorer, estimator: BaseEstimator) -> tuple[str, ...]:
    """The methods a scorer needs of which the model has none (``hasattr`` follows scikit-learn's available_if)."""
    methods = response_methods(scorer)
    if not methods or any(hasattr(estimator, m) for m in methods):
        return ()
    return methods


def needs_message(name: str, missing: tuple[str, ...], estimator: BaseEstimator, key: str) -> str:
    what = " or ".join(RESPONSE.get(m, m) for m in missing)
    model = type(estimator).__name__
    fix = "set model.estimator.probability=true or " if model == "SVC" and "predict_proba" in missing else ""
    return (f"{key} {name!r} needs {what}, which {model} does not give; {fix}choose a metric of predicted labels "
            f"(e.g. accuracy, f1_macro)")


def multi_scorer(scorers: Mapping[str, Scorer]) -> MultiScorer:
    """One callable for all metrics: scikit-learn's multimetric scorer predicts once per response method."""
    from sklearn.metrics import check_scoring

    return check_scoring(None, scoring=dict(scorers), raise_exc=False)


def scores_of(values: Mapping[str, float | str]) -> tuple[dict[str, float], dict[str, str]]:
    """A multimetric scorer's result as numbers; a metric that raised is NaN, with its error's last line."""
    scores, errors = {}, {}
    for name, value in values.items():
        if isinstance(value, str):  # raise_exc=False: the formatted traceback
            scores[name] = float("nan")
            errors[name] = value.strip().splitlines()[-1] if value.strip() else "failed"
        else:
            scores[name] = float(value)
    return scores, errors
