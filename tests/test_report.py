"""`expt report`: a train run's and a sweep's report, from what they logged, as HTML and Markdown, logged back."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers import EXPT, all_runs, train

from expt.core.errors import UsageError

TRAIN_SECTIONS = ["glance", "config", "data", "model", "folds", "plots", "lineage"]
SWEEP_SECTIONS = ["glance", "config", "data", "model", "folds", "plots", "search", "lineage"]


def _client(store: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("report-train")
    store = f"sqlite:///{folder}/mlruns.db"
    result = train(store, "data=breast_cancer", "model=logistic_regression", "learner=quick",
                   "tracking.description='baseline <b>not bold</b>'", "tracking.tags={team: vision}",
                   f"tracking.records={folder}/records.jsonl")
    return store, result


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory):
    """A small sweep, run as a user runs it (the sink draws the outer folds' plots in its own process)."""
    folder = tmp_path_factory.mktemp("report-sweep")
    proc = subprocess.run([EXPT, "sweep", "data=iris", "model=logistic_regression", "search.n_trials=3",
                           "search.outer_folds=2", "search.inner_folds=2", "tracking.run_name=iris sweep"],
                          cwd=folder, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    store = f"sqlite:///{folder}/mlruns.db"
    sweep = next(r for r in all_runs(store) if r.data.tags.get("expt.run_type") == "sweep")
    return store, sweep, folder


def test_a_train_report_has_every_section_its_plots_and_lineage(trained, tmp_path: Path) -> None:
    from expt.publish.report import write_report

    store, result = trained
    written = write_report(_client(store), result.run_id, tmp_path / "r.html")
    html, markdown = written.html.read_text(), written.markdown.read_text()
    assert re.findall(r'<section id="([a-z]+)"', html) == TRAIN_SECTIONS
    assert re.findall(r'<a id="([a-z]+)"></a>', markdown) == TRAIN_SECTIONS
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="([^"]+)"', html)
    assert sorted(images) == ["calibration curve", "confusion matrix", "permutation importance",
                              "precision recall curve", "roc curve"]
    assert "http://" not in html.split("<main>")[1].replace(store, "")  # nothing to fetch: no network needed
    assert f"expt rerun {result.run_id}" in html and f"expt rerun {result.run_id}" in markdown
    assert "baseline &lt;b&gt;not bold&lt;/b&gt;" in html  # a logged value is text, never markup
    assert "accuracy 0." in html and "neg_log_loss" in html and "team" in html
    assert "n_parameters" not in html and "parameters (fitted)" in html
    assert "land.one_nn" in html and "general.log_rows" in html  # meta-features, from the run's record
    for name in images:
        assert f"![{name}][" in markdown
    assert markdown.count("data:image/png;base64,") == len(images)
    logged = {a.path for a in _client(store).list_artifacts(result.run_id)}
    assert {"report.html", "report.md"} <= logged
    assert written.html.stat().st_mode & 0o044  # readable by others, like any document


def test_a_sweep_report_has_the_outer_folds_the_search_and_their_plots(swept, tmp_path: Path) -> None:
    from expt.publish.report import collect, write_report

    store, sweep, _folder = swept
    data = collect(_client(store), sweep.info.run_id)
    assert [u["unit"] for u in data["units"]] == ["outer-fold-0", "outer-fold-1", "final"]
    assert all(u["trials"] == 3 for u in data["units"])
    assert set(data["history"]) == {"outer-fold-0", "outer-fold-1", "final"}
    assert {p["key"] for p in data["plots"]} == {"optimization_history", "outer_vs_inner", "param_importances"}
    fold_plots = {p["key"]: p["title"] for p in data["fold_plots"]}  # pooled over the outer folds, then each fold's
    assert fold_plots["pooled-confusion_matrix"] == "all outer folds: confusion matrix"
    assert fold_plots["outer-fold-1-roc_curve"] == "outer-fold-1: roc curve"
    assert len(fold_plots) == 3 * 5
    assert data["glance"]["estimate"] == pytest.approx(sweep.data.metrics["outer_accuracy_mean"])
    written = write_report(_client(store), sweep.info.run_id, tmp_path / "sweep.html", log=False)
    html = written.html.read_text()
    assert re.findall(r'<section id="([a-z]+)"', html) == SWEEP_SECTIONS
    assert "iris sweep" in html and "unbiased" in html and "inner best" in html
    assert "report.html" not in {a.path for a in _client(store).list_artifacts(sweep.info.run_id)}  # --no-log


def test_report_from_the_cli_of_a_fold_run_reports_its_train_run(trained, tmp_path: Path) -> None:
    store, result = trained
    fold = next(r for r in all_runs(store) if r.data.tags.get("mlflow.parentRunId") == result.run_id)
    proc = subprocess.run([EXPT, "report", fold.info.run_id, "-u", store, "--no-log"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no download progress bars
    assert (tmp_path / f"report-{result.run_id[:8]}.html").is_file()
    assert (tmp_path / f"report-{result.run_id[:8]}.md").is_file()


def test_reports_need_an_expt_run_with_its_config(store: str, tmp_path: Path) -> None:
    from expt.publish.report import write_report

    client = _client(store)
    experiment = client.create_experiment("elsewhere")
    plain = client.create_run(experiment).info.run_id
    with pytest.raises(UsageError, match="was not made by expt train or expt sweep"):
        write_report(client, plain, tmp_path / "r.html")
    bare = client.create_run(experiment, tags={"expt.run_type": "train"}).info.run_id
    with pytest.raises(UsageError, match=f"run {bare} has no config.yaml artifact"):
        write_report(client, bare, tmp_path / "r.html")
    with pytest.raises(UsageError, match="no run 'feedfacefeedfacefeedfacefeedface'"):
        write_report(client, "feedfacefeedfacefeedfacefeedface", tmp_path / "r.html")
    assert list(tmp_path.glob("r.*")) == []


def test_a_run_without_plots_says_so(store: str, tmp_path: Path) -> None:
    from expt.publish.report import write_report

    result = train(store, "data=iris", "model=knn", "learner=quick", "tracking.plots=false", "tracking.records=null")
    html = write_report(_client(store), result.run_id, tmp_path / "r.html", log=False).html.read_text()
    assert "no evaluation plots" in html and "meta-features not recorded" in html and "<img" not in html
