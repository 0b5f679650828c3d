"""``expt runs``, ``expt show`` and ``expt compare``: the tracking store read from the terminal.

Everything goes through ``MlflowClient``, so a SQLite file and a tracking server
read the same. Each returns plain data (``--json`` prints it as is); ``expt.cli.render``
draws the tables.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from expt.core.errors import UsageError
from expt.tracking.tags import (
    DATA_TAG,
    FINAL_RUN,
    FINGERPRINT_TAG,
    FOLD_RUN,
    FOLDS_TAG,
    GIT_COMMIT_TAG,
    METRIC_TAG,
    MODEL_TAG,
    OUTER_FOLD_RUN,
    PARENT_TAG,
    RERUN_OF_TAG,
    RUN_TYPE_TAG,
    SEED_TAG,
    SWEEP_ID_TAG,
    TOP_LEVEL_RUNS,
    TRIAL_STATE_TAG,
    VERSION_TAG,
    tag_filter,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

SKIP_METRIC_PREFIXES = ("train_", "fit_time", "score_time", "n_")


def headline(run: Run) -> tuple[str | None, float | None, float | None]:
    """The score a run is known by: a sweep's outer mean (unbiased), a train run's CV mean, a trial's inner mean."""
    metrics = run.data.metrics
    skip = (*SKIP_METRIC_PREFIXES, "inner_best")
    means = sorted(k for k in metrics if k.endswith("_mean") and not k.startswith(skip))
    # A run logs several metrics; the one that selects (the ``expt.metric`` tag) comes first within each kind.
    selecting = run.data.tags.get(METRIC_TAG)
    if selecting:
        means.sort(key=lambda k: k not in (f"{selecting}_mean", f"outer_{selecting}_mean", f"inner_{selecting}_mean"))
    for choose in (lambda k: k.startswith("outer_"), lambda k: not k.startswith(("outer_", "inner_")),
                   lambda k: k.startswith("inner_")):
        key = next((k for k in means if choose(k)), None)
        if key is not None:
            return key, metrics[key], metrics.get(key[:-len("_mean")] + "_std")
    return None, None, None


def summary(run: Run) -> dict[str, Any]:
    tags = run.data.tags
    metric, value, std = headline(run)
    start = run.info.start_time
    end = run.info.end_time
    return {
        "run_id": run.info.run_id, "name": run.info.run_name, "type": tags.get(RUN_TYPE_TAG, "-"),
        "data": tags.get(DATA_TAG, "-"), "model": tags.get(MODEL_TAG, "-"), "status": run.info.status,
        "metric": metric, "value": value, "std": std,
        "started": dt.datetime.fromtimestamp(start / 1000).strftime("%Y-%m-%d %H:%M") if start else None,
        "duration_s": (end - start) / 1000 if start and end else None,
        "sweep_id": tags.get(SWEEP_ID_TAG), "rerun_of": tags.get(RERUN_OF_TAG),
    }


def list_runs(client: MlflowClient, *, experiment: str | None, data: str | None, model: str | None, sort: str | None,
              limit: int, all_types: bool = False) -> list[dict[str, Any]]:
    """Train and sweep runs (``all_types``: folds and trials too), best first when sorted by a metric."""
    experiments = _experiments(client, experiment)
    clauses = [tag_filter(key, value) for key, value in ((DATA_TAG, data), (MODEL_TAG, model)) if value]
    kinds = [None] if all_types else list(TOP_LEVEL_RUNS)  # MLflow's filter has no IN for tags: one search each
    runs: list[Run] = []
    for kind in kinds:
        where = " and ".join(clauses + ([tag_filter(RUN_TYPE_TAG, kind)] if kind else []))
        runs += client.search_runs(experiments, where, max_results=limit if not sort else 50_000,
                                   order_by=["attributes.start_time DESC"])
    runs.sort(key=lambda r: -(r.info.start_time or 0))
    rows = [summary(r) for r in runs]
    if sort:
        known = {k for r in runs for k in r.data.metrics}
        if sort not in known:
            raise UsageError(f"--sort {sort!r} is not a metric of these runs; try one of: {', '.join(sorted(known))}")
        values = {r.info.run_id: r.data.metrics.get(sort) for r in runs}
        rows.sort(key=lambda row: (values[row["run_id"]] is None, -(values[row["run_id"]] or 0.0)))
        for row in rows:
            row["metric"], row["value"] = sort, values[row["run_id"]]
    return rows[:limit]


def _experiments(client: MlflowClient, name: str | None) -> list[str]:
    if name is None:
        return [e.experiment_id for e in client.search_experiments()]
    found = client.get_experiment_by_name(name)
    if found is None:
        names = ", ".join(e.name for e in client.search_experiments())
        raise UsageError(f"no experiment {name!r} in {client.tracking_uri}; there are: {names or 'none'}")
    return [found.experiment_id]


def show_run(client: MlflowClient, run: Run) -> dict[str, Any]:
    """A run's config, metrics, fold scores and a summary of its children."""
    children = client.search_runs([run.info.experiment_id], tag_filter(PARENT_TAG, run.info.run_id),
                                  max_results=10_000)
    kinds: dict[str, dict[str, int]] = {}
    for child in children:
        kind = child.data.tags.get(RUN_TYPE_TAG, "-")
        state = child.data.tags.get(TRIAL_STATE_TAG) or child.info.status
        kinds.setdefault(kind, {})
        kinds[kind][state] = kinds[kind].get(state, 0) + 1
    folds = []
    for child in sorted(children, key=lambda c: c.info.run_name or ""):
        if child.data.tags.get(RUN_TYPE_TAG) in (FOLD_RUN, OUTER_FOLD_RUN, FINAL_RUN):
            scores = {k: v for k, v in child.data.metrics.items() if not k.startswith(SKIP_METRIC_PREFIXES)}
            folds.append({"name": child.info.run_name, "status": child.info.status, "scores": scores,
                          "run_id": child.info.run_id})
    return {**summary(run), "params": dict(sorted(run.data.params.items())), "metrics": dict(sorted(
        run.data.metrics.items())), "tags": {k: v for k, v in sorted(run.data.tags.items()) if k.startswith("expt.")},
        "children": kinds, "folds": folds, "experiment_id": run.info.experiment_id}


def compare_runs(a: Run, b: Run) -> dict[str, Any]:
    """The params that differ and every metric side by side, with the difference."""
    pa, pb = a.data.params, b.data.params
    params = [{"key": k, "a": pa.get(k), "b": pb.get(k)} for k in sorted(pa.keys() | pb.keys())
              if pa.get(k) != pb.get(k)]
    ma, mb = a.data.metrics, b.data.metrics
    metrics = []
    for key in sorted(ma.keys() | mb.keys()):
        x, y = ma.get(key), mb.get(key)
        metrics.append({"key": key, "a": x, "b": y, "diff": (y - x) if x is not None and y is not None else None})
    tags = [{"key": k, "a": a.data.tags.get(k), "b": b.data.tags.get(k)} for k in
            (DATA_TAG, MODEL_TAG, FINGERPRINT_TAG, FOLDS_TAG, GIT_COMMIT_TAG,
             SEED_TAG, VERSION_TAG)
            if a.data.tags.get(k) != b.data.tags.get(k)]
    return {"a": summary(a), "b": summary(b), "params": params, "metrics": metrics, "tags": tags}
