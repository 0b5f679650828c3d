"""``expt sweep --warm-start``: configurations to try first, from a YAML list or the configs ``expt recommend`` wrote.

Read and checked against the sweep's space before a new sweep's studies exist, so a
bad file leaves nothing behind; enqueued into every study that has no trial yet.

A configuration chosen with the sweep's own dataset's records (``expt recommend --include-self``,
or a config written before recommend left the query's records out) has seen every row the outer
folds test on: as a first trial of an outer fold it would bias the outer estimate, the one number
a nested CV exists to keep honest. Such configurations seed the final search only (with a warning).
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
    from_recipes, leaky = [], []
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
    names = {p.name for p in plan.space.params} | {
        f"{fam}/{p.name}" for fam, ps in plan.space.families.items() for p in ps}
    for config in configs:
        if not isinstance(config, dict) or not set(config) <= names:
            raise UsageError(f"--warm-start entries must map search parameters ({', '.join(sorted(names))}) "
                             f"to values; got {config!r}")
    return configs


class WarmStart(list):
    """Warm-start entries; ``final_only``: the indices of those that may seed the final search only."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.final_only: set[int] = set()


def _chosen_on(file: Path, dataset: Any) -> bool:
    """Whether a config ``expt recommend`` wrote was chosen with ``dataset``'s own records."""
    from expt.meta.advise import provenance

    found = provenance(file.read_text(encoding="utf-8"))
    if not found or not found.get("self_included"):
        return False
    if found.get("fingerprint"):
        return found["fingerprint"] == dataset.fingerprint
    return found.get("dataset") == dataset.name


def enqueue_warm_start(sweep: Any, configs: list[dict[str, Any]]) -> int:
    """Queue given configurations as the first trials of every study that has none yet (those chosen on this
    dataset: the final search's only)."""
    final_only = getattr(configs, "final_only", set())
    finals = {u.key for u in sweep.plan.units if u.test is None}
    fresh = [(key, s) for key, s in sweep.studies.items() if not s.trials]
    for key, study in fresh:
        for i, config in enumerate(configs):
            if key in finals or i not in final_only:
                study.enqueue_trial(config, skip_if_exists=True)
    return len(configs) if fresh else 0
