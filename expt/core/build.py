"""The one door from config to object: ``build`` instantiates a ``_target_`` node after checking it.

Configs may come from anyone (a logged run, a shared storage, a file), so what a config
may build is decided here and nowhere else; ``--trust-target`` extends it for a user's
own code (an environment variable, so spawned workers inherit it).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from expt.core.errors import ConfigError

DEFAULT_ALLOWED = ("sklearn.", "expt.", "torch.nn.", "torch.optim.", "optuna.samplers.", "optuna.pruners.")
TRUST_ENV = "EXPT_TRUST_TARGETS"


def allowed_targets() -> tuple[str, ...]:
    """The allow-list now: the defaults plus the prefixes trusted for this invocation."""
    extra = [p.strip() for p in os.environ.get(TRUST_ENV, "").split(",") if p.strip()]
    return DEFAULT_ALLOWED + tuple(p for p in extra if p not in DEFAULT_ALLOWED)


@contextlib.contextmanager
def trusting(prefixes: Iterable[str] | None) -> Iterator[None]:
    """Extend the allow-list while the block runs (and in the processes it starts), then restore it."""
    prefixes = list(prefixes or [])
    for prefix in prefixes:
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\.?", prefix):
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


def check_targets(node: Any, allowed: Iterable[str] | None = None, where: str = "") -> None:
    """Refuse any ``_target_`` outside the allow-list, however deep it sits."""
    allowed = tuple(allowed) if allowed is not None else allowed_targets()
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if target is not None and not _is_allowed(str(target), allowed):
            module = str(target).rpartition(".")[0] or str(target)
            raise ConfigError(
                f"{where or 'config'}._target_ {target!r} is not allowed (allowed prefixes: "
                f"{', '.join(allowed)}); if you trust that code, pass --trust-target {module}"
            )
        for key, value in node.items():
            check_targets(value, allowed, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            check_targets(value, allowed, f"{where}[{i}]")


def build(node: Mapping[str, Any], *, where: str, allowed: Iterable[str] | None = None) -> Any:
    """Instantiate a ``_target_`` node: the one door from config to object (``allowed``: default
    :func:`allowed_targets`, the defaults plus ``--trust-target``)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    check_targets(node, allowed, where)
    target = node.get("_target_")
    if not target:
        raise ConfigError(f"{where} has no _target_; name the class to build, e.g. {where}._target_=sklearn.svm.SVC")
    if _flat(node):  # the common case, and a sweep builds one per trial: skip Hydra's generic machinery (~10 ms)
        obj = _build_flat(node, where, str(target))
        _validate_estimator_params(obj, where)
        return obj
    try:
        obj = instantiate(dict(node), _convert_="all")
    except InstantiationException as exc:
        raise ConfigError(_explain_instantiate_error(str(exc), where, str(target))) from None
    _validate_estimator_params(obj, where)
    return obj


def _flat(node: Mapping[str, Any]) -> bool:
    """No nested objects to build and no Hydra-only keys."""
    def nested(value: Any) -> bool:
        if isinstance(value, Mapping):
            return "_target_" in value or any(nested(v) for v in value.values())
        return isinstance(value, list | tuple) and any(nested(v) for v in value)

    return not any(k.startswith("_") and k != "_target_" for k in node) and not any(
        nested(v) for k, v in node.items() if k != "_target_")


def _build_flat(node: Mapping[str, Any], where: str, target: str) -> Any:
    import importlib

    module_name, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{where}._target_ {target!r} cannot be imported; check the module and class name") from None
    kwargs = {k: v for k, v in node.items() if k != "_target_"}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(_explain_instantiate_error(str(exc), where, target)) from None


def _explain_instantiate_error(msg: str, where: str, target: str) -> str:
    if "Error locating target" in msg:
        return f"{where}._target_ {target!r} cannot be imported; check the module and class name"
    unexpected = re.search(r"unexpected keyword argument '([^']+)'", msg)
    if unexpected:
        param = unexpected.group(1)
        return f"{target.rsplit('.', 1)[-1]} has no parameter {param!r}; remove or rename {where}.{param}"
    return f"cannot build {where} ({target}): {msg.splitlines()[-1].strip()}"


def _validate_estimator_params(obj: Any, where: str) -> None:
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
