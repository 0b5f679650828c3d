"""The one door from config to object: :func:`build` checks what a ``_target_`` node would build, then builds it.

Configs may come from anyone (a logged run, a shared Optuna storage, a file someone
sent), so this module decides what a config may build, by what the target *is*, not
how it is spelled:

* the target is an ASCII dotted path under an allowed prefix, resolved here by one
  ``import_module`` of its module part and one attribute of that module (Hydra's
  ``_locate`` walks attribute after attribute, so ``expt.<module>.os.makedirs``
  reached a function through a module that happened to import ``os``);
* the attribute is a class defined under an allowed prefix (never a function, a
  module, or a class reached from elsewhere), and, for the default prefixes, one of
  the kinds the product builds: scikit-learn estimators and transformers, torch
  modules, optimizers and LR schedulers, Optuna samplers and pruners (expt's own
  models are scikit-learn estimators);
* LightGBM's, XGBoost's and CatBoost's estimators are allowed (their scikit-learn interfaces; CatBoost's are
  not scikit-learn estimators, so they are a kind of their own), and nothing else of theirs; their parameters
  that name files, folders, machines or ports are refused, and CatBoost must be told not to write files
  (``allow_writing_files: false``): a config may come from anyone, and a fit must not write where it says;
* Hydra's other instantiation keys (``_args_``, ``_recursive_``, ``_convert_``, ...)
  are refused; ``_partial_: true`` is allowed on an optimizer or LR scheduler only,
  which takes its parameters at fit time.

``--trust-target PREFIX`` extends the prefixes for a user's own classes (which must
still be classes); it is an environment variable so spawned workers inherit it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from expt.core.errors import ConfigError

BOOSTING = ("lightgbm.", "xgboost.", "catboost.")
DEFAULT_ALLOWED = ("sklearn.", "expt.", "torch.nn.", "torch.optim.", "optuna.samplers.", "optuna.pruners.",
                   *BOOSTING)
TRUST_ENV = "EXPT_TRUST_TARGETS"
TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")  # ASCII only: no look-alikes, no spaces
PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\.?")
PARTIAL = "_partial_"
KINDS = "scikit-learn estimators and transformers, torch modules, optimizers and LR schedulers, Optuna samplers " \
        "and pruners, LightGBM, XGBoost and CatBoost estimators"
# Words of a booster parameter that reads or writes a file or opens a connection (LightGBM's output_model,
# forcedsplits_filename, machines, local_listen_port; CatBoost's train_dir, snapshot_file): refused.
FILE_WORDS = {"file", "files", "filename", "dir", "path", "machine", "machines", "port", "snapshot", "binary"}


def missing_libraries() -> set[str]:
    """The boosting libraries not installed here (they come with ``expt-runner[boosting]``): their families
    (lightgbm, xgboost, catboost, named as the modules) are left out of searches and recommendations."""
    import importlib.util

    return {p.rstrip(".") for p in BOOSTING if importlib.util.find_spec(p.rstrip(".")) is None}


def allowed_targets() -> tuple[str, ...]:
    """The allow-list now: the defaults plus the prefixes trusted for this invocation."""
    return DEFAULT_ALLOWED + tuple(p for p in trusted_prefixes() if p not in DEFAULT_ALLOWED)


def trusted_prefixes() -> list[str]:
    """What ``--trust-target`` added for this invocation (stored with a sweep, so joining workers can say so)."""
    return [p.strip() for p in os.environ.get(TRUST_ENV, "").split(",") if p.strip()]


@contextlib.contextmanager
def trusting(prefixes: Iterable[str] | None) -> Iterator[None]:
    """Extend the allow-list while the block runs (and in the processes it starts), then restore it."""
    prefixes = list(prefixes or [])
    for prefix in prefixes:
        if not PREFIX.fullmatch(prefix):
            raise ConfigError(f"--trust-target {prefix!r} is not a module or class path; "
                              "pass one like --trust-target mylib.models")
    if not prefixes:
        yield
        return
    before = os.environ.get(TRUST_ENV)
    os.environ[TRUST_ENV] = ",".join([*(before.split(",") if before else []), *prefixes])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = before


def _is_allowed(target: str, allowed: tuple[str, ...]) -> bool:
    """``mylib.`` trusts what is under mylib; ``mylib`` the same plus mylib itself (not ``mylibx``)."""
    return any(target.startswith(p) if p.endswith(".") else target == p or target.startswith(p + ".")
               for p in allowed)


def _refused(where: str, target: str, allowed: tuple[str, ...]) -> ConfigError:
    module = target.rpartition(".")[0] or target
    return ConfigError(f"{where}._target_ {target!r} is not allowed (allowed prefixes: {', '.join(allowed)}); "
                       f"if you trust that code, pass --trust-target {module}")


def check_targets(node: object, allowed: Iterable[str] | None = None, where: str = "") -> None:
    """Refuse, before anything is imported, any ``_target_`` off the allow-list and any other Hydra key.

    A first look at the text only: :func:`build` resolves and checks what each target is.
    """
    allowed = tuple(allowed) if allowed is not None else allowed_targets()
    if isinstance(node, Mapping):
        for key in node:
            if isinstance(key, str) and key.startswith("_") and key.endswith("_") and key not in ("_target_", PARTIAL):
                raise ConfigError(f"{where or 'config'}.{key} is a Hydra instantiation key, which a config may not use "
                                  "(only _target_, and _partial_ on an optimizer); pass parameters by name")
        target = node.get("_target_")
        if target is not None:
            if not isinstance(target, str) or not TARGET.fullmatch(target):
                raise ConfigError(f"{where or 'config'}._target_ {target!r} is not a dotted class path (ASCII letters, "
                                  "digits, '_' and '.'); name a class, e.g. sklearn.svm.SVC")
            if not _is_allowed(target, allowed):
                raise _refused(where or "config", target, allowed)
        for key, value in node.items():
            check_targets(value, allowed, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            check_targets(value, allowed, f"{where}[{i}]")


def resolve_target(target: str, *, where: str, allowed: tuple[str, ...]) -> type:
    """The class a checked target names: one import, one attribute, a class of an allowed kind."""
    module_name, _, name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        obj = getattr(module, name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{where}._target_ {target!r} cannot be imported; check the module and class name") from None
    if not inspect.isclass(obj):
        what = "a module" if inspect.ismodule(obj) else "a function" if callable(obj) else type(obj).__name__
        raise ConfigError(f"{where}._target_ {target!r} is {what}, not a class; a config builds classes only "
                          f"({KINDS})")
    home = f"{obj.__module__}.{obj.__qualname__}"
    if not _is_allowed(home, allowed):
        raise ConfigError(f"{where}._target_ {target!r} is {home}, a class from outside the allowed prefixes; name "
                          f"it where it is defined, or pass --trust-target {obj.__module__} if you trust it")
    trusted = tuple(p for p in allowed if p not in DEFAULT_ALLOWED)
    if not (trusted and _is_allowed(home, trusted)) and _kind(obj) is None:
        raise ConfigError(f"{where}._target_ {target!r} is not a class a config may build ({KINDS})")
    return obj


def _kind(cls: type) -> str | None:
    """What kind of allowed class this is, or None. Imports nothing new: a torch or Optuna class means its
    library is already imported."""
    from sklearn.base import BaseEstimator

    if issubclass(cls, BaseEstimator):
        return "estimator"
    torch = sys.modules.get("torch")
    if torch is not None:
        if issubclass(cls, torch.optim.Optimizer) or issubclass(cls, torch.optim.lr_scheduler.LRScheduler):
            return "optimizer"
        if issubclass(cls, torch.nn.Module):
            return "module"
    catboost = sys.modules.get("catboost")
    if catboost is not None and issubclass(cls, (catboost.CatBoostClassifier, catboost.CatBoostRegressor)):
        return "catboost"
    optuna = sys.modules.get("optuna")
    if optuna is not None and (issubclass(cls, optuna.samplers.BaseSampler)
                               or issubclass(cls, optuna.pruners.BasePruner)):
        return "search"
    return None


def build(node: Mapping[str, Any], *, where: str,
          allowed: Iterable[str] | None = None) -> Any:  # noqa: ANN401 - whatever class the config names
    """Instantiate a ``_target_`` node, and the ``_target_`` nodes inside it, through the checks above
    (``allowed``: default :func:`allowed_targets`, the defaults plus ``--trust-target``)."""
    allowed = tuple(allowed) if allowed is not None else allowed_targets()
    check_targets(node, allowed, where)
    if not node.get("_target_"):
        raise ConfigError(f"{where} has no _target_; name the class to build, e.g. {where}._target_=sklearn.svm.SVC")
    obj = _build(node, where, allowed)
    _validate_estimator_params(obj, where)
    return obj


def _build(node: Mapping[str, Any], where: str, allowed: tuple[str, ...]) -> Any:  # noqa: ANN401 - as build
    target = str(node["_target_"])
    cls = resolve_target(target, where=where, allowed=allowed)
    partial = node.get(PARTIAL, False)
    if partial not in (True, False):
        raise ConfigError(f"{where}.{PARTIAL} must be true or false, got {partial!r}")
    kwargs = {k: v for k, v in node.items() if k not in ("_target_", PARTIAL)}
    if partial:
        if _kind(cls) != "optimizer":
            raise ConfigError(f"{where}.{PARTIAL} is allowed on an optimizer or LR scheduler only ({target} is not "
                              "one); drop it")
        if _has_target(kwargs):
            raise ConfigError(f"{where}: an optimizer takes numbers and flags, not objects; remove the nested "
                              "_target_ from its parameters")
        return functools.partial(cls, **kwargs)
    if target.startswith(BOOSTING):
        _check_booster_params(kwargs, where, cls)
    if kwargs.get("memory") is not None:
        raise ConfigError(f"{where}.memory names a cache folder, whose pickles would be loaded back (a config may "
                          "come from anyone); set it to null")
    kwargs = {k: _value(v, f"{where}.{k}", allowed) for k, v in kwargs.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(_explain_instantiate_error(str(exc), where, target)) from None


def _check_booster_params(kwargs: Mapping[str, Any], where: str, cls: type) -> None:
    """No booster parameter that names a file, folder, machine or port; CatBoost told not to write files."""
    for key in kwargs:
        words = set(str(key).lower().split("_"))
        if key != "allow_writing_files" and (words & FILE_WORDS or str(key).endswith(("_model", "_result"))):
            raise ConfigError(f"{where}.{key} would have the booster read or write files or open a connection (a "
                              "config may come from anyone); remove it")
    if _kind(cls) == "catboost" and kwargs.get("allow_writing_files") is not False:
        raise ConfigError(f"{where}.allow_writing_files must be false: CatBoost otherwise writes catboost_info/ "
                          f"where it runs; set {where}.allow_writing_files=false")


def _value(value: object, where: str, allowed: tuple[str, ...]) -> Any:  # noqa: ANN401 - built, or as it is
    if isinstance(value, Mapping):
        if "_target_" in value:
            return _build(value, where, allowed)
        return {k: _value(v, f"{where}.{k}", allowed) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_value(v, f"{where}[{i}]", allowed) for i, v in enumerate(value)]
    return value


def _has_target(value: object) -> bool:
    if isinstance(value, Mapping):
        return "_target_" in value or any(_has_target(v) for v in value.values())
    return isinstance(value, list | tuple) and any(_has_target(v) for v in value)


def _explain_instantiate_error(msg: str, where: str, target: str) -> str:
    unexpected = re.search(r"unexpected keyword argument '([^']+)'", msg)
    if unexpected:
        param = unexpected.group(1)
        return f"{target.rsplit('.', 1)[-1]} has no parameter {param!r}; remove or rename {where}.{param}"
    return f"cannot build {where} ({target}): {msg.splitlines()[-1].strip()}"


def _validate_estimator_params(obj: object, where: str) -> None:
    """Check parameter types and ranges now, before any run exists, not at the first fit."""
    validate = getattr(obj, "_validate_params", None)
    if validate is None:
        return
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        validate()
    except InvalidParameterError as exc:
        param = re.search(r"The '([^']+)' parameter", str(exc))
        fix = f"; fix {where}.{param.group(1)}" if param else ""
        raise ConfigError(f"{where}: {exc}{fix}") from None
