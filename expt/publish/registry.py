"""``expt register``, and what every ``--model`` names: a run's model, or a version in MLflow's model registry.

A model reference is what a user has at hand: a run id from ``expt train``'s table (a train run's
model, a sweep's ``final`` model), ``runs:/ID/model``, or ``models:/NAME@alias`` / ``models:/NAME/3``
from the registry. Each is checked before anything is read or written, so a wrong one is one line.
The registry lives in the tracking store (a SQLite file or a tracking server alike).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from expt.core.errors import TrackingError, UsageError
from expt.tracking.tags import (
    DATA_TAG,
    FINAL_RUN,
    FINGERPRINT_TAG,
    FOLD_RUN,
    MODEL_TAG,
    OUTER_FOLD_RUN,
    PARENT_TAG,
    RUN_ID_TAG,
    RUN_TYPE_TAG,
    SWEEP_ID_TAG,
    SWEEP_RUN,
    TRIAL_RUN,
    tag_filter,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

MODEL_PATH = "model"
RUN_ID = re.compile(r"[0-9a-f]{32}")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\- ]{0,199}")
ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,254}")


@dataclass
class ModelRef:
    """A loadable model: its URI, the run it came from (when known) and how to say it."""

    uri: str
    run_id: str | None
    label: str


def get_run(client: MlflowClient, run_id: str) -> Run:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            raise UsageError(f"no run {run_id!r} in {_shown(client)}; list runs with `expt runs`") from None
        raise TrackingError(f"cannot read run {run_id!r}: {str(exc).splitlines()[0][:200]}") from None


def _shown(client: MlflowClient) -> str:
    from expt.tracking.uri import mask_credentials

    return mask_credentials(client.tracking_uri)


def children(client: MlflowClient, run: Run) -> list[Run]:
    return client.search_runs([run.info.experiment_id], tag_filter(PARENT_TAG, run.info.run_id),
                              max_results=5000)


def model_run(client: MlflowClient, run: Run) -> Run:
    """The run that holds the model a run stands for: a train run itself, a sweep's ``final`` run; a fold or
    trial leads to the train or sweep run above it."""
    kind = run.data.tags.get(RUN_TYPE_TAG)
    if kind in (FOLD_RUN, OUTER_FOLD_RUN, TRIAL_RUN):
        parent = run.data.tags.get(PARENT_TAG)
        return model_run(client, get_run(client, parent)) if parent else run
    if kind == SWEEP_RUN:
        final = next((c for c in children(client, run) if c.data.tags.get(RUN_TYPE_TAG) == FINAL_RUN), None)
        if final is None:
            raise UsageError(f"sweep run {run.info.run_id} has no final run (the sweep did not finish); continue it "
                             f"with expt sweep --resume {run.data.tags.get(SWEEP_ID_TAG, 'ID')}")
        return final
    return run


def has_model(client: MlflowClient, run_id: str) -> bool:
    return any(a.path == MODEL_PATH for a in client.list_artifacts(run_id))


def resolve_model(client: MlflowClient, ref: str) -> ModelRef:
    """A ``--model`` value, checked: the run or registry entry exists and holds a model."""
    ref = ref.strip()
    if ref.startswith("models:/"):
        return _registered(client, ref)
    if ref.startswith("runs:/"):
        run_id, _, path = ref[len("runs:/"):].partition("/")
        run = get_run(client, run_id)
        if path and not any(a.path == path for a in client.list_artifacts(run_id)):
            raise UsageError(f"run {run_id} has no artifact {path!r}; its model is runs:/{run_id}/{MODEL_PATH}")
        return ModelRef(ref if path else f"runs:/{run_id}/{MODEL_PATH}", run.info.run_id, ref)
    if not RUN_ID.fullmatch(ref):
        raise UsageError(f"--model {ref!r} is neither a run id nor runs:/ID/model nor models:/NAME@alias; pass one "
                         "of those (expt runs lists run ids)")
    run = model_run(client, get_run(client, ref))
    if not has_model(client, run.info.run_id):
        raise UsageError(f"run {run.info.run_id} logged no model (tracking.log_model=false); train again with "
                         "tracking.log_model=true, or name another run")
    return ModelRef(f"runs:/{run.info.run_id}/{MODEL_PATH}", run.info.run_id, ref)


def _registered(client: MlflowClient, ref: str) -> ModelRef:
    from mlflow.exceptions import MlflowException

    rest = ref[len("models:/"):]
    name, at, alias = rest.partition("@")
    if not at:
        name, _, version = rest.partition("/")
    try:
        found = client.get_model_version_by_alias(name, alias) if at else client.get_model_version(name, version)
    except MlflowException:
        what = f"alias {alias!r}" if at else f"version {version!r}"
        raise UsageError(f"no registered model {name!r} with {what} in {_shown(client)}; register one with "
                         f"expt register RUN_ID --name {name}{' --alias ' + alias if at else ''}") from None
    return ModelRef(ref, found.run_id or None, f"{name} version {found.version}")


@dataclass
class Registered:
    name: str
    version: str
    alias: str | None
    source: str
    run_id: str


def register(client: MlflowClient, ref: str, name: str, alias: str | None = None) -> Registered:
    """A new version of registered model ``name`` from a run's model (created if new), and ``alias`` on it."""
    if not MODEL_NAME.fullmatch(name or ""):
        raise UsageError(f"--name {name!r} is not a model name (letters, digits, '_', '-', '.', space; up to 200); "
                         "pass e.g. --name iris-classifier")
    if alias is not None and (not ALIAS.fullmatch(alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+",
                                                                                                        alias)):
        raise UsageError(f"--alias {alias!r} is not an alias (letters, digits, '_' and '-', not 'latest' or "
                         "v<number>); pass e.g. --alias champion")
    model = resolve_model(client, ref)
    if model.uri.startswith("models:/") or model.run_id is None:
        raise UsageError(f"{ref} is already a registered model; register a run (its id or runs:/ID/model)")
    run = get_run(client, model.run_id)
    _create_model(client, name)
    tags = {k: v for k, v in {RUN_ID_TAG: run.info.run_id, DATA_TAG: run.data.tags.get(DATA_TAG),
                              MODEL_TAG: run.data.tags.get(MODEL_TAG),
                              FINGERPRINT_TAG: run.data.tags.get(FINGERPRINT_TAG)}.items()
            if v}
    version = client.create_model_version(name, model.uri, run_id=run.info.run_id, tags=tags)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return Registered(name, str(version.version), alias, model.uri, run.info.run_id)


def _create_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="registered by expt register")
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code) and "already exists" not in str(exc):
            raise TrackingError(f"cannot register model {name!r}: {str(exc).splitlines()[0][:200]}") from None
