"""`expt rerun --check` means exact: every fold and outer score, each search's best parameters and inner best, and
the final model's predictions, against real SQLite stores; and what shaped a sweep is stored and reported."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from helpers import all_runs, train
from mlflow import MlflowClient
from typer.testing import CliRunner

from expt.cli import app
from expt.core.config import compose
from expt.sweep.runner import SweepOptions, run_sweep

TINY_SWEEP = ("data=iris", "model=knn", "search.n_trials=2", "search.outer_folds=2", "search.inner_folds=2")


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def rows(output: str) -> dict[str, str]:
    """The results table's rows: name -> the whole line, for the rows that say same or differs."""
    out = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if len(cells) >= 2 and (cells[-1] == "same" or cells[-1].startswith("differs")):
            out[cells[0]] = line
    return out


def sweep(store: str, tmp_path: Path, sweep_id: str, *overrides: str, **options: object) -> object:
    composed = compose([*TINY_SWEEP, *overrides, f"tracking.uri={store}"])
    run_sweep(composed, SweepOptions(sweep_id=sweep_id, storage=str(tmp_path / f"{sweep_id}.journal"), **options))
    client = MlflowClient(tracking_uri=store)
    (run,) = [r for r in all_runs(store) if r.data.tags.get("expt.run_type") == "sweep"
              and r.data.tags.get("expt.sweep_id") == sweep_id]
    return client.get_run(run.info.run_id)


def child(store: str, parent: str, run_type: str) -> object:
    return next(r for r in all_runs(store) if r.data.tags.get("mlflow.parentRunId") == parent
                and r.data.tags.get("expt.run_type") == run_type)


def test_an_unchanged_train_run_passes_with_its_model_compared(store: str) -> None:
    original = train(store, "data=iris", "model=knn", "learner=quick")
    result = run_cli("rerun", original.run_id, "--tracking-uri", store, "--check")
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert {"accuracy_mean", "accuracy_std", "fold-0 accuracy", "fold-1 accuracy", "fold-2 accuracy",
            "model predictions", "model probabilities"} <= set(table), result.output
    assert all(line.rstrip(" │").endswith("same") for line in table.values())
    assert f"all {len(table)} results match exactly" in result.output


def test_a_tampered_final_model_fails_and_names_the_predictions(store: str, tmp_path: Path) -> None:
    import mlflow.sklearn

    from expt.core.prepare import prepare

    original = train(store, "data=iris", "model=knn", "learner=quick")
    # Another fitted model in place of the logged one: same data, same pipeline, another n_neighbors.
    other = prepare(compose(["data=iris", "model=knn", "learner=quick", "model.estimator.n_neighbors=1"]))
    fitted = other.pipeline.fit(other.dataset.X, other.dataset.y)
    mlflow.sklearn.save_model(fitted, str(tmp_path / "other"), serialization_format="cloudpickle")
    client = MlflowClient(tracking_uri=store)
    client.log_artifacts(original.run_id, str(tmp_path / "other"), "model")  # overwrites model/ in place

    result = run_cli("rerun", original.run_id, "--tracking-uri", store, "--check")
    assert result.exit_code == 1, result.output
    table = rows(result.output)
    assert "differs" in table["model predictions"] and "rows" in result.output.split("model predictions")[1]
    assert all(table[k].rstrip(" │").endswith("same") for k in table if not k.startswith("model ")), result.output
    assert "results differ: model predictions" in result.output


def test_a_run_with_no_scores_exits_2_in_one_line(store: str) -> None:
    failed = run_cli("train", "data=iris", "model=knn", "learner=quick", "model.estimator.n_neighbors=500",
                     f"tracking.uri={store}")
    assert failed.exit_code == 1  # every fold failed: the run logged no score
    (run,) = [r for r in all_runs(store) if r.data.tags.get("expt.run_type") == "train"]
    before = len(all_runs(store))
    result = run_cli("rerun", run.info.run_id, "--tracking-uri", store, "--check")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "logged no scores" in lines[0] and "nothing to compare" in lines[0] and "Traceback" not in result.output
    assert len(all_runs(store)) == before  # refused before anything ran


def test_a_tampered_final_search_fails_and_names_it(store: str, tmp_path: Path) -> None:
    original = sweep(store, tmp_path, "orig")
    assert original.data.tags["expt.sweep.workers"] == "1" and original.data.tags["expt.sweep.resumes"] == "0"
    assert original.data.tags["expt.sweep.warm_start"] == "none" and original.data.tags["expt.trusted_targets"] == ""
    final = child(store, original.info.run_id, "final")
    inner = final.data.metrics["inner_best_accuracy"]
    client = MlflowClient(tracking_uri=store)
    client.log_metric(final.info.run_id, "inner_best_accuracy", inner / 2, step=1)  # a later step: the one shown
    (param,) = [k for k in final.data.params if k.startswith("best.model.estimator.n_neighbors")]
    with sqlite3.connect(store.removeprefix("sqlite:///")) as db:  # MLflow refuses to change a param; the file not
        db.execute("UPDATE params SET value = ? WHERE run_uuid = ? AND key = ?",
                   (str(int(final.data.params[param]) + 1), final.info.run_id, param))

    result = run_cli("rerun", original.info.run_id, "--tracking-uri", store, "--check")
    assert result.exit_code == 1, result.output
    table = rows(result.output)
    assert "differs" in table["final inner_best_accuracy"] and "differs" in table[f"final {param}"]
    untouched = [k for k in table if k not in ("final inner_best_accuracy", f"final {param}")]
    assert {"outer_accuracy_mean", "outer-fold-0 outer_accuracy", "outer-fold-1 inner_best_accuracy",
            "model predictions"} <= set(untouched), result.output
    assert all(table[k].rstrip(" │").endswith("same") for k in untouched), result.output
    for what in ("sweep workers", "warm-start input", "resumes", "trusted prefixes"):  # drift rows, unchanged here
        assert what in result.output


def test_the_drift_report_lists_what_shaped_a_sweep(store: str, tmp_path: Path) -> None:
    from expt.reproduce.rerun import plan_rerun

    warm = tmp_path / "warm.yaml"
    warm.write_text("- {model.estimator.n_neighbors: 3, model.estimator.weights: uniform}\n")
    sweep(store, tmp_path, "shaped", workers=2, warm_start=str(warm))
    run_sweep(None, SweepOptions(sweep_id="shaped", storage=str(tmp_path / "shaped.journal"), resume=True))
    run = next(r for r in all_runs(store) if r.data.tags.get("expt.run_type") == "sweep")
    tags = run.data.tags
    assert tags["expt.sweep.workers"] == "2+1" and tags["expt.sweep.resumes"] == "1"
    assert len(tags["expt.sweep.warm_start"]) == 16

    plan = plan_rerun(MlflowClient(tracking_uri=store), run.info.run_id, [], store, allow_data_drift=False)
    drift = {d.what: d for d in plan.drift}
    assert (drift["sweep workers"].then, drift["sweep workers"].now) == ("2+1", "1")
    assert (drift["warm-start input"].then, drift["warm-start input"].now) == (tags["expt.sweep.warm_start"], "none")
    assert (drift["resumes"].then, drift["resumes"].now) == ("1", "0")
    assert all(drift[w].changed for w in ("sweep workers", "warm-start input", "resumes"))
    assert not drift["trusted prefixes"].changed


def test_a_run_made_with_trust_target_asks_for_it_before_anything_runs(store: str) -> None:
    from expt.core.build import trusting

    with trusting(["mylib.models"]):
        original = train(store, "data=iris", "model=knn", "learner=quick", "tracking.log_model=false")
    assert MlflowClient(tracking_uri=store).get_run(original.run_id).data.tags["expt.trusted_targets"] == \
        "mylib.models"
    before = len(all_runs(store))
    result = run_cli("rerun", original.run_id, "--tracking-uri", store)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "this config needs --trust-target mylib.models" in lines[0]
    assert len(all_runs(store)) == before
    trusted = run_cli("rerun", original.run_id, "--tracking-uri", store, "--check", "--trust-target", "mylib")
    assert trusted.exit_code == 0, trusted.output


@pytest.mark.parametrize("legacy", ["learner.seed=0", "learner.seed=5"])
def test_the_top_level_seed_is_the_one_seed(store: str, legacy: str) -> None:
    """learner.seed follows seed; an old config that sets it to the same value still runs, another one is refused
    rather than splitting the folds with a seed the sweep would not use."""
    from expt.core.errors import ConfigError
    from expt.core.prepare import prepare

    prepared = prepare(compose(["data=iris", "model=knn", "learner=quick", "seed=3"]))
    assert prepared.values["learner"]["seed"] == 3 and prepared.splitter.random_state == 3
    if legacy.endswith("=0"):
        assert prepare(compose(["data=iris", "model=knn", legacy])).splitter.random_state == 0
    else:
        with pytest.raises(ConfigError, match="learner.seed=5 differs from seed=0"):
            prepare(compose(["data=iris", "model=knn", legacy]))
