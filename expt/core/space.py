"""Search spaces from config, and what a trial's parameters do to a config.

A space is declarative (``float|int|categorical`` with ``low/high/log/step/choices``),
keyed by the dotted path of the config value it sets (``model.estimator.C``), so any
resolved value can be searched, preprocessing included. ``search=model_selection``
makes ``model`` itself a categorical choice with a conditional space per family;
those parameters are named ``<family>/<path>`` so that one name never has two
distributions in a study.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from expt.core.errors import ConfigError
from expt.core.settings import Search

if TYPE_CHECKING:
    from optuna.distributions import CategoricalChoiceType
    from optuna.pruners import BasePruner
    from optuna.samplers import BaseSampler
    from optuna.trial import BaseTrial

KINDS = ("float", "int", "categorical")
FAMILY_SEP = "/"


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()  # the values of a categorical parameter, as the config lists them

    def suggest(self, trial: BaseTrial, name: str | None = None) -> CategoricalChoiceType:
        name = name or self.name
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        assert self.low is not None and self.high is not None  # parse_param: a numeric parameter has both
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log, step=self.step)


@dataclass
class SearchSpace:
    params: list[Param]
    families: dict[str, list[Param]] = field(default_factory=dict)

    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        """Sample one configuration: Optuna parameter name → value."""
        out = {p.name: p.suggest(trial) for p in self.params}
        family = out.get("model")
        for p in self.families.get(family, []) if isinstance(family, str) else []:  # families are named by text
            name = f"{family}{FAMILY_SEP}{p.name}"
            out[name] = p.suggest(trial, name)
        return out


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_param(name: str, spec: object, where: str) -> Param:
    here = f"{where}.{name}"
    if not isinstance(spec, Mapping) or spec.get("type") not in KINDS:
        raise ConfigError(f"{here} needs type: float | int | categorical (with low/high or choices), got {spec!r}")
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise ConfigError(f"{here} has unknown keys {sorted(unknown)}; use low, high, log, step or choices")
    kind = spec["type"]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list | tuple) or not choices:
            raise ConfigError(f"{here}: a categorical parameter needs a non-empty list of choices")
        return Param(name, kind, choices=tuple(choices))
    low, high, log, step = spec.get("low"), spec.get("high"), bool(spec.get("log", False)), spec.get("step")
    if not (_number(low) and _number(high)):
        raise ConfigError(f"{here}: {kind} needs numeric low and high, got low={low!r} high={high!r}")
    if low >= high:
        raise ConfigError(f"{here}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{here}: log=true needs low > 0, got {low}")
    if log and step is not None:
        raise ConfigError(f"{here}: step and log=true cannot be combined; drop one")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{here}: int bounds must be whole numbers, got {low}..{high}")
    return Param(name, kind, low=low, high=high, log=log, step=step)


def parse_space(search: Search) -> SearchSpace:
    """Check and parse ``search.space`` (and ``search.families``) before any study exists."""
    space, families = search.space or {}, search.families or {}
    if not space:
        raise ConfigError(f"search {search.name!r} has an empty space; add parameters under search.space")
    params = [parse_param(name, spec, "search.space") for name, spec in space.items()]
    parsed = {fam: [parse_param(n, s, f"search.families.{fam}") for n, s in (ps or {}).items()]
              for fam, ps in families.items()}
    model = next((p for p in params if p.name == "model"), None)
    if families and model is None:
        raise ConfigError("search.families needs search.space.model, the categorical choice of model family")
    if model is not None and model.kind != "categorical":
        raise ConfigError("search.space.model must be categorical: its choices are model config names")
    return SearchSpace(params, parsed)


def apply_params(values: Mapping[str, Any], params: Mapping[str, Any],
                 family_models: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The resolved config a trial evaluates: base values with the trial's parameters set."""
    out = copy.deepcopy(dict(values))
    family = params.get("model")
    if family is not None and family_models:
        out["model"] = copy.deepcopy(family_models[family])
    for name, value in params.items():
        if name == "model":
            continue
        path = name.split(FAMILY_SEP, 1)[1] if FAMILY_SEP in name else name
        _set(out, path, value)
    return out


def _set(values: dict[str, Any], path: str, value: object) -> None:
    keys = path.split(".")
    node = values
    for i, key in enumerate(keys[:-1]):
        if not isinstance(node.get(key), dict):
            raise ConfigError(f"search parameter {path!r}: {'.'.join(keys[:i + 1])} is not a config section")
        node = node[key]
    if keys[-1] not in node and keys[:2] != ["model", "estimator"]:
        raise ConfigError(f"search parameter {path!r} names no config value; check the path (expt sweep --cfg)")
    node[keys[-1]] = value


def check_paths(space: SearchSpace, values: Mapping[str, Any], family_models: Mapping[str, Any] | None) -> None:
    """Every searched path must exist in the config it will be applied to."""
    for p in space.params:
        if p.name != "model":
            apply_params(values, {p.name: p.choices[0] if p.choices else p.low}, None)
    for family, params in space.families.items():
        for p in params:
            apply_params(values, {"model": family, f"{family}{FAMILY_SEP}{p.name}": p.low}, family_models)


def make_sampler(name: str, seed: int) -> BaseSampler:
    import optuna

    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    return samplers[name]()


def make_pruner(name: str, n_steps: int, *, warmup: int = 0) -> BasePruner:
    """Pruners see one intermediate value per inner fold (step = fold index), or for a torch model one per
    epoch (step = fold x max_epochs + epoch); ``n_steps`` is the most a trial reports, ``warmup`` the steps
    the median pruner waits (early epochs are noisy)."""
    import optuna

    pruners = {
        "none": lambda: optuna.pruners.NopPruner(),
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=n_steps),
        "wilcoxon": lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.1),
    }
    return pruners[name]()
