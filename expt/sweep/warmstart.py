"""``expt sweep --warm-start``: configurations to try first, from a YAML list or the configs ``expt recommend`` wrote.

Read and checked against the sweep's space before a new sweep's studies exist, so a
bad file leaves nothing behind; enqueued into every study that has no trial yet.

A configuration chosen with the sweep's own dataset's records (``expt recommend --include-self``,
or a config written before recommend left the query's records out) has seen every row the outer
folds test on: as a first trial of an outer fold it would bias the outer estimate, the one number
a nested CV exists to keep honest. Such configurations seed the final search only (with a warning).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.errors import UsageError

if TYPE_CHECKING:
    from expt.core.data import Dataset
    from expt.core.space import Param
    from expt.sweep.attach import Sweep
    from expt.sweep.plan import SweepPlan


def read_warm_start(path: str | None, plan: SweepPlan, model: str | None) -> list[dict[str, Any]]:
    """The configurations a --warm-start file or folder gives (none without one), checked against the space."""
    if not path:
        return []
    import yaml

    file = Path(path)
    files = sorted(file.glob("*.yaml")) if file.is_dir() else [file]
    if not files or not all(f.is_file() for f in files):
        raise UsageError(f"--warm-start {path!r} is not a YAML file or a folder of them")
    from expt.meta.advise import is_recipe, warm_start_entries

    configs, recipes = WarmStart(), []
    for f in files:
        try:
            loaded = yaml.safe_load(f.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            raise UsageError(f"--warm-start file {str(f)!r} is not valid UTF-8 YAML; fix it") from None
        if is_recipe(loaded):  # a config `expt recommend --out` wrote
            recipes.append(f)
        else:
            configs.extend(loaded if isinstance(loaded, list) else [loaded])
    from_recipes: list[dict[str, Any]] = []
    leaky: list[str] = []
    for f in recipes:
        entries = warm_start_entries([f], plan.space, model)
        if entries and _chosen_on(f, plan.prepared.dataset):
            leaky.append(f.name)
            configs.final_only.update(range(len(configs) + len(from_recipes),
                                            len(configs) + len(from_recipes) + len(entries)))
        from_recipes.extend(entries)
    if recipes and not from_recipes:
        import warnings

        warnings.warn(f"none of the {len(recipes)} config(s) in --warm-start {path} sets this sweep's search space "
                      f"(model {model}); nothing enqueued from them", stacklevel=2)
    if leaky:
        import warnings

        warnings.warn(f"{', '.join(leaky)} in --warm-start {path} were chosen with this dataset's own records "
                      "(expt recommend --include-self, or written before recommend left them out): they seed the "
                      "final search only, not the outer folds, whose scores must not have seen the data they test "
                      "on; re-run expt recommend without --include-self to warm-start the outer folds too",
                      stacklevel=2)
    configs.extend(from_recipes)
    params = {p.name: p for p in plan.space.params} | {
        f"{fam}/{p.name}": p for fam, ps in plan.space.families.items() for p in ps}
    for i, config in enumerate(configs, 1):
        if not isinstance(config, dict) or not set(config) <= set(params):
            raise UsageError(f"--warm-start entries must map search parameters ({', '.join(sorted(params))}) "
                             f"to values; got {config!r}")
        for name, value in config.items():
            problem = value_problem(params[name], value)
            if problem:
                raise UsageError(f"--warm-start entry {i}, {name}: {value!r} {problem}; fix the entry in {path}")
        family = config.get("model")
        stray = [n for n in config if "/" in n and n.split("/", 1)[0] != family]
        if stray:
            raise UsageError(f"--warm-start entry {i} sets {', '.join(stray)} but its model is {family!r}; "
                             f"set model to their family or leave them out in {path}")
    return configs


def value_problem(param: Param, value: object) -> str | None:
    """Why ``value`` is not in ``param``'s range (None when it is): Optuna enqueues any value it is given, and a
    value outside the space failed every study's first trial while the command exited 0 (issue 26)."""
    if param.kind == "categorical":
        return None if value in param.choices else f"is not one of {list(param.choices)}"
    assert param.low is not None and param.high is not None  # parse_param: a numeric parameter has both
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"is not a number ({param.kind} from {param.low:g} to {param.high:g})"
    if param.kind == "int" and not float(value).is_integer():
        return f"is not a whole number ({param.low:g} to {param.high:g})"
    if not param.low <= value <= param.high:
        return f"is outside {param.low:g}..{param.high:g}"
    if param.step and not _on_grid(value - param.low, param.step):
        return f"is not on the space's steps of {param.step:g} from {param.low:g}"
    return None


def _on_grid(offset: float, step: float) -> bool:
    n = round(offset / step)
    return abs(offset - n * step) <= 1e-9 * max(1.0, abs(offset))


class WarmStart(list[Any]):
    """Warm-start entries (as a file gives them, until :func:`read_warm_start` has checked them: mappings of
    parameters to values); ``final_only``: the indices of those that may seed the final search only."""

    def __init__(self, *args: Iterable[Any]) -> None:
        super().__init__(*args)
        self.final_only: set[int] = set()


def _chosen_on(file: Path, dataset: Dataset) -> bool:
    """Whether a config ``expt recommend`` wrote was chosen with ``dataset``'s own records."""
    from expt.meta.advise import provenance

    found = provenance(file.read_text(encoding="utf-8"))
    if not found or not found.get("self_included"):
        return False
    if found.get("fingerprint"):
        return found["fingerprint"] == dataset.fingerprint
    return found.get("dataset") == dataset.name


def enqueue_warm_start(sweep: Sweep, configs: list[dict[str, Any]]) -> int:
    """Queue given configurations as the first trials of every study that has none yet (those chosen on this
    dataset: the final search's only)."""
    final_only: set[int] = getattr(configs, "final_only", set())
    finals = {u.key for u in sweep.plan.units if u.test is None}
    fresh = [(key, s) for key, s in sweep.studies.items() if not s.trials]
    for key, study in fresh:
        for i, config in enumerate(configs):
            if key in finals or i not in final_only:
                study.enqueue_trial(config, skip_if_exists=True)
    return len(configs) if fresh else 0
