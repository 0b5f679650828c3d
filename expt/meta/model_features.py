"""Model features: what a record says about the configuration it evaluated, and how big its fitted model is.

A configuration is identified across datasets by its family, the hyperparameters that change
what it learns and its preprocessing (:func:`config_key`); arguments that change only how it
runs (``n_jobs``, ``random_state``, ...) are left out. :func:`n_parameters` counts a fitted
model's size, by a rule documented per kind of model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from expt.core.settings import Config

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline

# Estimator arguments that change how a model runs, not what it learns: left out of a configuration's identity.
RUNTIME_PARAMS = ("n_jobs", "verbose", "random_state", "warm_start", "copy_X", "device",
                  # LightGBM's, XGBoost's and CatBoost's (inside a booster), and how often a booster reports to a sweep
                  "thread_count", "random_seed", "verbosity", "allow_writing_files", "report_every")


def model_features(config: Config, pipeline: Pipeline | None = None) -> dict[str, Any]:
    """Family, resolved hyperparameters, preprocessing and pipeline steps of a configuration.

    ``config`` is the typed config (``prepared.config``, :meth:`expt.sweep.plan.SweepPlan.config_for`);
    ``pipeline`` the built scikit-learn pipeline, for its steps, and when fitted for its size (``n_parameters``).
    """
    model = config.model
    estimator = {k: v for k, v in model.estimator.items() if not k.startswith("_")}
    params = {k: v for k, v in sorted(estimator.items()) if k not in RUNTIME_PARAMS}
    if isinstance(params.get("booster"), dict):  # LightGBM, XGBoost, CatBoost: what the booster learns with
        params["booster"] = {k: v for k, v in sorted(params["booster"].items())
                             if not k.startswith("_") and k not in RUNTIME_PARAMS}
    preprocessing = dict(sorted(config.learner.preprocessing.as_dict().items()))
    out = {
        "name": model.name,
        "family": model.family,
        "target": model.estimator.get("_target_"),
        "params": params,
        "preprocessing": preprocessing,
        "steps": _steps(pipeline) if pipeline is not None else [],
        "n_parameters": n_parameters(pipeline) if pipeline is not None else None,
    }
    out["config_key"] = config_key(out)
    return out


def config_key(model: dict[str, Any]) -> str:
    """A configuration's identity across datasets: family, hyperparameters and preprocessing, canonically written."""
    import json

    params = ",".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(model["params"].items()))
    prep = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(model["preprocessing"].items()))
    return f"{model['name']}({params})|{prep}"


def _steps(pipeline: Pipeline) -> list[str]:
    steps = []
    for name, step in getattr(pipeline, "steps", []):
        if hasattr(step, "transformers"):
            for sub_name, sub, _cols in step.transformers:
                inner = getattr(sub, "steps", None)
                label = "+".join(type(s).__name__ for _n, s in inner) if inner else type(sub).__name__
                steps.append(f"{name}.{sub_name}:{label}")
        else:
            steps.append(f"{name}:{type(step).__name__}")
    return steps


def n_parameters(pipeline: BaseEstimator | None) -> int | None:
    """The fitted model's size, by a count documented per kind (None before fitting or for a kind not listed):

    - torch modules: trainable parameters (``requires_grad``);
    - linear models: coefficients and intercepts;
    - trees, forests, extra trees, (histogram) gradient boosting, LightGBM, XGBoost, CatBoost: tree nodes, summed
      over the trees;
    - SVMs with a kernel: support vectors x features; k-nearest neighbours: stored training points x features;
    - scikit-learn's MLPs: weights and biases.
    Sizes of different kinds do not compare (a node is not a weight); within a kind they order models.
    """
    if pipeline is None:  # nothing fitted
        return None
    estimator = pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline
    try:
        return _count(estimator)
    except (AttributeError, TypeError, ValueError):
        return None


def _count(est: BaseEstimator) -> int | None:
    import numpy as np

    module = getattr(est, "module_", None)
    if module is not None and callable(getattr(module, "parameters", None)):
        return int(sum(p.numel() for p in module.parameters() if p.requires_grad))
    nodes = getattr(est, "n_tree_nodes_", None)  # expt's LightGBM, XGBoost and CatBoost boosters
    if nodes is not None:
        return int(nodes)
    if hasattr(est, "tree_"):
        return int(est.tree_.node_count)
    if hasattr(est, "_predictors"):  # histogram gradient boosting: one list of trees per iteration
        return int(sum(len(tree.nodes) for trees in est._predictors for tree in trees))
    if hasattr(est, "estimators_"):  # forests (a list), gradient boosting (an array of trees)
        return int(sum(_count(e) or 0 for e in np.ravel(np.asarray(est.estimators_, dtype=object))))
    if hasattr(est, "support_vectors_"):
        return int(np.prod(est.support_vectors_.shape))
    if hasattr(est, "n_samples_fit_"):
        return int(est.n_samples_fit_ * est.n_features_in_)
    if hasattr(est, "coefs_"):
        return int(sum(np.size(a) for a in (*est.coefs_, *est.intercepts_)))
    if hasattr(est, "coef_"):
        return int(np.size(est.coef_) + np.size(getattr(est, "intercept_", 0)))
    return None
