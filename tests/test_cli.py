"""The command line as a user meets it: a results table, an `mlflow ui` command, one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import EXPT, OPTIONS_BY_GROUP, ROOT, all_runs, long_train_until_running
from typer.testing import CliRunner

from expt.cli import app


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    path = tmp_path / "small.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "y": ["u", "v", "u", "v"]}).to_csv(path, index=False)
    return path


@pytest.fixture
def one_class_csv(tmp_path: Path) -> Path:
    path = tmp_path / "one.csv"
    pd.DataFrame({"a": np.arange(20.0), "y": ["same"] * 20}).to_csv(path, index=False)
    return path


USAGE_ERRORS = [
    (["model=svn"], "unknown model 'svn'"),
    (["data=wine", "learner.cv.foldz=3"], "unknown config key 'learner.cv.foldz'"),
    (["learner.cv.folds=abc"], "learner.cv.folds must be a whole number, got 'abc'"),
    (["learner.cv.folds=1"], "learner.cv.folds must be at least 2"),
    (["learner.preprocessing.scale=zscore"], "learner.preprocessing.scale must be one of"),
    (["learner.cv.folds=[1"], "cannot parse override"),
    (["--no-such-option"], "unknown option '--no-such-option'"),
    (["data=file", "data.path=nowhere.csv"], "data file 'nowhere.csv' not found"),
    (["data=file", "data.path={small}", "data.target=label"], "target column 'label' not in small"),
    (["data=file", "data.path={small}", "data.target=y"], "4 rows, fewer than learner.cv.folds=5"),
    (["data=file", "data.path={one}", "data.target=y"], "has a single class"),
    (["data=diabetes", "model=logistic_regression"], "handles classification, but diabetes is a regression"),
    (["model.estimator._target_=os.system"], "'os.system' is not allowed"),
    (["model=svm", "model.estimator.C=-1"], "The 'C' parameter of SVC must be"),
    (["learner.metric.classification=acuracy"], "unknown metric 'acuracy'"),
    (["conf=no/such/recipe.yaml"], "config file 'no/such/recipe.yaml' not found"),
]


@pytest.mark.parametrize(("args", "expected"), USAGE_ERRORS, ids=[e for _, e in USAGE_ERRORS])
def test_usage_errors_are_one_line_exit_2_and_write_nothing(store: str, small_csv: Path, one_class_csv: Path,
                                                            args: list[str], expected: str) -> None:
    args = [a.format(small=small_csv, one=one_class_csv) for a in args]
    result = run_cli("train", *args, f"tracking.uri={store}")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert all_runs(store) == []


def test_a_run_that_fails_is_marked_failed_not_running(store: str, writer_mode: str) -> None:
    result = run_cli("train", "model=knn", "model.estimator.n_neighbors=500", f"tracking.uri={store}")
    assert result.exit_code == 1
    assert "every fold failed" in result.stderr and "n_neighbors" in result.stderr
    runs = all_runs(store)
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FAILED"}


def test_debug_shows_the_traceback(store: str) -> None:
    result = run_cli("train", "model=svn", "--debug", f"tracking.uri={store}")
    assert result.exit_code != 0 and result.exception is not None
    assert type(result.exception).__name__ == "ConfigError"


def test_cfg_prints_the_composed_config_and_runs_nothing(store: str) -> None:
    result = run_cli("train", "--cfg", "data=wine", "model=svm", "model.estimator.C=3", f"tracking.uri={store}")
    assert result.exit_code == 0
    assert "C: 3" in result.stdout and "name: wine" in result.stdout and "folds: 5" in result.stdout
    assert "- override /model: svm" in result.stdout  # the defaults list: conf= composes it onto svm, not the default
    assert all_runs(store) == []


# A dataset each model handles (ridge: a regression one, to compose its by_task regressor; cnn: images).
CFG_DATA = {"ridge": "diabetes", "cnn": "digits"}


@pytest.mark.parametrize("model", OPTIONS_BY_GROUP["model"])
def test_a_printed_config_composes_back_to_itself(store: str, tmp_path: Path, model: str) -> None:
    """`expt train --cfg ... > my.yaml && expt train conf=my.yaml` runs what was printed, for every model."""
    import yaml

    printed = run_cli("train", "--cfg", f"data={CFG_DATA.get(model, 'iris')}", f"model={model}",
                      f"tracking.uri={store}")
    assert printed.exit_code == 0, printed.output
    path = tmp_path / "my.yaml"
    path.write_text(printed.stdout)
    again = run_cli("train", f"conf={path}", "--cfg")
    assert again.exit_code == 0, again.output
    assert again.stdout == printed.stdout
    assert yaml.safe_load(again.stdout)["model"]["name"] == model
    resolved = run_cli("train", "--cfg", "--resolve", f"conf={path}")
    assert resolved.exit_code == 0 and "${" not in resolved.stdout, resolved.output
    (tmp_path / "resolved.yaml").write_text(resolved.stdout)
    assert run_cli("train", "--cfg", "--resolve", f"conf={tmp_path / 'resolved.yaml'}").stdout == resolved.stdout
    assert all_runs(store) == []


def test_a_printed_sweep_config_composes_back_to_itself(store: str, tmp_path: Path) -> None:
    printed = run_cli("sweep", "--cfg", "data=wine", "model=svm", "search.n_trials=3", f"tracking.uri={store}")
    assert printed.exit_code == 0 and "- override /search: svm" in printed.stdout, printed.output
    (tmp_path / "s.yaml").write_text(printed.stdout)
    assert run_cli("sweep", "--cfg", f"conf={tmp_path / 's.yaml'}").stdout == printed.stdout


def test_a_printed_config_of_another_model_runs(store: str, tmp_path: Path) -> None:
    """The report that started it: knn's printed config merged onto random forest's n_estimators and failed."""
    printed = run_cli("train", "--cfg", "data=iris", "model=knn", "learner=quick", f"tracking.uri={store}")
    (tmp_path / "my.yaml").write_text(printed.stdout)
    result = run_cli("train", f"conf={tmp_path / 'my.yaml'}")
    assert result.exit_code == 0, result.output
    (run,) = [r for r in all_runs(store) if r.data.tags["expt.run_type"] == "train"]
    assert run.data.tags["expt.model"] == "knn" and run.data.params["model.estimator.n_neighbors"] == "5"
    assert "model.estimator.n_estimators" not in run.data.params


@pytest.mark.slow
def test_train_as_a_subprocess_prints_table_and_ui_command(store: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [EXPT, "train", f"conf={ROOT / 'recipes' / 'wine_svm.yaml'}", "learner.cv.folds=3", f"tracking.uri={store}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mean ± std" in proc.stdout and f"mlflow ui --backend-store-uri {store}" in proc.stdout
    runs = all_runs(store)
    parent = [r for r in runs if r.data.tags["expt.run_type"] == "train"]
    assert len(parent) == 1 and parent[0].info.run_id in proc.stdout and len(runs) == 4


@pytest.mark.slow
def test_default_store_is_a_sqlite_file_in_the_working_directory(tmp_path: Path) -> None:
    proc = subprocess.run([EXPT, "train", "model=knn", "learner=quick", "tracking.log_model=false"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mlruns.db").is_file()
    assert f"sqlite:///{tmp_path / 'mlruns.db'}" in proc.stdout
    assert len(all_runs(f"sqlite:///{tmp_path / 'mlruns.db'}")) == 4


@pytest.mark.slow
def test_usage_error_from_a_subprocess_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([EXPT, "train", "data=nope"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Available: breast_cancer, diabetes" in proc.stderr
    assert not (tmp_path / "mlruns.db").exists()


def test_unreachable_tracking_server_is_one_line_without_the_password(tmp_path: Path, writer_mode: str) -> None:
    result = run_cli("train", "model=knn", "tracking.uri=http://alice:s3cret@127.0.0.1:9")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach the MLflow tracking server at http://127.0.0.1:9")
    assert "s3cret" not in result.output


@pytest.mark.slow
def test_ctrl_c_marks_the_run_killed(store: str, tmp_path: Path, writer_mode: str) -> None:
    import signal

    proc = long_train_until_running(store, tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    runs = all_runs(store)
    parent = [r for r in runs if r.data.tags["expt.run_type"] == "train"]
    assert len(parent) == 1 and parent[0].info.status == "KILLED"
    assert "RUNNING" not in {r.info.status for r in runs}


@pytest.mark.parametrize(("args", "expected"), [
    (["--resume", "nope"], "no sweep 'nope' in the storage"),
    (["--resume", "s1", "model=svm"], "drop the overrides"),
    (["search.n_trials=0"], "search.n_trials must be at least 1"),
    (["search.pruner=asha"], "search.pruner must be one of"),
    (["search=nope"], "unknown search 'nope'"),
])
def test_sweep_usage_errors(store: str, tmp_path: Path, args: list[str], expected: str) -> None:
    extra = [] if "--resume" in args else [f"tracking.uri={store}"]
    result = run_cli("sweep", "--storage", str(tmp_path / "o.journal"), *args, *extra)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and expected in result.stderr and result.stderr.count("\n") == 1
    assert all_runs(store) == []


def test_sweep_cfg_shows_the_search_space(store: str) -> None:
    result = run_cli("sweep", "--cfg", "model=svm", f"tracking.uri={store}")
    assert result.exit_code == 0 and "model.estimator.C:" in result.stdout and "n_trials: 20" in result.stdout


def _options() -> list[tuple[str, object]]:
    """(command, option) for every option of every command, as click sees them after typer built the app."""
    import typer.main

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    return [(name, p) for name, command in sorted(commands.items()) for p in command.params if p.opts[0][0] == "-"]


def test_a_shared_flag_means_the_same_on_every_command() -> None:
    """-m is --multirun, -o is --out, -u is --tracking-uri read from $MLFLOW_TRACKING_URI, --json is one option."""
    flags: dict[str, set[str]] = {}
    for _, p in _options():
        for flag in p.opts:  # type: ignore[attr-defined]
            flags.setdefault(flag, set()).add(p.name)  # type: ignore[attr-defined]
    assert flags["-m"] == {"multirun"} and flags["-o"] == {"out"} and flags["-u"] == {"tracking_uri"}
    assert {name for name, p in _options() if "-m" in p.opts} == {"train", "sweep"}  # type: ignore[attr-defined]
    for name, p in _options():
        opts, help_text = set(p.opts), p.help  # type: ignore[attr-defined]
        assert ("--out" in opts) == ("-o" in opts), name
        assert ("--multirun" in opts) == ("-m" in opts), name
        if "--tracking-uri" in opts:
            assert "-u" in opts and p.envvar == "MLFLOW_TRACKING_URI", name  # type: ignore[attr-defined]
        if "--json" in opts:
            assert help_text == "Print JSON instead of a table.", name


def test_predict_has_no_m_flag_any_more(tmp_path: Path) -> None:
    result = run_cli("predict", "-m", "some-run", "new.csv")
    assert result.exit_code == 2 and "-m" in result.stderr and "Traceback" not in result.output


def run_cli_env(env: dict[str, str], *args: str):
    return CliRunner().invoke(app, list(args), env=env)


def test_the_store_comes_from_mlflow_tracking_uri_on_every_reading_command(store: str, tmp_path: Path) -> None:
    """runs, show, register and predict read $MLFLOW_TRACKING_URI through typer's envvar; -u still wins over it."""
    from helpers import train

    result = train(store, "data=iris", "model=logistic_regression", "learner=quick", "tracking.plots=false",
                   "tracking.records=null")
    data = result.prepared.dataset
    data.X.head(5).to_csv(tmp_path / "new.csv", index=False)
    env = {"MLFLOW_TRACKING_URI": store}
    shown = run_cli_env(env, "runs", "--json")
    assert shown.exit_code == 0 and result.run_id in shown.stdout, shown.output
    shown = run_cli_env(env, "show", result.run_id, "--json")
    assert shown.exit_code == 0 and result.run_id in shown.stdout, shown.output
    done = run_cli_env(env, "register", result.run_id, "--name", "iris-lr")
    assert done.exit_code == 0 and "registered iris-lr version 1" in done.stdout, done.output
    done = run_cli_env(env, "predict", "--model", "models:/iris-lr/1", "new.csv", "-o", "p.csv")
    assert done.exit_code == 0, done.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == 5
    missing = f"sqlite:///{tmp_path / 'nowhere.db'}"
    wrong = run_cli_env({"MLFLOW_TRACKING_URI": missing}, "runs")
    assert wrong.exit_code == 2 and f"no MLflow store at {missing}" in wrong.stderr, wrong.output
    assert run_cli_env({"MLFLOW_TRACKING_URI": missing}, "show", result.run_id, "-u", store).exit_code == 0


def test_recommend_takes_o_for_out(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset.yaml"
    dataset.write_text("id: iris\n")
    result = run_cli("recommend", "dataset.yaml", "--top", "2", "-o", "recs")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "recs").iterdir())[:2] == ["1.yaml", "2.yaml"]
