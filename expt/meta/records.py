"""Records: one per evaluated configuration on a dataset, the memory ``expt recommend`` learns from.

A record holds the dataset (name, fingerprint, task, meta-features), the model
(family, resolved hyperparameters, preprocessing), the metric and its direction, the
scores, the runs it came from, timestamps and the ``expt`` version, under a schema
version. They are JSON lines in an append-only file: appends take an exclusive lock
and go out in one write followed by fsync, and a line cut short by a crash (the
only way a torn line can exist) is cut off before the next append and skipped by
readers, so a record is either whole or absent. Nothing here unpickles anything.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from expt.core.errors import UsageError
from expt.core.settings import Config, Search
from expt.tracking.tags import RECORDS_TAG

if TYPE_CHECKING:
    from optuna import Study
    from sklearn.pipeline import Pipeline

    from expt.core.cv import CVResult
    from expt.core.data import Dataset
    from expt.core.folds import Folds
    from expt.core.prepare import Prepared

SCHEMA = 1
ARTIFACT = "records.jsonl"  # the records of a run, logged with it in MLflow
REQUIRED = ("schema", "id", "created", "expt_version", "dataset", "meta_features", "model", "metric", "scores",
            "score", "source")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_record(*, record_id: str, dataset: Dataset, meta_features: Mapping[str, float], model: Mapping[str, Any],
                config: Mapping[str, Any], metric: str, scores: Sequence[float | None], evaluation: str, seed: int,
                source: Mapping[str, Any], protocol: Mapping[str, Any] | None = None,
                fit_seconds: float | None = None) -> dict[str, Any]:
    """A record as the schema has it; a score None or not finite is a failed fold's (null in the record).

    ``protocol`` says how the scores were measured ({"kind": "cv", "folds": 5, "repeats": 1} for train,
    {"kind": "inner", "folds": 3} for a sweep's final search; ``split``: ``grouped`` or ``time`` and ``split_by``,
    the column, where the rows were not shuffled, see :func:`split_protocol`): tables never mix them.
    ``fit_seconds``: mean seconds per fit, for ``expt recommend --max-fit-seconds``. Both are optional keys of
    schema 1: records without them read as shuffled train CV with the folds their scores show, and no fit time.
    """
    import numpy as np

    from expt import __version__
    from expt.meta.dataset_features import VERSION

    finite = [float(s) for s in scores if s is not None and np.isfinite(s)]
    return {
        "schema": SCHEMA,
        "id": record_id,
        "created": now(),
        "expt_version": __version__,
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint, "task": dataset.task,
                    "target": dataset.target, "n_rows": dataset.n_rows, "n_features": int(dataset.X.shape[1]),
                    "n_classes": dataset.n_classes},
        "meta_features": dict(meta_features),
        "meta_features_version": VERSION,
        "model": dict(model),
        "config": dict(config),
        "metric": {"name": metric, "direction": "maximize"},  # scikit-learn scorers: greater is better
        "scores": [float(s) if s is not None and np.isfinite(s) else None for s in scores],  # a failed fold: null
        "score": float(np.mean(finite)) if finite else None,
        "score_std": float(np.std(finite)) if finite else None,
        "evaluation": evaluation,
        "protocol": dict(protocol) if protocol else None,
        "fit_seconds": float(fit_seconds) if fit_seconds is not None and np.isfinite(fit_seconds) else None,
        "seed": int(seed),
        "source": dict(source),
    }


def check_record(record: object) -> str | None:
    """What is wrong with a record, or None; readers skip records that fail."""
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    if record["schema"] != SCHEMA:
        return f"schema {record['schema']!r}, this expt reads schema {SCHEMA}"
    if record["score"] is None:
        return "no finite score"
    if record["dataset"].get("task") not in ("classification", "regression"):
        return "unknown task"
    return None


class RecordStore:
    """An append-only JSON-lines file of records."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def append(self, records: Iterable[Mapping[str, Any]], *, skip_existing: bool = True) -> int:
        """Append whole records under an exclusive lock; returns how many were written (ids already there skipped)."""
        import fcntl

        records = list(records)
        if not records:
            return 0
        for record in records:
            problem = check_record(record)
            if problem:
                raise ValueError(f"refusing to write record {record.get('id')!r}: {problem}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            _cut_torn_tail(fd)
            if skip_existing:  # written with sorted keys, so an id has one spelling in the file
                data = _read_all(fd)
                records = [r for r in records if f'"id": {json.dumps(r["id"])}'.encode() not in data]
            if records:
                data = "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in records).encode()
                os.write(fd, data)
                os.fsync(fd)
            return len(records)
        finally:
            os.close(fd)  # releases the lock

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as fh:
            return parse_records(fh.read())


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _cut_torn_tail(fd: int) -> None:
    """A last line without its newline was cut short by a crash: drop it, so the next record starts on a line."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0:
        return
    os.lseek(fd, size - 1, os.SEEK_SET)
    if os.read(fd, 1) == b"\n":
        return
    data = _read_all(fd)
    os.ftruncate(fd, data.rfind(b"\n") + 1)


def parse_records(data: bytes) -> list[dict[str, Any]]:
    """Whole, valid records; a torn last line and records of another schema are skipped.

    orjson reads them: 10,000 records (22 MB) took 0.91 s with the json module, 0.40 s with orjson,
    the larger part of `expt recommend`'s latency budget of 1 s. Writing stays with json (its spacing
    is what ``append`` searches for ids).
    """
    import orjson

    out = []
    lines = data.split(b"\n")
    for line in lines[:-1]:  # the piece after the last newline is empty, or torn
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except ValueError:  # orjson.JSONDecodeError is one
            continue
        if check_record(record) is None:
            out.append(record)
    return out


def default_kb_path() -> Path:
    """The knowledge base shipped with expt (``expt/kb/``; see recipes/kb/DATASETS.md for what it covers).

    Found by its path, not by importing :mod:`expt.kb`, whose builder sits above this layer."""
    return Path(__file__).resolve().parents[1] / "kb" / "records.jsonl.gz"


def read_kb() -> list[dict[str, Any]]:
    """The shipped knowledge base: from its packed form where that was packed from this very file
    (:mod:`expt.meta.packed`, a tenth of the parsing), else from the records file itself."""
    import gzip

    from expt.meta.packed import packed_path, unpack

    path = default_kb_path()
    if not path.is_file():
        return []
    source = path.read_bytes()
    packed = packed_path(path)
    if packed.is_file():
        records = unpack(packed.read_bytes(), source)
        if records is not None:
            return records
    return parse_records(gzip.decompress(source))


def _read_gzip(path: Path) -> list[dict[str, Any]]:
    import gzip

    with gzip.open(path, "rb") as fh:
        return parse_records(fh.read())


def read_records(sources: Iterable[str], *, kb: bool = True) -> list[dict[str, Any]]:
    """Records from JSON-lines files, folders of them, and MLflow tracking URIs; plus the shipped knowledge base."""
    records = read_kb() if kb else []
    for source in sources:
        records.extend(_read_source(source))
    seen, out = set(), []
    for record in records:
        if record["id"] not in seen:
            seen.add(record["id"])
            out.append(record)
    return out


def _read_source(source: str) -> list[dict[str, Any]]:
    if "://" in source:
        return read_mlflow(source)
    path = Path(source).expanduser()
    if path.is_dir():
        return [r for f in sorted(path.glob("*.jsonl")) for r in RecordStore(f).read()]
    if path.is_file():
        return _read_gzip(path) if path.suffix == ".gz" else RecordStore(path).read()
    raise UsageError(f"records source {source!r} is not a file, a folder or a tracking URI; check --records")


def read_mlflow(uri: str) -> list[dict[str, Any]]:
    """The ``records.jsonl`` artifacts of the runs in a tracking store that logged records."""
    import tempfile

    from expt.core.errors import TrackingError
    from expt.tracking.uri import open_client

    client = open_client(uri, missing="check --records (a records file, a folder or a tracking URI)")
    uri = client.tracking_uri
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(experiments, f"tags.`{RECORDS_TAG}` != ''", max_results=50_000) if experiments else []
    except Exception as exc:  # noqa: BLE001 - any store error means the same here
        from expt.tracking.uri import mask_credentials

        raise TrackingError(f"cannot read records from {mask_credentials(uri)}: {str(exc).splitlines()[0][:200]}; "
                            "check --records") from None
    out = []
    with tempfile.TemporaryDirectory(prefix="expt-records-") as tmp:
        for run in runs:
            try:
                path = client.download_artifacts(run.info.run_id, ARTIFACT, tmp)
            except Exception:  # noqa: BLE001, S112 - a run whose artifact is gone has no records to give
                continue
            with open(path, "rb") as fh:
                out.extend(parse_records(fh.read()))
    return out


# --- building records from runs ----------------------------------------------------------------

_FEATURES: dict[tuple[str, int], dict[str, float]] = {}


def features_of(dataset: Dataset, seed: int) -> dict[str, float]:
    """Meta-features, once per dataset content and seed in a process (a knowledge-base build trains many configs)."""
    from expt.meta.dataset_features import dataset_features

    key = (dataset.fingerprint, seed)
    if key not in _FEATURES:
        _FEATURES[key] = dataset_features(dataset, seed=seed)
    return _FEATURES[key]


def runnable_config(config: Config, choices: Mapping[str, str | None]) -> dict[str, Any]:
    """What a recommendation needs to write a config ``expt train`` runs: the model option and its values."""
    return {"model_option": choices.get("model", config.model.name), "model": config.model.as_dict(),
            "preprocessing": config.learner.preprocessing.as_dict()}


def fitted_model(cv: CVResult) -> Pipeline | None:
    """The first fitted fold model of a cross-validation (``return_models=True`` keeps them), or None."""
    return next((f.model for f in cv.folds if f.error is None and f.model is not None), None)


def train_record(prepared: Prepared, cv: CVResult, model: Pipeline | None = None) -> dict[str, Any]:
    """The record of a train run, made before its run exists (:mod:`expt.train.process` opens the run in another
    process): :func:`with_source` gives it its run.

    Its ``n_parameters`` is counted on ``model``, the refit final model, when the run made one (it does with
    ``tracking.log_model``); otherwise on the first fitted fold model ``cv`` kept, which saw (k-1)/k of the rows:
    the same count, a little smaller for a model that grows with the rows (trees, neighbours, support vectors).
    With neither, it is None.
    """
    import numpy as np

    from expt.meta.model_features import model_features

    config = prepared.config
    folds, repeats = config.learner.cv.folds, config.learner.cv.repeats
    fits = [f.fit_time for f in cv.folds if f.error is None]
    fitted = model if model is not None else fitted_model(cv)
    return make_record(
        record_id="train/", dataset=prepared.dataset, meta_features=features_of(prepared.dataset, config.seed),
        model=model_features(config, fitted if fitted is not None else prepared.pipeline),
        config=runnable_config(config, prepared.choices), metric=prepared.metric, scores=cv.scores,
        seed=config.seed,
        evaluation=f"{folds}-fold CV" + (f" x{repeats}" if repeats > 1 else "") + split_text(prepared.folds),
        protocol={"kind": "cv", "folds": folds, "repeats": repeats, **split_protocol(prepared.folds)},
        fit_seconds=float(np.mean(fits)) if fits else None,
        source={"kind": "train"})


def split_protocol(folds: Folds | None) -> dict[str, Any]:
    """The protocol's keys for folds that were not shuffled (``split``, ``split_by``, ``gap``); none for shuffled
    ones, so that a shuffled record reads as every record before kinds existed (absent means shuffled)."""
    return {} if folds is None or folds.split == "shuffled" else folds.protocol()


def split_text(folds: Folds | None) -> str:
    return "" if folds is None or folds.split == "shuffled" else f", {folds.describe()}"


def with_source(record: dict[str, Any], run_id: str, experiment_id: str, uri: str) -> dict[str, Any]:
    """A record made before its run existed (:func:`train_record`), given the run it belongs to: its id and its
    ``source``."""
    from expt.tracking.uri import mask_credentials

    source = {**record["source"], "run_id": run_id, "experiment_id": experiment_id,
              "tracking_uri": mask_credentials(uri)}
    return {**record, "id": f"{source['kind']}/{run_id}", "source": source}


class _Plan(Protocol):
    """What records read of a sweep's plan (``expt.sweep.plan.SweepPlan``, in a layer above this one)."""

    @property
    def prepared(self) -> Prepared: ...

    @property
    def settings(self) -> Search: ...

    @property
    def seed(self) -> int: ...

    def config_for(self, params: Mapping[str, Any]) -> Config: ...


class SweepRef(Protocol):
    """What records read of a sweep (``expt.sweep.attach.Sweep``, in a layer above this one)."""

    @property
    def sweep_id(self) -> str: ...

    @property
    def plan(self) -> _Plan: ...

    @property
    def studies(self) -> Mapping[str, Study]: ...

    @property
    def choices(self) -> Mapping[str, str]: ...


def sweep_records(sweep: SweepRef, uri: str) -> list[dict[str, Any]]:
    """One record per completed trial of the final search: an inner-CV score of a configuration on all the data.

    Trials of the outer folds saw part of the data only, so their scores do not
    compare with other records' scores on the whole dataset; they are left out.
    Meta-features are filled in by the sink process (``expt.sweep.sink``), off the sweep's critical path, and so is
    the final model's ``n_parameters`` (on the record of the trial it was refit from). Every other trial's
    ``n_parameters`` is its ``n_parameters`` user attribute: the size of its first inner-fold model, set by the
    objective (:meth:`expt.sweep.plan.SweepPlan.objective`). A trial's fit time is its duration per inner fold
    (fitting and scoring: an upper bound).
    """
    from optuna.trial import TrialState

    from expt.meta.model_features import model_features
    from expt.tracking.uri import mask_credentials

    plan = sweep.plan
    inner = plan.settings.inner_folds
    out = []
    for trial in sweep.studies["final"].get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        config = plan.config_for(trial.params)
        choices = {**sweep.choices, "model": trial.params.get("model", sweep.choices.get("model"))}
        size = trial.user_attrs.get("n_parameters")
        out.append(make_record(
            record_id=f"sweep/{sweep.sweep_id}/final/{trial.number}", dataset=plan.prepared.dataset,
            meta_features={}, model={**model_features(config), "n_parameters": int(size) if size is not None else None},
            config=runnable_config(config, choices),
            metric=plan.prepared.metric, scores=trial.user_attrs.get("inner_scores", [trial.value]), seed=plan.seed,
            evaluation=f"{inner}-fold CV{split_text(plan.prepared.folds)} (final search of a sweep)",
            protocol={"kind": "inner", "folds": inner, **split_protocol(plan.prepared.folds)},
            fit_seconds=trial.duration.total_seconds() / inner if trial.duration else None,
            source={"kind": "sweep", "sweep_id": sweep.sweep_id, "trial": trial.number,
                    "tracking_uri": mask_credentials(uri)}))
    return out
