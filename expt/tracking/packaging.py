"""What a logged model carries so that it loads and serves elsewhere: its signature and complete requirements.

``mlflow models serve`` builds the model's environment from its ``requirements.txt``; MLflow's
default list for the scikit-learn flavor names scikit-learn only, so a torch network (which needs
torch and expt-runner, whose classes it is) or a skops file (which needs skops) would not load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from expt.core.errors import TrackingError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature
    from sklearn.base import BaseEstimator

# Top-level modules of a model's classes -> the distribution that serves them (beyond scikit-learn).
DISTRIBUTIONS = {"expt": "expt-runner", "torch": "torch", "sklearn": None, "numpy": None, "builtins": None,
                 "functools": None, "collections": None}
# A module whose usual distribution pulls GPU libraries -> the CPU build that serves it (the same version): PyPI's
# xgboost pulls a ~350 MB CUDA NCCL wheel, xgboost-cpu does not.
CPU_BUILDS = {"xgboost": "xgboost-cpu"}
SKOPS_TRUSTED = ("numpy.", "scipy.", "sklearn.")


def model_signature(model: BaseEstimator, X: pd.DataFrame) -> tuple[pd.DataFrame, ModelSignature]:
    """The input example and signature a model is logged with.

    Integer columns are declared ``double``: new data read from a CSV turns an integer column with
    a missing value into floats, which MLflow's schema check would refuse for a ``long`` column,
    while the pipeline imputes and scales them all the same.
    """
    from mlflow.models import infer_signature

    example = X.head(5)
    ints = {c: "float64" for c, kind in example.dtypes.items() if kind.kind in "iu"}
    if ints:
        example = example.astype(ints)
    return example, infer_signature(example, model.predict(example))


def skops_types(model: BaseEstimator) -> list[str]:
    """The types a skops file of this model holds beyond skops' defaults, which loading must be told to trust.

    skops refuses a type it was not told to trust, even ``numpy.dtype`` and a forest's trees: without the
    list MLflow could not save a scikit-learn pipeline in the skops format at all. Only numpy, scipy and
    scikit-learn types are trusted here; a model holding anything else is logged in cloudpickle format.
    """
    import skops.io

    found = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    other = [t for t in found if not t.startswith(SKOPS_TRUSTED)]
    if other:
        raise TrackingError(f"the model holds types skops does not know ({', '.join(other[:3])}); set "
                            "tracking.model_format=cloudpickle")
    return found


def model_requirements(model: BaseEstimator, fmt: str) -> list[str]:
    """Every distribution loading the model needs: scikit-learn, the serialization format's (cloudpickle or
    skops), and those of the classes inside it (torch and expt-runner for expt's torch estimators, a user's
    package for a class under --trust-target), pinned to the installed versions."""
    import mlflow.sklearn

    reqs = mlflow.sklearn.get_default_pip_requirements(include_cloudpickle=fmt == "cloudpickle",
                                                       include_skops=fmt == "skops")
    modules = _modules(model)
    roots = {module.split(".")[0] for module in modules}
    if any(m.startswith("expt.models") and m != "expt.models.boosting" for m in modules):
        roots.add("torch")  # expt's other estimators are torch networks
    for root in sorted(roots):
        dist = DISTRIBUTIONS[root] if root in DISTRIBUTIONS else _distribution(root)  # .get would always look up
        if dist is not None:
            pinned = _pinned(dist) if root not in CPU_BUILDS else _pinned(dist, CPU_BUILDS[root])
            if pinned and pinned not in reqs:
                reqs.append(pinned)
    return reqs


def _modules(obj: object, seen: set[int] | None = None) -> set[str]:
    """The modules of the classes in a fitted pipeline: its steps, their parameters, partials' functions."""
    import functools

    seen = seen if seen is not None else set()
    if obj is None or isinstance(obj, str | int | float | bool | dict | type) or id(obj) in seen:
        return set()
    seen.add(id(obj))
    if isinstance(obj, list | tuple):
        return set().union(*(_modules(item, seen) for item in obj)) if obj else set()
    found = {type(obj).__module__}
    if isinstance(obj, functools.partial):
        found.add(getattr(obj.func, "__module__", "") or "")
    params = obj.get_params(deep=False) if hasattr(obj, "get_params") else {}
    for child in list(params.values()) + [getattr(obj, "steps", None), getattr(obj, "transformers", None)]:
        found |= _modules(child, seen)
    return {m for m in found if m}


def _distribution(root: str) -> str | None:
    from importlib import metadata

    dists = metadata.packages_distributions().get(root)
    return dists[0] if dists else None


def _pinned(dist: str, name: str | None = None) -> str | None:
    """``name==version`` with the version of ``dist`` installed here (``name``: default ``dist``)."""
    from importlib import metadata

    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
    return f"{name or dist}=={version.split('+', 1)[0]}"  # a local label (torch's +cpu) is not on PyPI
