"""Recommenders over records, and their leave-one-dataset-out evaluation.

The records become a table per task: datasets (by fingerprint, with meta-features)
by configurations (by ``config_key``), holding each configuration's score on each
dataset. Scores of different datasets do not compare (0.9 accuracy is poor on one,
excellent on another), so the recommenders work on normalized regret, as the
evaluation does: on dataset d, t_d(c) = clip((best_d - s_d(c)) / (best_d - med_d), 0, 1).

- ``portfolio`` (best-on-average): the configurations with the lowest mean regret
  over all datasets; the baseline a meta-feature recommender has to beat.
- ``knn``: the same over the k datasets nearest in meta-feature space (features
  scaled by median and IQR over the records' datasets), weighted by closeness; k is
  chosen among ``K_CHOICES`` by leave-one-dataset-out on the records themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from expt.core.errors import UsageError

DEFAULT_METHOD = "knn"
K_NEIGHBORS = 5
K_CHOICES = (3, 5, 7, 10, 15)  # knn picks among these by leave-one-dataset-out on the records it is given
PRIOR = 1.0  # pseudo-datasets of regret 0.5 that shrink a configuration's mean when it was evaluated rarely


@dataclass
class Table:
    """Records of one task as arrays: datasets x configurations."""

    task: str
    metric: str
    datasets: list[dict[str, Any]]  # fingerprint, name
    configs: list[dict[str, Any]]  # the record's model and config of each configuration
    features: Any  # datasets x meta-features, finite
    feature_names: list[str]
    scores: Any  # datasets x configurations, NaN where not evaluated
    regret: Any = field(init=False)

    def __post_init__(self) -> None:
        self.regret = normalized_regret(self.scores)

    def without(self, index: int) -> Table:
        import numpy as np

        keep = np.arange(len(self.datasets)) != index
        return Table(self.task, self.metric, [d for d, k in zip(self.datasets, keep, strict=True) if k], self.configs,
                     self.features[keep], self.feature_names, self.scores[keep])


def normalized_regret(scores: Any) -> Any:
    """Per dataset (row): clip((best - s) / (best - median), 0, 1); NaN stays NaN."""
    import numpy as np

    with np.errstate(all="ignore"):
        best = np.nanmax(scores, axis=1, keepdims=True)
        med = np.nanmedian(scores, axis=1, keepdims=True)
        spread = best - med
        regret = np.where(spread > 1e-12, (best - scores) / np.where(spread > 1e-12, spread, 1.0),
                          np.where(scores >= best - 1e-12, 0.0, 1.0))
    return np.where(np.isnan(scores), np.nan, np.clip(regret, 0.0, 1.0))


def build_table(records: Iterable[Mapping[str, Any]], task: str) -> Table:
    """Average repeated evaluations of a configuration on a dataset; features from the newest record of a dataset."""
    import numpy as np

    from expt.meta.features import VERSION

    rows: dict[str, dict[str, Any]] = {}
    cols: dict[str, dict[str, Any]] = {}
    cells: dict[tuple[str, str], list[float]] = {}
    metric = None
    for r in records:
        if r["dataset"]["task"] != task or r.get("meta_features_version") != VERSION or not r["meta_features"]:
            continue
        metric = metric or r["metric"]["name"]
        if r["metric"]["name"] != metric:
            continue  # one metric per table: scores of different metrics do not rank together
        fp, key = r["dataset"]["fingerprint"], r["model"]["config_key"]
        rows.setdefault(fp, {"fingerprint": fp, "name": r["dataset"]["name"], "features": r["meta_features"]})
        cols.setdefault(key, {"key": key, "model": r["model"], "config": r.get("config", {})})
        cells.setdefault((fp, key), []).append(r["score"])
    if not rows:
        return Table(task, metric or "", [], [], np.zeros((0, 0)), [], np.zeros((0, 0)))
    names = sorted({k for row in rows.values() for k in row["features"]})
    fps, keys = list(rows), list(cols)
    features = np.array([[rows[fp]["features"].get(n, 0.0) for n in names] for fp in fps], dtype=float)
    scores = np.full((len(fps), len(keys)), np.nan)
    index = {k: j for j, k in enumerate(keys)}
    rows_of = {fp: i for i, fp in enumerate(fps)}
    for (fp, key), values in cells.items():  # plain sums: a numpy mean per cell was half the table's time
        scores[rows_of[fp], index[key]] = sum(values) / len(values)
    datasets = [{"fingerprint": fp, "name": rows[fp]["name"]} for fp in fps]
    return Table(task, metric, datasets, [cols[k] for k in keys], np.nan_to_num(features), names, scores)


@dataclass
class Ranked:
    """Configurations best first, with what supports each."""

    order: list[int]  # configuration indices
    expected_regret: list[float]
    neighbors: list[tuple[int, float]] = field(default_factory=list)  # (dataset index, distance)


def shrunk_mean(regret: Any, weights: Any) -> Any:
    """Weighted mean regret per configuration over the rows where it was evaluated, shrunk towards 0.5."""
    import numpy as np

    seen = ~np.isnan(regret)
    w = weights[:, None] * seen
    return (np.nansum(np.where(seen, regret, 0.0) * w, axis=0) + 0.5 * PRIOR) / (w.sum(axis=0) + PRIOR)


def rank_portfolio(table: Table, _query: Any = None) -> Ranked:
    import numpy as np

    mean = shrunk_mean(table.regret, np.ones(len(table.datasets)))
    order = [int(j) for j in np.argsort(mean, kind="stable")]
    return Ranked(order, [float(mean[j]) for j in order])


def choose_k(table: Table) -> int:
    """The k whose recommendations had the lowest mean regret, each dataset of ``table`` left out in turn.

    On the knowledge base the best k varied from 5 to 15 between tasks and datasets, and picking it by
    looking at the evaluation would flatter it; chosen here on the training records only, the outer
    leave-one-dataset-out evaluation stays honest.
    One distance matrix for all of it (features scaled over all of ``table``'s datasets, where
    a held-out dataset's own ranking rescales without it): 500 datasets take milliseconds.
    """
    import numpy as np

    n = len(table.datasets)
    if n < 4:
        return min(K_NEIGHBORS, max(n, 1))
    choices = [k for k in K_CHOICES if k < n] or [n - 1]
    scaled = _scaled(table.features, table.features)[0]
    squared = (scaled ** 2).sum(axis=1)
    distance = np.sqrt(np.clip(squared[:, None] + squared[None, :] - 2 * scaled @ scaled.T, 0, None)
                       / scaled.shape[1])
    np.fill_diagonal(distance, np.inf)
    order = np.argsort(distance, axis=1, kind="stable")
    seen = ~np.isnan(table.regret)
    regret = np.where(seen, table.regret, 0.0)
    usable = seen.sum(axis=1) >= 2
    totals = np.zeros(len(choices))
    for i, k in enumerate(choices):  # every held-out dataset at once
        near = order[:, :k]  # n x k
        closeness = 1.0 / (np.take_along_axis(distance, near, axis=1) + 0.1)
        w = closeness[:, :, None] * seen[near]  # n x k x configurations
        total = w.sum(axis=(1, 2), keepdims=True)
        w = np.where(total > 0, w / np.where(total > 0, total, 1) * k, w)
        mean = ((regret[near] * w).sum(axis=1) + 0.5 * PRIOR) / (w.sum(axis=1) + PRIOR)
        mean = np.where(seen, mean, np.inf)  # the pick must be one evaluated on the held-out dataset
        picks = np.argmin(mean, axis=1)
        totals[i] = table.regret[np.arange(n), picks][usable].sum()
    return int(choices[int(np.argmin(totals))])


def rank_knn_auto(table: Table, query: Any) -> Ranked:
    return rank_knn(table, query, k=choose_k(table))


def _scaled(features: Any, query: Any) -> tuple[Any, Any]:
    """Median/IQR scaling over the records' datasets (a feature without spread: its largest deviation), clipped."""
    import numpy as np

    center = np.median(features, axis=0)
    scale = np.subtract(*np.percentile(features, [75, 25], axis=0))
    scale = np.where(scale > 1e-9, scale, np.maximum(np.abs(features - center).max(axis=0), 1e-9))
    return np.clip((features - center) / scale, -5, 5), np.clip((query - center) / scale, -5, 5)


def rank_knn(table: Table, query: Any, k: int = K_NEIGHBORS) -> Ranked:
    import numpy as np

    scaled, q = _scaled(table.features, query)
    distance = np.sqrt(((scaled - q) ** 2).mean(axis=1))
    nearest = np.argsort(distance, kind="stable")[:k]
    weights = np.zeros(len(table.datasets))
    weights[nearest] = 1.0 / (distance[nearest] + 0.1)
    mean = shrunk_mean(table.regret, weights / weights.sum() * len(nearest))
    order = [int(j) for j in np.argsort(mean, kind="stable")]
    return Ranked(order, [float(mean[j]) for j in order], [(int(i), float(distance[i])) for i in nearest])


RANKERS = {"knn": rank_knn_auto, "portfolio": rank_portfolio}


def query_vector(table: Table, features: Mapping[str, float]) -> Any:
    import numpy as np

    return np.array([float(features.get(n, 0.0)) for n in table.feature_names])


# --- leave-one-dataset-out evaluation --------------------------------------------------------------


@dataclass
class Evaluation:
    task: str
    n_datasets: int
    n_configs: int
    rows: dict[str, dict[str, float]]  # recommender -> mean_regret, top3_regret, hit_at_1


def evaluate(table: Table, *, rf_default_key: str | None = None, seed: int = 0, draws: int = 200) -> Evaluation:
    """For each dataset, recommend from the others' records only; score the pick by the dataset's own regret."""
    import numpy as np

    results: dict[str, list[tuple[float, float, float]]] = {
        name: [] for name in (*RANKERS, "rf_defaults", "random", "hindsight")}
    # Not a recommender: the configurations best on average over all datasets, the held-out one included.
    # Leaving a dataset out biases best-on-average against it when its top configurations are nearly tied
    # (a configuration that does well on d loses rank exactly when d is held out), so this is the fair
    # yardstick for "one good default".
    hindsight = [int(j) for j in np.argsort(shrunk_mean(table.regret, np.ones(len(table.datasets))), kind="stable")]
    rng = np.random.default_rng(seed)
    # Its hyperparameters, whatever the preprocessing (scaling does nothing to a forest): model part of the key.
    rf_model = (rf_default_key or "").split("|", 1)[0]
    rf = next((j for j, c in enumerate(table.configs) if c["key"] == rf_default_key), None)
    if rf is None:
        rf = next((j for j, c in enumerate(table.configs) if c["key"].split("|", 1)[0] == rf_model), None)
    evaluated_on = 0
    for d in range(len(table.datasets) if len(table.datasets) >= 3 else 0):  # the rest must still compare datasets
        truth = table.regret[d]
        candidates = np.flatnonzero(~np.isnan(truth))
        if len(candidates) < 2:
            continue
        evaluated_on += 1
        rest = table.without(d)
        for name, ranker in RANKERS.items():
            ranked = [j for j in ranker(rest, table.features[d]).order if j in set(candidates)]
            results[name].append(_pick_scores(truth, ranked))
        if rf is not None and rf in candidates:
            others = [j for j in rank_portfolio(rest).order if j in set(candidates) and j != rf]
            results["rf_defaults"].append(_pick_scores(truth, [rf, *others]))
        results["hindsight"].append(_pick_scores(truth, [j for j in hindsight if j in set(candidates)]))
        picks = [_pick_scores(truth, list(rng.permutation(candidates))) for _ in range(draws)]
        results["random"].append(tuple(np.mean(picks, axis=0)))
    rows = {}
    for name, values in results.items():
        if values:
            arr = np.array(values)
            rows[name] = {"mean_regret": float(arr[:, 0].mean()), "top3_regret": float(arr[:, 1].mean()),
                          "hit_at_1": float(arr[:, 2].mean()), "n": len(values)}
    return Evaluation(table.task, evaluated_on, len(table.configs), rows)


def _pick_scores(truth: Any, ranked: list[int]) -> tuple[float, float, float]:
    """Regret of the first pick, best regret among the first three, and whether the first pick is the best."""
    first = float(truth[ranked[0]])
    top3 = float(min(truth[j] for j in ranked[:3]))
    return first, top3, float(first == 0.0)


def rf_default_key(task: str) -> str | None:
    """The configuration key of the packaged random forest with its defaults and the default learner."""
    from expt.core.config import compose, resolve_values
    from expt.meta.features import model_features

    try:
        composed = compose(["model=random_forest", f"data.task={task}"])
        values = resolve_values(composed.cfg)
    except Exception:  # noqa: BLE001 - without it the baseline is left out, not the evaluation
        return None
    return model_features(values)["config_key"]


def check_records(records: list[dict[str, Any]], task: str | None = None) -> None:
    """One clear line when there is nothing to learn from."""
    if not records:
        raise UsageError("no records to learn from: every `expt train` and `expt sweep` appends to records.jsonl "
                         "(tracking.records), and the shipped knowledge base is rebuilt with `make kb`; "
                         "pass --records PATH_OR_URI to read others")
    if task is not None and not any(r["dataset"]["task"] == task for r in records):
        have = sorted({r["dataset"]["task"] for r in records})
        raise UsageError(f"the records cover {' and '.join(have)} tasks only, not {task}; run some {task} "
                         "experiments first (expt train ...) or pass --records with records that do")
