"""``expt report``: what a train run or a sweep found, as one document a person can read and send.

Everything comes from what the run logged (params, metrics, tags, ``config.yaml``,
``records.jsonl``, ``plots/``), read through ``MlflowClient``, so a SQLite file and a tracking
server give the same report; nothing is recomputed. The HTML is self-contained (styles inline,
images as data URIs), so it opens from a mail or an offline disk; the Markdown twin carries the
same sections, its images as reference-style data URIs at the end. Both files are written
whole or not at all, and ``report.html`` and ``report.md`` are logged with the run.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.errors import UsageError
from expt.core.schema import RESERVED_TAG_PREFIXES
from expt.publish.registry import children, get_run
from expt.tracking.tags import (
    BEST_TRIAL_TAG,
    DATA_TAG,
    ERROR_TAG,
    FAMILY_TAG,
    FINAL_RUN,
    FINGERPRINT_TAG,
    FOLD_TAG,
    FOLDS_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    METRIC_TAG,
    MODEL_TAG,
    NOTE_TAG,
    OUTER_FOLD_RUN,
    OUTER_FOLD_TAG,
    PARENT_TAG,
    PYTHON_TAG,
    RERUN_OF_TAG,
    RESUMES_TAG,
    RUN_TYPE_TAG,
    SEED_TAG,
    SWEEP_ID_TAG,
    SWEEP_RUN,
    TOP_LEVEL_RUNS,
    TRAIN_RUN,
    TRIAL_NUMBER_TAG,
    TRIAL_STATE_TAG,
    TRUSTED_TAG,
    USER_TAG,
    VERSION_TAG,
    WARM_START_TAG,
    WORKERS_TAG,
    package_tag,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

SHOWN_PACKAGES = ("scikit-learn", "numpy", "pandas", "torch", "mlflow", "optuna", "hydra-core")


@dataclass
class Written:
    html: Path
    markdown: Path
    logged: str | None


def top_run(client: MlflowClient, run: Run) -> Run:
    """A fold, outer fold or trial leads to the train or sweep run above it."""
    seen = set()
    while run.data.tags.get(RUN_TYPE_TAG) not in TOP_LEVEL_RUNS:
        parent = run.data.tags.get(PARENT_TAG)
        if not parent or parent in seen:
            raise UsageError(f"run {run.info.run_id} was not made by expt train or expt sweep; report on one of those "
                             "(expt runs lists them)")
        seen.add(parent)
        run = get_run(client, parent)
    return run


def _artifact_text(client: MlflowClient, run_id: str, path: str) -> str | None:
    with tempfile.TemporaryDirectory(prefix="expt-report-") as tmp:
        try:
            return Path(client.download_artifacts(run_id, path, tmp)).read_text(encoding="utf-8")
        except Exception:  # noqa: BLE001 - a missing artifact reads the same from any store
            return None


def _images(client: MlflowClient, run_id: str, prefix: str = "", folder: str = "plots",
            label: str = "") -> list[dict[str, str]]:
    """The run's ``plots/*.png`` (or another folder's) as data URIs, in name order; ``label`` starts the captions."""
    try:
        listed = [a.path for a in client.list_artifacts(run_id, folder) if a.path.endswith(".png")]
    except Exception:  # noqa: BLE001
        return []
    out = []
    with tempfile.TemporaryDirectory(prefix="expt-report-") as tmp:
        for path in sorted(listed):
            local = Path(client.download_artifacts(run_id, path, tmp))
            data = base64.b64encode(local.read_bytes()).decode("ascii")
            name = Path(path).stem
            out.append({"key": f"{prefix}{name}", "title": f"{label}{name.replace('_', ' ')}",
                        "uri": f"data:image/png;base64,{data}"})
    return out


def _record(client: MlflowClient, run_id: str) -> dict[str, Any] | None:
    text = _artifact_text(client, run_id, "records.jsonl")
    if not text:
        return None
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    # A sweep's records are its final search's trials: the best one is the trial the final model was refit from.
    return max(records, key=lambda r: float("-inf") if r.get("score") is None else r["score"]) if records else None


def collect(client: MlflowClient, run_id: str) -> dict[str, Any]:
    """Everything the report shows, as plain data (also what the tests read)."""
    import yaml

    from expt.tracking.uri import mask_credentials

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per downloaded plot, on stderr
    run = top_run(client, get_run(client, run_id))
    rid = run.info.run_id
    config_text = _artifact_text(client, rid, "config.yaml")
    if config_text is None:
        raise UsageError(f"run {rid} has no config.yaml artifact, which the report is made from; its artifacts are "
                         "missing or it was not made by expt train or expt sweep")
    config = yaml.safe_load(config_text) or {}
    kind = run.data.tags[RUN_TYPE_TAG]
    metric = _metric(run, config, kind)
    kids = children(client, run)
    report = {"kind": kind, "run_id": rid, "name": run.info.run_name, "status": run.info.status,
              "started": run.info.start_time, "ended": run.info.end_time, "metric": metric,
              "config": mask_credentials(config_text), "user": run.data.tags.get(USER_TAG, "unknown"),
              "description": run.data.tags.get(NOTE_TAG), "user_tags": _user_tags(run),
              "data": config.get("data", {}), "record": _record(client, rid), "params": dict(run.data.params),
              "glance": _glance(run, config, metric, kind), "lineage": _lineage(run, kind),
              "plots": _images(client, rid), "uri": mask_credentials(client.tracking_uri)}
    if kind == TRAIN_RUN:
        report["folds"] = _train_folds(kids, metric)
        report["metrics"] = _metric_summary(run, metric)
    else:
        report.update(_sweep(client, run, kids, metric))
    return report


def _metric(run: Run, config: dict[str, Any], kind: str) -> str:
    task = config.get("data", {}).get("task")
    named = run.data.tags.get(METRIC_TAG) or config.get("learner", {}).get("metric", {}).get(task, "")
    metrics = run.data.metrics
    prefix = "outer_" if kind == SWEEP_RUN else ""
    for candidate in (named, "roc_auc_ovr" if named == "roc_auc" else None):
        if candidate and f"{prefix}{candidate}_mean" in metrics:
            return candidate
    return named or next((k[len(prefix):-5] for k in metrics if k.startswith(prefix) and k.endswith("_mean")), "?")


def _glance(run: Run, config: dict[str, Any], metric: str, kind: str) -> dict[str, Any]:
    m = run.data.metrics
    key = f"outer_{metric}" if kind == SWEEP_RUN else metric
    learner = config.get("learner", {})
    cv = learner.get("cv", {})
    search = config.get("search", {})
    protocol = (f"nested CV: {search.get('outer_folds')} outer x {search.get('inner_folds')} inner folds, "
                f"{search.get('n_trials')} trials per search ({search.get('sampler')} sampler)" if kind == SWEEP_RUN
                else f"{cv.get('folds')}-fold CV" + (f" x{cv['repeats']}" if cv.get("repeats", 1) > 1 else ""))
    return {"data": run.data.tags.get(DATA_TAG), "model": run.data.tags.get(MODEL_TAG),
            "family": run.data.tags.get(FAMILY_TAG) or config.get("model", {}).get("family"),
            "task": config.get("data", {}).get("task"), "metric": metric, "estimate": m.get(f"{key}_mean"),
            "spread": m.get(f"{key}_std"), "inner": m.get(f"inner_best_{metric}_mean"), "protocol": protocol,
            "seed": config.get("seed")}


def _user_tags(run: Run) -> dict[str, str]:
    return {k: v for k, v in sorted(run.data.tags.items()) if not k.startswith(RESERVED_TAG_PREFIXES)}


def _lineage(run: Run, kind: str) -> dict[str, Any]:
    tags = run.data.tags
    trusted = [p for p in tags.get(TRUSTED_TAG, "").split(",") if p]
    command = f"expt rerun {run.info.run_id}" + "".join(f" --trust-target {p}" for p in trusted)
    packages = {name: tags[package_tag(name)] for name in SHOWN_PACKAGES if package_tag(name) in tags}
    out = {"git commit": tags.get(GIT_COMMIT_TAG, "none"), "uncommitted changes": tags.get(GIT_DIRTY_TAG),
           "data fingerprint": tags.get(FINGERPRINT_TAG), "expt": tags.get(VERSION_TAG),
           "python": tags.get(PYTHON_TAG), "seed": tags.get(SEED_TAG), "packages": packages,
           "rerun": command, "check": command + " --check", "rerun of": tags.get(RERUN_OF_TAG)}
    if kind == SWEEP_RUN:
        out.update({"sweep id": tags.get(SWEEP_ID_TAG), "folds hash": tags.get(FOLDS_TAG),
                    "workers": tags.get(WORKERS_TAG), "resumes": tags.get(RESUMES_TAG),
                    "warm start": tags.get(WARM_START_TAG)})
    return {k: v for k, v in out.items() if v not in (None, "", {})}


def _metric_summary(run: Run, metric: str) -> list[dict[str, Any]]:
    m = run.data.metrics
    names = sorted({k[:-5] for k in m if k.endswith("_mean") and f"{k[:-5]}_std" in m and not k.startswith(
        ("train_", "fit_time", "outer_", "inner_"))}, key=lambda n: (n != metric, n))
    return [{"metric": n, "mean": m[f"{n}_mean"], "std": m[f"{n}_std"], "selects": n == metric} for n in names]


def _train_folds(kids: list[Run], metric: str) -> list[dict[str, Any]]:
    rows = []
    for run in sorted(kids, key=lambda r: int(r.data.tags.get(FOLD_TAG, 0))):
        m = run.data.metrics
        scores = {k: v for k, v in m.items() if k not in ("fit_time", "score_time") and not k.startswith("train_")}
        rows.append({"fold": int(run.data.tags.get(FOLD_TAG, 0)), "status": run.info.status, "scores": scores,
                     f"train {metric}": m.get(f"train_{metric}"), "fit s": m.get("fit_time"),
                     "n train": run.data.params.get("n_train"), "n test": run.data.params.get("n_test"),
                     "error": run.data.tags.get(ERROR_TAG)})
    return rows


def _sweep(client: MlflowClient, run: Run, kids: list[Run], metric: str) -> dict[str, Any]:
    """The outer folds and final search, each search's history, and the outer folds' own plots."""
    units, plots, history = [], [], {}
    order = sorted(kids, key=lambda r: (r.data.tags.get(RUN_TYPE_TAG) == FINAL_RUN,
                                        int(r.data.tags.get(OUTER_FOLD_TAG, 0))))
    for unit in order:
        if unit.data.tags.get(RUN_TYPE_TAG) not in (OUTER_FOLD_RUN, FINAL_RUN):
            continue
        m, name = unit.data.metrics, unit.info.run_name
        trials = children(client, unit)
        units.append({"unit": name, "status": unit.info.status, "outer": m.get(f"outer_{metric}"),
                      "inner best": m.get(f"inner_best_{metric}"), "best trial": unit.data.tags.get(BEST_TRIAL_TAG),
                      "trials": int(m.get("n_done", len(trials))), "pruned": int(m.get("n_pruned", 0)),
                      "failed": int(m.get("n_failed", 0)),
                      "best params": {k[5:]: v for k, v in sorted(unit.data.params.items()) if k.startswith("best.")},
                      "other metrics": {k[6:]: v for k, v in sorted(m.items())
                                        if k.startswith("outer_") and k != f"outer_{metric}"}})
        history[name] = sorted(({"trial": int(t.data.tags.get(TRIAL_NUMBER_TAG, -1)),
                                 "state": t.data.tags.get(TRIAL_STATE_TAG, t.info.status),
                                 "score": t.data.metrics.get(f"inner_{metric}_mean"), "params": dict(t.data.params)}
                                for t in trials), key=lambda t: t["trial"])
        if unit.data.tags.get(RUN_TYPE_TAG) == OUTER_FOLD_RUN:
            plots += _images(client, unit.info.run_id, prefix=f"{name}-", label=f"{name}: ")
    pooled = _images(client, run.info.run_id, prefix="pooled-", folder="outer_plots", label="all outer folds: ")
    return {"units": units, "history": history, "fold_plots": pooled + plots}


def write_report(client: MlflowClient, run_id: str, out: Path | None, *, log: bool = True) -> Written:
    """Collect, render, write both files atomically, then log them with the run."""
    from expt.publish.render import render_html, render_markdown

    data = collect(client, run_id)
    html, markdown = render_html(data), render_markdown(data)
    target = Path(out) if out is not None else Path(f"report-{data['run_id'][:8]}.html")
    if target.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out {str(target)!r} must name an .html file (the Markdown twin goes beside it)")
    if not target.parent.is_dir():
        raise UsageError(f"--out {str(target)!r}: folder {str(target.parent)!r} does not exist; create it first")
    md_target = target.with_suffix(".md")
    _write_both([(target, html), (md_target, markdown)])
    logged = None
    if log:
        with tempfile.TemporaryDirectory(prefix="expt-report-") as tmp:
            for name, text in (("report.html", html), ("report.md", markdown)):
                Path(tmp, name).write_text(text, encoding="utf-8")
                client.log_artifact(data["run_id"], str(Path(tmp, name)))
        logged = f"runs:/{data['run_id']}/report.html"
    return Written(target, md_target, logged)


def _write_both(files: list[tuple[Path, str]]) -> None:
    """Each into a temporary file beside its target, then renamed: no half-written report, even on Ctrl-C."""
    staged = []
    try:
        for target, text in files:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
            staged.append(tmp)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 is for secrets; a report is shared
        for (target, _text), tmp in zip(files, staged, strict=True):
            os.replace(tmp, target)
    finally:
        for tmp in staged:
            Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
