"""The records as a table the recommenders learn from: evaluation units by configurations, in normalized regret.

Scores of different datasets do not compare (0.9 accuracy is poor on one, excellent on
another), so the recommenders (:mod:`expt.meta.rankers`) and their evaluation
(:mod:`expt.meta.evaluate`) work on normalized regret: on a row d,
t_d(c) = clip((best_d - s_d(c)) / (best_d - med_d), 0, 1) over the configurations evaluated on d.

A row is a dataset under one evaluation protocol: 5-fold CV scores of ``expt train`` and
3-fold inner-CV scores of a sweep's final search are not the same measurement (fewer rows
to train on, other splits), and neither are scores on a capped subsample of a table (the
knowledge base cuts tables to ``max_rows`` rows) and scores on the whole table, nor on
subsamples of different sizes; so they are never averaged into one cell nor normalized
against each other: a dataset with several has a row for each (:func:`protocol_key`).
Each row belongs to a group (related tables: ``dataset.group`` of its records, else the
``group`` key of recipes/kb/datasets.yaml, else the dataset's name); evaluation leaves
whole groups out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.errors import UsageError

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Table:
    """Records of one task and metric as arrays: rows (dataset x protocol) by configurations."""

    task: str
    metric: str
    datasets: list[dict[str, Any]]  # fingerprint, name, group, protocol, n_rows (the table's), fit_rows (one fit's)
    configs: list[dict[str, Any]]  # key, the record's model and runnable config
    features: np.ndarray  # rows x meta-features, finite
    feature_names: list[str]
    scores: np.ndarray  # rows x configurations, NaN where not evaluated
    # rows x configurations: mean seconds per fit (on the row's fit_rows), NaN: not on record; None (all NaN)
    # is filled in by __post_init__, so the field is an array whenever it is read
    fit_seconds: np.ndarray = None  # type: ignore[assignment]
    fold_scores: dict[tuple[int, int], tuple[float, ...]] = field(default_factory=dict)  # (row, config): per-fold
    regret: np.ndarray = field(init=False)
    spread: np.ndarray = field(init=False)  # per row: the score difference of regret 1 (best - median, or estimated)

    thin: np.ndarray = field(init=False)  # per row: too few configurations for its own median (see table_regret)

    def __post_init__(self) -> None:
        import numpy as np

        self.regret, self.spread, self.thin = table_regret(self.scores)
        if self.fit_seconds is None:
            self.fit_seconds = np.full(self.scores.shape, np.nan)

    @property
    def groups(self) -> list[str]:
        return [d["group"] for d in self.datasets]


def normalized_regret(scores: np.ndarray) -> np.ndarray:
    """Per row: clip((best - s) / (best - median), 0, 1); NaN stays NaN."""
    import numpy as np

    if scores.size == 0:
        return scores.copy()
    with np.errstate(all="ignore"):
        best = np.nanmax(scores, axis=1, keepdims=True)
        med = np.nanmedian(scores, axis=1, keepdims=True)
        spread = best - med
        regret = np.where(spread > 1e-12, (best - scores) / np.where(spread > 1e-12, spread, 1.0),
                          np.where(scores >= best - 1e-12, 0.0, 1.0))
    return np.where(np.isnan(scores), np.nan, np.clip(regret, 0.0, 1.0))


THIN_SHARE = 0.5  # a row with fewer configurations than this share of the fullest row's is thin
MIN_DENSE = 3  # dense rows needed to anchor thin ones; with fewer, every row is normalized on its own


def table_regret(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalized regret per row, each row's spread (the score difference that is regret 1), and which rows are thin.

    A row that evaluated most of the portfolio (a dense row: at least THIN_SHARE of the fullest row's count) is
    normalized on its own, as :func:`normalized_regret` says. A thin row (a probe's K configurations, a few train
    runs) cannot be: its configurations were picked for being good, so best - median over them is a fraction of
    best - median over the portfolio, and every regret in it would come out inflated (the probe's third-best of 5
    at regret 1, "as bad as the median", when it is better than most of the portfolio). So a thin row keeps its own
    best (regret 0) and its own score differences, and takes its scale from the dense rows: with t_c the mean
    regret of c over the dense rows and c* the row's best, spread = sum_c (best - s_c) / sum_c max(t_c - t_c*, 0)
    over its configurations with dense evidence (the ratio estimate of the scale in s_c = best - spread (t_c - t_c*)),
    and never below the row's own best - median (which bounds the portfolio's from below when the picks beat the
    median). Then its configurations' regrets average about what the dense rows say they do, and only their order
    and relative gaps are the row's own evidence. Where there are fewer than MIN_DENSE dense rows, or the estimate
    has nothing to stand on (fewer than 2 configurations with dense evidence, or none expected worse than the best),
    the row is normalized on its own, as before.
    """
    import warnings

    import numpy as np

    regret = normalized_regret(scores)
    n_rows = scores.shape[0]
    with np.errstate(all="ignore"):
        best = np.nanmax(scores, axis=1) if scores.size else np.zeros(n_rows)
        spread = best - (np.nanmedian(scores, axis=1) if scores.size else np.zeros(n_rows))
    counts = (~np.isnan(scores)).sum(axis=1)
    thin = counts < THIN_SHARE * (counts.max() if n_rows else 0)
    if thin.any() and (~thin).sum() >= MIN_DENSE:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice": a column no dense row has
            typical = np.nanmean(np.where(thin[:, None], np.nan, regret), axis=0)  # NaN: no dense evidence
        for i in np.flatnonzero(thin):
            seen = ~np.isnan(scores[i]) & ~np.isnan(typical)
            top = int(np.nanargmax(scores[i])) if counts[i] else -1
            if seen.sum() < 2 or top < 0 or np.isnan(typical[top]):
                continue
            expected = np.maximum(typical[seen] - typical[top], 0.0).sum()
            if expected <= 1e-9:
                continue
            scale = max(float((best[i] - scores[i, seen]).sum() / expected), float(spread[i]), 1e-12)
            spread[i] = scale
            regret[i] = np.where(np.isnan(scores[i]), np.nan, np.clip((best[i] - scores[i]) / scale, 0.0, 1.0))
    return regret, spread, thin


# --- protocols, groups, metrics ----------------------------------------------------------------------

_EVALUATION = re.compile(r"(\d+)-fold CV(?: x(\d+))?")


def protocol_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record's protocol, with ``n_rows`` (the rows its scores saw) and ``subsample`` (how they were drawn
    from the table, or None for the whole table).

    A record from before protocols were recorded is what its text and source say (a sweep's final search: inner
    CV; anything else: train CV, with the folds its scores show). Without a recorded ``n_rows`` (train and sweep
    records), the scores saw the whole table: the dataset's ``n_rows``. Without a ``split``, its rows were
    shuffled (records before grouped and time-ordered folds existed, and every shuffled record since).
    """
    protocol = record.get("protocol")
    if isinstance(protocol, dict) and protocol.get("kind"):
        out = dict(protocol)
    else:
        match = _EVALUATION.match(str(record.get("evaluation", "")))
        n_scores = len(record.get("scores") or []) or 1
        folds = int(match.group(1)) if match else n_scores
        if (record.get("source") or {}).get("kind") == "sweep":
            out = {"kind": "inner", "folds": folds}
        else:
            out = {"kind": "cv", "folds": folds, "repeats": int(match.group(2) or 1) if match else 1}
    table = (record.get("dataset") or {}).get("n_rows")
    if out.get("n_rows") is None:
        out["n_rows"] = table
    if "subsample" not in out:
        out["subsample"] = "subsample" if table is not None and out["n_rows"] < table else None
    out.setdefault("split", "shuffled")
    return out


def protocol_key(protocol: Mapping[str, Any]) -> str:
    """A protocol as one comparable string: ``cv 5x1``, ``inner 3``, ``cv 3x1 on 3000 rows (stratified, seed 0)``.

    The rows (and how they were drawn, and the seed) are part of it where the scores saw a subsample of the table
    (a protocol with a row cap below the table's size, as the knowledge base's): scores on 3,000 sampled rows, on
    5,000, and on the whole table are three measurements. The cap itself (``max_rows``) is not part of it: caps
    at or above a table's size give the same measurement on it (every row, the same folds).
    Grouped and time-ordered folds (``split``) measure something else than shuffled ones on the same table (a
    model's score on new groups, on the future): ``cv 5x1, grouped by site``, never one row with shuffled scores.
    """
    if protocol.get("kind") == "cv":
        key = f"cv {protocol.get('folds')}x{protocol.get('repeats', 1)}"
    else:
        key = f"{protocol.get('kind')} {protocol.get('folds')}"
    if protocol.get("subsample"):
        seed = f", seed {protocol['seed']}" if protocol.get("seed") is not None else ""
        key += f" on {protocol.get('n_rows')} rows ({protocol['subsample']}{seed})"
    split = protocol.get("split") or "shuffled"
    if split != "shuffled":
        gap = f" (gap {protocol['gap']})" if protocol.get("gap") else ""
        key += f", {split} by {protocol.get('split_by')}{gap}"
    return key


def fit_rows(protocol: Mapping[str, Any]) -> float | None:
    """Rows one fit of the protocol trained on: ``n_rows`` x (folds - 1) / folds for k-fold CV (train CV and a
    sweep's inner CV alike); None where the rows are unknown."""
    rows, folds = protocol.get("n_rows"), protocol.get("folds")
    if rows is None:
        return None
    if isinstance(folds, int) and folds >= 2:
        return rows * (folds - 1) / folds
    return float(rows)


def kb_groups() -> dict[str, str]:
    """Dataset name -> group from recipes/kb/datasets.yaml (a checkout has it; an installed wheel does not, and a
    rebuilt knowledge base carries the group in its records)."""
    if _GROUPS is None:
        _load_groups()
    return _GROUPS or {}


_GROUPS: dict[str, str] | None = None


def _load_groups() -> None:
    global _GROUPS
    import yaml

    path = Path(__file__).resolve().parents[2] / "recipes" / "kb" / "datasets.yaml"
    _GROUPS = {}
    try:
        entries = yaml.safe_load(path.read_text()) if path.is_file() else []
    except (OSError, yaml.YAMLError):
        entries = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("group") and entry.get("name"):
            _GROUPS[str(entry["name"])] = str(entry["group"])


def choose_metric(records: Iterable[Mapping[str, Any]], task: str, metric: str | None = None) -> str | None:
    """The one metric a table is built on; several without ``metric`` is an error that names them, not a choice
    made silently (a user's f1_macro records must not vanish behind the knowledge base's accuracy)."""
    counts: dict[str, int] = {}
    for r in records:
        if r["dataset"]["task"] == task:
            counts[r["metric"]["name"]] = counts.get(r["metric"]["name"], 0) + 1
    if metric is not None:
        if metric not in counts:
            have = ", ".join(f"{m} ({n})" for m, n in sorted(counts.items())) or "none"
            raise UsageError(f"no {task} records under metric {metric!r}; the {task} records have: {have}; "
                             "pass one of those to --metric")
        return metric
    if len(counts) > 1:
        have = ", ".join(f"{m} ({n} records)" for m, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        raise UsageError(f"the {task} records use {len(counts)} metrics, which do not rank together: {have}; "
                         f"choose one with --metric {min(counts, key=lambda m: counts[m])} (--no-kb leaves "
                         "out the knowledge base's)")
    return next(iter(counts), None)


# --- the table ---------------------------------------------------------------------------------------


def build_table(records: Iterable[Mapping[str, Any]], task: str, *, metric: str | None = None,
                exclude: Iterable[str] = ()) -> Table:
    """Rows (dataset, protocol) by configurations; repeated evaluations of a configuration in a row averaged.

    The records' per-fold scores are kept by cell (``Table.fold_scores``, sparse: a user's many one-off sweep
    configurations would make a dense rows x configurations x folds array large), so that the evaluation can
    estimate how noisy a row's scores are (:mod:`expt.meta.noise`); a cell evaluated twice keeps both records' folds.

    ``exclude``: dataset fingerprints left out (the query's own, so that its recommendations were not chosen
    on the data they will be tested on). Features come from the first record of a dataset.
    """
    import numpy as np

    from expt.meta.dataset_features import VERSION

    records = [r for r in records if r["dataset"]["task"] == task and r.get("meta_features_version") == VERSION
               and r["meta_features"]]
    metric = choose_metric(records, task, metric)
    excluded, groups = set(exclude), kb_groups()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    cols: dict[str, dict[str, Any]] = {}
    cells: dict[tuple[tuple[str, str], str], list[float]] = {}
    folds: dict[tuple[tuple[str, str], str], list[float]] = {}
    times: dict[tuple[tuple[str, str], str], list[float]] = {}
    for r in records:
        data = r["dataset"]
        if r["metric"]["name"] != metric or data["fingerprint"] in excluded:
            continue
        protocol = protocol_of(r)
        row, key = (data["fingerprint"], protocol_key(protocol)), r["model"]["config_key"]
        if row not in rows:
            rows[row] = {"fingerprint": data["fingerprint"], "name": data["name"], "protocol": row[1],
                         "group": str(data.get("group") or groups.get(data["name"]) or data["name"]),
                         "n_rows": data.get("n_rows"), "fit_rows": fit_rows(protocol), "features": r["meta_features"]}
        cols.setdefault(key, {"key": key, "model": r["model"], "config": r.get("config", {})})
        cells.setdefault((row, key), []).append(r["score"])
        folds.setdefault((row, key), []).extend(float(v) for v in r.get("scores") or () if v is not None)
        if r.get("fit_seconds") is not None:
            times.setdefault((row, key), []).append(r["fit_seconds"])
    if not rows:
        return Table(task, metric or "", [], [], np.zeros((0, 0)), [], np.zeros((0, 0)))
    names = sorted({k for row in rows.values() for k in row["features"]})
    row_keys, keys = list(rows), list(cols)
    features = np.array([[rows[rk]["features"].get(n, 0.0) for n in names] for rk in row_keys], dtype=float)
    scores = np.full((len(row_keys), len(keys)), np.nan)
    seconds = np.full_like(scores, np.nan)
    index = {k: j for j, k in enumerate(keys)}
    rows_of = {rk: i for i, rk in enumerate(row_keys)}
    for (rk, key), values in cells.items():  # plain sums: a numpy mean per cell was half the table's time
        scores[rows_of[rk], index[key]] = sum(values) / len(values)
    for (rk, key), values in times.items():
        seconds[rows_of[rk], index[key]] = sum(values) / len(values)
    per_fold = {(rows_of[rk], index[key]): tuple(values) for (rk, key), values in folds.items() if values}
    datasets = [{k: v for k, v in rows[rk].items() if k != "features"} for rk in row_keys]
    assert metric is not None  # a record matched it
    return Table(task, metric, datasets,
 [cols[k] for k in keys], np.nan_to_num(features), names, scores, seconds,
                 per_fold)


def query_vector(table: Table, features: Mapping[str, float]) -> np.ndarray:
    import numpy as np

    return np.array([float(features.get(n, 0.0)) for n in table.feature_names])


def rf_default_key(task: str) -> str | None:
    """The configuration key of the packaged random forest with its defaults and the default learner."""
    from expt.core.config import compose, resolve_values
    from expt.core.settings import settings_of
    from expt.meta.model_features import model_features

    try:
        composed = compose(["model=random_forest", f"data.task={task}"])
        values = resolve_values(composed.cfg)
    except Exception:  # noqa: BLE001 - without it the baseline is left out, not the evaluation
        return None
    return model_features(settings_of(values))["config_key"]


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
