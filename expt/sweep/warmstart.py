"""``expt sweep --warm-start``: configurations to try first, from a YAML list or the configs ``expt recommend`` wrote.

Read and checked against the sweep's space before a new sweep's studies exist, so a
bad file leaves nothing behind; enqueued into every study that has no trial yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from expt.core.errors import UsageError


def read_warm_start(path: str | None, plan: Any, model: str | None) -> list[dict[str, Any]]:
    """The configurations a --warm-start file or folder gives (none without one), checked against the space."""
    if not path:
        return []
    import yaml

    file = Path(path)
    files = sorted(file.glob("*.yaml")) if file.is_dir() else [file]
    if not files or not all(f.is_file() for f in files):
        raise UsageError(f"--warm-start {path!r} is not a YAML file or a folder of them")
    from expt.meta.advise import is_recipe, warm_start_entries

    configs, recipes = [], []
    for f in files:
        try:
            loaded = yaml.safe_load(f.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            raise UsageError(f"--warm-start file {str(f)!r} is not valid UTF-8 YAML; fix it") from None
        if is_recipe(loaded):  # a config `expt recommend --out` wrote
            recipes.append(f)
        else:
            configs.extend(loaded if isinstance(loaded, list) else [loaded])
    from_recipes = warm_start_entries(recipes, plan.space, model)
    if recipes and not from_recipes:
        import warnings

        warnings.warn(f"none of the {len(recipes)} config(s) in --warm-start {path} sets this sweep's search space "
                      f"(model {model}); nothing enqueued from them", stacklevel=2)
    configs.extend(from_recipes)
    names = {p.name for p in plan.space.params} | {
        f"{fam}/{p.name}" for fam, ps in plan.space.families.items() for p in ps}
    for config in configs:
        if not isinstance(config, dict) or not set(config) <= names:
            raise UsageError(f"--warm-start entries must map search parameters ({', '.join(sorted(names))}) "
                             f"to values; got {config!r}")
    return configs


def enqueue_warm_start(sweep: Any, configs: list[dict[str, Any]]) -> int:
    """Queue given configurations as the first trials of every study that has none yet."""
    fresh = [s for s in sweep.studies.values() if not s.trials]
    for study in fresh:
        for config in configs:
            study.enqueue_trial(config, skip_if_exists=True)
    return len(configs) if fresh else 0
