"""``expt rerun``: run again what a logged run ran, say what drifted, and whether the scores match.

The logged ``config.yaml`` is untrusted input (anyone with write access to the store
could have edited it): it goes through ``compose`` and ``prepare`` like a user's file,
so the ``_target_`` allow-list applies before anything is built. Before running, the
run's code, data and environment are compared with now; a dataset whose fingerprint
changed stops the rerun unless ``--allow-data-drift``, since its scores could not match.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from expt.core.errors import DataError, TrackingError, UsageError

TOP_LEVEL = ("train", "sweep")


def get_run(client: Any, run_id: str) -> Any:
    """The run, or one line saying it is not there; a fold or trial leads to the train or sweep run above it."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            raise UsageError(f"no run {run_id!r} in {client.tracking_uri}; list runs with `expt runs`") from None
        raise TrackingError(f"cannot read run {run_id!r}: {str(exc).splitlines()[0][:200]}") from None
    return run


def top_run(client: Any, run: Any) -> Any:
    seen = set()
    while run.data.tags.get("expt.run_type") not in TOP_LEVEL:
        parent = run.data.tags.get("mlflow.parentRunId")
        if not parent or parent in seen:
            raise UsageError(f"run {run.info.run_id} was not made by expt train or expt sweep; nothing to re-run")
        seen.add(parent)
        run = get_run(client, parent)
    return run


def download_text(client: Any, run: Any, path: str) -> str | None:
    with tempfile.TemporaryDirectory(prefix="expt-rerun-") as tmp:
        try:
            local = client.download_artifacts(run.info.run_id, path, tmp)
        except Exception:  # noqa: BLE001 - a missing artifact reads the same from any store
            return None
        return Path(local).read_text(encoding="utf-8")


@dataclass
class Drift:
    what: str
    then: str
    now: str

    @property
    def changed(self) -> bool:
        return self.then != self.now


def drift_report(run: Any, fingerprint: str, lock_then: str | None) -> list[Drift]:
    """Code, data and environment of the logged run against this machine now."""
    from expt import __version__
    from expt.tracking.environment import KEY_PACKAGES, environment_lock, git_state, read_lock

    tags = run.data.tags
    commit, dirty = git_state()
    rows = [Drift("git commit", tags.get("expt.git_commit", "?"), commit),
            Drift("uncommitted changes", tags.get("expt.git_dirty", "?"), dirty),
            Drift("dataset fingerprint", tags.get("expt.dataset_fingerprint", "?"), fingerprint),
            Drift("expt", tags.get("expt.version", "?"), __version__),
            Drift("python", tags.get("expt.python", "?"), _python())]
    for name in KEY_PACKAGES:
        try:
            now = metadata.version(name)
        except metadata.PackageNotFoundError:
            now = "-"
        rows.append(Drift(name, tags.get(f"expt.pkg.{name}", "-"), now))
    if lock_then is not None:
        then, current = read_lock(lock_then), read_lock(environment_lock())
        changed = sorted(n for n in then.keys() | current.keys() if then.get(n) != current.get(n))
        rows.append(Drift("other packages", f"{len(then)} installed", f"{len(changed)} differ" if changed else
                          f"{len(then)} installed"))
        key_names = set(read_lock("\n".join(f"{k}==0" for k in KEY_PACKAGES)))  # normalized like the lock's
        for name in [n for n in changed if n not in key_names][:10]:
            rows.append(Drift(f"  {name}", then.get(name, "-"), current.get(name, "-")))
    return rows


def _python() -> str:
    import platform

    return platform.python_version()


@dataclass
class Rerun:
    original: Any  # the logged run
    kind: str  # train | sweep
    composed: Any
    drift: list[Drift]


def plan_rerun(client: Any, run_id: str, overrides: list[str], uri: str, *, allow_data_drift: bool) -> Rerun:
    """Everything before running: the run, its config composed and checked, the drift report."""
    from expt.core.config import compose

    run = top_run(client, get_run(client, run_id))
    text = download_text(client, run, "config.yaml")
    if text is None:
        raise UsageError(f"run {run.info.run_id} has no config.yaml artifact (not made by expt, or its artifacts "
                         "were deleted); it cannot be re-run")
    with tempfile.TemporaryDirectory(prefix="expt-rerun-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text)
        composed = compose([f"conf={path}", *overrides, *_tracking_defaults(overrides, uri)])
    kind = run.data.tags["expt.run_type"]
    fingerprint = _fingerprint(composed)
    report = drift_report(run, fingerprint, download_text(client, run, "environment.txt"))
    data_row = next(r for r in report if r.what == "dataset fingerprint")
    if data_row.changed and not allow_data_drift:
        raise DataError(f"the data of run {run.info.run_id} changed (fingerprint {data_row.then} -> {data_row.now}); "
                        "scores cannot match: restore the data, or pass --allow-data-drift to run anyway")
    return Rerun(run, kind, composed, report)


def _tracking_defaults(overrides: list[str], uri: str) -> list[str]:
    """The rerun goes to the store the run came from, unless the overrides say otherwise."""
    return [] if any(o.startswith("tracking.uri=") for o in overrides) else [f"tracking.uri={uri}"]


def _fingerprint(composed: Any) -> str:
    from expt.core.prepare import prepare

    return prepare(composed).dataset.fingerprint


@dataclass
class Match:
    metric: str
    then: float | None
    now: float | None

    @property
    def same(self) -> bool:
        return self.then is not None and self.now is not None and self.then == self.now


def sweep_run_id(uri: str, sweep_id: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, f"tags.`expt.sweep_id` = '{sweep_id}' and tags.`expt.run_type` = 'sweep'",
                               max_results=1)
    if not found:
        raise TrackingError(f"the sweep {sweep_id} ran but its MLflow run is not in {uri}")
    return found[0].info.run_id


def compare_scores(client: Any, original: Any, new_run_id: str, kind: str, *,
                   original_client: Any = None) -> list[Match]:
    """Per-fold (train) or per-outer-fold (sweep) scores and their summary, logged vs new, compared exactly."""
    new = client.get_run(new_run_id)
    rows = []
    for key, value in sorted(original.data.metrics.items()):
        if key.endswith(("_mean", "_std")) and not key.startswith(("fit_time", "train_")):
            rows.append(Match(key, value, new.data.metrics.get(key)))
    prefix = "outer_" if kind == "sweep" else ""
    then = _child_scores(original_client or client, original, prefix)
    now = _child_scores(client, new, prefix)
    rows += [Match(k, then.get(k), now.get(k)) for k in sorted(then.keys() | now.keys())]
    return rows


def _child_scores(client: Any, run: Any, prefix: str) -> dict[str, float]:
    """Scores of a run's direct children (folds of a train run, outer folds of a sweep) by child name."""
    out = {}
    children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'",
                                  max_results=1000)
    for child in children:
        for key, value in child.data.metrics.items():
            wanted = key.startswith(prefix) if prefix else not key.startswith(("train_", "fit_", "score_"))
            if wanted:
                out[f"{child.info.run_name} {key}"] = value
    return out
