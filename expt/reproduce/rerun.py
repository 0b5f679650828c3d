"""``expt rerun``: run again what a logged run ran, say what drifted, and whether the scores match.

The logged ``config.yaml`` is untrusted input (anyone with write access to the store
could have edited it): it goes through ``compose`` and ``prepare`` like a user's file,
so the ``_target_`` allow-list applies before anything is built. Before running, the
run's code, data and environment are compared with now; a dataset whose fingerprint
changed stops the rerun unless ``--allow-data-drift``, since its scores could not match.

After running, everything the two runs logged that a seed fixes is compared: fold scores,
outer scores, every search's inner best and best parameters, and the final models'
predictions on the dataset. Equal summaries over unequal parts, or equal scores from
unequal models, would let ``--check`` pass on something that changed. Numbers are compared
under the house's float rule (:mod:`expt.core.floats`: relative 1e-9), which tolerates the
last-bit differences another CPU's BLAS makes and nothing a changed prediction makes (one
row of a few hundred moves a score by ~1e-3); labels and parameters that are not numbers
must be equal. What was equal only within the tolerance is said so.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from expt.core.errors import ConfigError, DataError, TrackingError, UsageError
from expt.tracking.tags import (
    FINAL_RUN,
    FINGERPRINT_TAG,
    FOLDS_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    PARENT_TAG,
    PYTHON_TAG,
    RESUMES_TAG,
    RUN_TYPE_TAG,
    SPLIT_TAG,
    SWEEP_ID_TAG,
    SWEEP_RUN,
    TOP_LEVEL_RUNS,
    TRAIN_RUN,
    TRUSTED_TAG,
    VERSION_TAG,
    WARM_START_TAG,
    WORKERS_TAG,
    package_tag,
    tag_filter,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from numpy.typing import ArrayLike
    from sklearn.base import BaseEstimator

    from expt.core.config import Composed
    from expt.core.data import Dataset

    Value = float | str  # a logged metric or a logged parameter


def get_run(client: MlflowClient, run_id: str) -> Run:
    """The run, or one line saying it is not there; a fold or trial leads to the train or sweep run above it."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            raise UsageError(f"no run {run_id!r} in {client.tracking_uri}; list runs with `expt runs`") from None
        raise TrackingError(f"cannot read run {run_id!r}: {str(exc).splitlines()[0][:200]}") from None
    return run


def top_run(client: MlflowClient, run: Run) -> Run:
    seen = set()
    while run.data.tags.get(RUN_TYPE_TAG) not in TOP_LEVEL_RUNS:
        parent = run.data.tags.get(PARENT_TAG)
        if not parent or parent in seen:
            raise UsageError(f"run {run.info.run_id} was not made by expt train or expt sweep; nothing to re-run")
        seen.add(parent)
        run = get_run(client, parent)
    return run


def _quiet_downloads() -> None:
    """MLflow draws a progress bar on stderr per download, even of one small file, between our tables."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def download_text(client: MlflowClient, run: Run, path: str) -> str | None:
    _quiet_downloads()
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


def drift_report(run: Run, fingerprint: str, lock_then: str | None) -> list[Drift]:
    """Code, data and environment of the logged run against this machine now."""
    from expt import __version__
    from expt.tracking.environment import KEY_PACKAGES, environment_lock, git_state, read_lock

    tags = run.data.tags
    commit, dirty = git_state()
    rows = [Drift("git commit", tags.get(GIT_COMMIT_TAG, "?"), commit),
            Drift("uncommitted changes", tags.get(GIT_DIRTY_TAG, "?"), dirty),
            Drift("dataset fingerprint", tags.get(FINGERPRINT_TAG, "?"), fingerprint),
            Drift("expt", tags.get(VERSION_TAG, "?"), __version__),
            Drift("python", tags.get(PYTHON_TAG, "?"), _python())]
    rows += _shape_drift(tags)
    for name in KEY_PACKAGES:
        try:
            now = metadata.version(name)
        except metadata.PackageNotFoundError:
            now = "-"
        rows.append(Drift(name, tags.get(package_tag(name), "-"), now))
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


def _shape_drift(tags: dict[str, str]) -> list[Drift]:
    """What shaped the run besides its config, then and in this rerun ("?": a run older than the tag).

    A sweep's samplers are seeded per worker and per restart and warm-start entries are its first
    trials, so more workers, a --warm-start file or a --resume give other results from the same
    config; a rerun is one worker, no warm start, no resume. The trusted prefixes decide what the
    config may build at all.
    """
    from expt.core.build import trusted_prefixes

    rows = []
    if tags.get(RUN_TYPE_TAG) == SWEEP_RUN:
        rows += [Drift("sweep workers", tags.get(WORKERS_TAG, "?"), "1"),
                 Drift("warm-start input", tags.get(WARM_START_TAG, "?"), "none"),
                 Drift("resumes", tags.get(RESUMES_TAG, "?"), "0")]
    then = tags.get(TRUSTED_TAG)
    rows.append(Drift("trusted prefixes", "?" if then is None else _prefixes(then.split(",")),
                      _prefixes(trusted_prefixes())))
    return rows


def _prefixes(items: list[str]) -> str:
    return ",".join(sorted({p.strip() for p in items if p.strip()})) or "none"


def check_trust(run: Run) -> None:
    """A run made with --trust-target needs it again; say so before its config is read, not as a refused
    target deep in the build (or in a sweep's worker process)."""
    from expt.core.build import trusted_prefixes

    now = trusted_prefixes()
    needed = [p.strip() for p in run.data.tags.get(TRUSTED_TAG, "").split(",") if p.strip()]
    missing = [p for p in dict.fromkeys(needed) if not any(_covers(q, p) for q in now)]
    if missing:
        flags = " ".join(f"--trust-target {p}" for p in missing)
        raise ConfigError(f"this config needs {flags} (run {run.info.run_id} was made with it): "
                          f"pass {flags} if you trust that code")


def _covers(trusted: str, needed: str) -> bool:
    """``mylib`` trusts ``mylib`` and ``mylib.models`` (not ``mylibx``); ``mylib.`` only what is under mylib."""
    if trusted.endswith("."):
        return needed.startswith(trusted)
    return needed == trusted or needed.startswith(trusted + ".")


@dataclass
class Rerun:
    original: Run  # the logged run
    kind: str  # train | sweep
    composed: Composed
    drift: list[Drift]
    dataset: Dataset | None = None  # the data as the rerun loads it: the final models predict on it


def plan_rerun(client: MlflowClient, run_id: str, overrides: list[str], uri: str, *, allow_data_drift: bool,
               check: bool = False) -> Rerun:
    """Everything before running: the run, its config composed and checked, the drift report.

    With ``check``, a run that logged no scores is refused first: there would be nothing to compare.
    """
    from expt.core.config import compose

    run = top_run(client, get_run(client, run_id))
    if check and not logged_scores(client, run):
        raise UsageError(f"run {run.info.run_id} ({run.info.status}) logged no scores, so --check has nothing to "
                         "compare; rerun it without --check, or check a run that finished")
    check_trust(run)
    text = download_text(client, run, "config.yaml")
    if text is None:
        raise UsageError(f"run {run.info.run_id} has no config.yaml artifact (not made by expt, or its artifacts "
                         "were deleted); it cannot be re-run")
    with tempfile.TemporaryDirectory(prefix="expt-rerun-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text)
        composed = compose([f"conf={path}", *overrides, *_tracking_defaults(overrides, uri)])
    kind = run.data.tags[RUN_TYPE_TAG]
    dataset = _dataset(composed, kind)
    report = drift_report(run, dataset.fingerprint, download_text(client, run, "environment.txt"))
    data_row = next(r for r in report if r.what == "dataset fingerprint")
    if data_row.changed and not allow_data_drift:
        raise DataError(f"the data of run {run.info.run_id} changed (fingerprint {data_row.then} -> {data_row.now}); "
                        "scores cannot match: restore the data, or pass --allow-data-drift to run anyway")
    return Rerun(run, kind, composed, report, dataset)


def _tracking_defaults(overrides: list[str], uri: str) -> list[str]:
    """The rerun goes to the store the run came from, unless the overrides say otherwise."""
    return [] if any(o.startswith("tracking.uri=") for o in overrides) else [f"tracking.uri={uri}"]


def _dataset(composed: Composed, kind: str) -> Dataset:
    from expt.core.prepare import prepare

    return prepare(composed, train_folds=kind == TRAIN_RUN).dataset  # a sweep's folds are not learner.cv.folds


@dataclass
class Match:
    """One thing both runs logged: a score, a best parameter, or the final model's predictions (a hash)."""

    what: str
    then: Value | None  # None: the run has none
    now: Value | None
    note: str = ""  # how they differ, where the two values do not say it (predictions: the largest difference)
    extra: bool = False  # only the rerun has it (a metric added since): shown, not compared
    tolerated: bool = False  # predictions whose hashes differ by last bits only (within the float rule)

    @property
    def same(self) -> bool:
        return self.tolerated or (self.then is not None and self.now is not None and _equal(self.then, self.now))

    @property
    def exact(self) -> bool:
        return self.same and not self.tolerated and self.then == self.now


def _equal(a: Value, b: Value) -> bool:
    """Equal under the float rule (:mod:`expt.core.floats`); a NaN (a failed fold's score) equals a NaN."""
    from expt.core.floats import close

    return close(a, b)


def sweep_run_id(uri: str, sweep_id: str) -> str:
    from expt.tracking.uri import new_client

    client = new_client(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    where = f"{tag_filter(SWEEP_ID_TAG, sweep_id)} and {tag_filter(RUN_TYPE_TAG, SWEEP_RUN)}"
    found = client.search_runs(experiments, where, max_results=1)
    if not found:
        raise TrackingError(f"the sweep {sweep_id} ran but its MLflow run is not in {uri}")
    return found[0].info.run_id


def logged_scores(client: MlflowClient, run: Run) -> dict[str, Value]:
    """Every score and search result a train or sweep run logged, by a name that reads in a table.

    Train: the CV summary and each fold's score. Sweep: the outer summary; for each outer fold and the
    final search on all data, the outer score, the inner best and the best parameters (``best.*``).
    Timings, train-part scores and trial counts are left out: they are not what a seed fixes.
    """
    kind = run.data.tags.get(RUN_TYPE_TAG)
    out: dict[str, Value] = {}
    for key, value in sorted(run.data.metrics.items()):
        if key.endswith(("_mean", "_std")) and not key.startswith(("fit_time", "train_")):
            out[key] = value
    for child in sorted(_children(client, run), key=lambda r: _natural(r.info.run_name or "")):
        name = child.info.run_name
        for key, value in sorted(child.data.metrics.items()):
            wanted = key.startswith(("outer_", "inner_best_")) if kind == SWEEP_RUN else \
                not key.startswith(("train_", "fit_", "score_"))
            if wanted:
                out[f"{name} {key}"] = value
        if kind == SWEEP_RUN:
            for key, param in sorted(child.data.params.items()):
                if key.startswith("best."):
                    out[f"{name} {key}"] = param
    return out


def _natural(name: str) -> tuple[str, int]:
    """fold-2 before fold-10; the final search after the outer folds."""
    head, _, tail = name.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (name, -1 if name != "final" else 1 << 30)


def _children(client: MlflowClient, run: Run) -> list[Run]:
    return client.search_runs([run.info.experiment_id], tag_filter(PARENT_TAG, run.info.run_id),
                              max_results=1000)


def compare_scores(client: MlflowClient, original: Run, new_run_id: str, kind: str, *,
                   original_client: MlflowClient | None = None, X: pd.DataFrame | None = None) -> list[Match]:
    """Everything :func:`logged_scores` finds, logged vs new, compared exactly; with ``X``, the final models'
    predictions on it too. The new run is read through ``client``, the logged one through ``original_client``
    (a rerun may log to another store)."""
    new = client.get_run(new_run_id)
    then = logged_scores(original_client or client, original)
    now = logged_scores(client, new)
    # What the logged run has is compared; what only the rerun has (a metric a newer expt logs by default,
    # or one the rerun added) cannot drift, so it is listed apart rather than failing the check.
    rows = [Match(k, then[k], now.get(k)) for k in then]
    rows += [Match(k, None, now[k], extra=True) for k in now if k not in then]
    rows += folds_matches(original, new)
    if X is not None:
        rows += compare_models(original_client or client, original, client, new, X)
    return rows


def folds_matches(original: Run, new: Run) -> list[Match]:
    """The folds of both runs: how the rows were split (a run older than the tag: shuffled, as every run was)
    and, where the logged run has it, the fold manifest's hash. The same scores on other folds would be luck."""

    then, now = original.data.tags, new.data.tags
    rows = [Match("folds", then.get(SPLIT_TAG, "shuffled"), now.get(SPLIT_TAG, "shuffled"))]
    if FOLDS_TAG in then:
        rows.append(Match("folds hash", then[FOLDS_TAG], now.get(FOLDS_TAG)))
    return rows


def compare_models(client_a: MlflowClient, run_a: Run, client_b: MlflowClient, run_b: Run,
                   X: pd.DataFrame) -> list[Match]:
    """The final models' predictions on the dataset: a hash of each, and how far apart they are when they differ.

    Equal scores do not make equal models (accuracy is blind to most changes of a model), and the model is
    what a run hands on. Probabilities too where both models give them: labels hide small changes.
    Loading a logged model unpickles it (cloudpickle format): like ``mlflow.sklearn.load_model``, only for
    a store you trust.
    """
    a, why_a = _final_model(client_a, run_a)
    b, why_b = _final_model(client_b, run_b)
    if a is None and b is None and not why_a and not why_b:
        return []  # neither run logged a model (tracking.log_model=false)
    why_a, why_b = why_a or ("no model" if a is None else ""), why_b or ("no model" if b is None else "")
    rows = []
    for what, method in (("model predictions", "predict"), ("model probabilities", "predict_proba")):
        if method == "predict_proba" and not (hasattr(a, method) and hasattr(b, method)):
            continue
        pa, err_a = _predict(a, method, X)
        pb, err_b = _predict(b, method, X)
        note = "; ".join(f"{side}: {why}" for side, why in (("logged", why_a or err_a), ("rerun", why_b or err_b))
                         if why)
        tolerated = False
        if pa is not None and pb is not None and _digest(pa) != _digest(pb):
            note, tolerated = _difference(pa, pb), _within_tolerance(pa, pb)
        rows.append(Match(what, None if pa is None else _digest(pa), None if pb is None else _digest(pb), note,
                          tolerated=tolerated))
    return rows


def _final_model(client: MlflowClient, run: Run) -> tuple[BaseEstimator | None, str]:
    """The run's logged final model (a sweep's is on its ``final`` run) and, if it has one it cannot load, why."""
    import logging

    if run.data.tags.get(RUN_TYPE_TAG) == SWEEP_RUN:
        final = next((c for c in _children(client, run) if c.data.tags.get(RUN_TYPE_TAG) == FINAL_RUN), None)
        if final is None:
            return None, "no final run"
        run = final
    if not any(a.path == "model" for a in client.list_artifacts(run.info.run_id)):
        return None, ""
    import mlflow.sklearn

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    _quiet_downloads()
    try:
        with tempfile.TemporaryDirectory(prefix="expt-rerun-") as tmp:
            return mlflow.sklearn.load_model(client.download_artifacts(run.info.run_id, "model", tmp)), ""
    except Exception as exc:  # noqa: BLE001 - any failure means the same here: the model cannot be compared
        return None, f"cannot load its model ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"


def _predict(model: BaseEstimator | None, method: str, X: pd.DataFrame) -> tuple[np.ndarray | None, str]:
    if model is None:
        return None, ""
    try:
        return getattr(model, method)(X), ""
    except Exception as exc:  # noqa: BLE001 - a model that cannot predict on the data differs from one that can
        return None, f"{method} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"


def _digest(values: ArrayLike) -> str:
    """A content hash of predictions: dtype, shape and every value (labels as text when they are not numbers)."""
    import hashlib

    import numpy as np

    arr = np.asarray(values)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes() if arr.dtype.kind in "biufc" else
             "\x1f".join(map(str, arr.ravel())).encode())
    return h.hexdigest()[:12]


def _within_tolerance(a: ArrayLike, b: ArrayLike) -> bool:
    """Numeric predictions of one shape equal under the float rule (another CPU's last bits): labels never are."""
    import numpy as np

    from expt.core.floats import ATOL, RTOL

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype.kind not in "fc" or b.dtype.kind not in "fc":
        return False
    return bool(np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True))


def _difference(a: ArrayLike, b: ArrayLike) -> str:
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return f"shapes {a.shape} vs {b.shape}"
    rows = (a != b).reshape(len(a), -1).any(axis=1) if a.ndim else np.asarray([a != b])
    differ = f"{int(rows.sum())} of {len(rows)} rows differ"
    if a.dtype.kind in "biuf" and b.dtype.kind in "biuf":
        return f"max |diff| {float(np.max(np.abs(a.astype(float) - b.astype(float)))):.6g}; {differ}"
    return differ
