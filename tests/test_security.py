"""Configs are untrusted: the `_target_` allow-list, `--trust-target`, and credentials kept out of logs and output."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import EXPT, all_runs
from typer.testing import CliRunner

from expt.cli import app
from expt.core.build import TRUST_ENV, allowed_targets, check_targets, trusting
from expt.core.errors import ConfigError
from expt.tracking.client import flatten
from expt.tracking.uri import mask_credentials

TRUSTED = '''from sklearn.linear_model import LogisticRegression


class TrustedClassifier(LogisticRegression):
    """A harmless estimator outside expt's allow-list."""
'''
GOOD_CSV = "a,b,y\n" + "".join(f"{i * 0.37 % 3:.2f},{i % 7},{'uv'[i % 2]}\n" for i in range(40))
MINE = ["data=file", "data.path=good.csv", "data.target=y", "learner=quick", "model=logistic_regression",
        "model.estimator._target_=mymodels.TrustedClassifier", "tracking.log_model=false"]


@pytest.fixture
def mymodels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A module of the user's own, importable here and in subprocesses; the environment for those."""
    (tmp_path / "mymodels.py").write_text(TRUSTED)
    (tmp_path / "good.csv").write_text(GOOD_CSV)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(TRUST_ENV, raising=False)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


def test_trust_extends_the_allow_list_only_inside_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRUST_ENV, raising=False)
    node = {"_target_": "sklearn.pipeline.Pipeline", "steps": [{"_target_": "mylib.models.Net"}]}
    with pytest.raises(ConfigError, match=r"steps\[0\]\._target_ 'mylib.models.Net' is not allowed.*"
                                          r"pass --trust-target mylib.models$"):
        check_targets(node)
    with trusting(["mylib"]):
        assert os.environ[TRUST_ENV] == "mylib" and allowed_targets()[-1] == "mylib"
        check_targets(node)
        with pytest.raises(ConfigError, match="'mylibx.Net' is not allowed"):  # a prefix is a module path
            check_targets({"_target_": "mylibx.Net"})
    assert TRUST_ENV not in os.environ
    with pytest.raises(ConfigError, match="--trust-target '' is not a module or class path"):
        with trusting([""]):
            pass


def test_a_target_outside_the_allow_list_is_refused_then_runs_when_trusted(store: str, mymodels: dict) -> None:
    refused = CliRunner().invoke(app, ["train", *MINE, f"tracking.uri={store}"])
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "'mymodels.TrustedClassifier' is not allowed" in refused.stderr
    assert "pass --trust-target mymodels" in refused.stderr
    assert all_runs(store) == []

    ran = CliRunner().invoke(app, ["train", "--trust-target", "mymodels", *MINE, f"tracking.uri={store}"])
    assert ran.exit_code == 0, ran.output
    assert TRUST_ENV not in os.environ  # trusted for that invocation only
    (parent,) = [r for r in all_runs(store) if r.data.tags["expt.run_type"] == "train"]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["model.estimator._target_"] == "mymodels.TrustedClassifier"

    # A logged config is untrusted input too: re-running it asks for the same trust.
    again = CliRunner().invoke(app, ["rerun", parent.info.run_id, "--tracking-uri", store])
    assert again.exit_code == 2 and "pass --trust-target mymodels" in again.stderr
    again = CliRunner().invoke(app, ["rerun", parent.info.run_id, "--tracking-uri", store, "--trust-target",
                                     "mymodels"])
    assert again.exit_code == 0, again.output
    assert len([r for r in all_runs(store) if r.data.tags["expt.run_type"] == "train"]) == 2


@pytest.mark.slow
def test_trust_target_reaches_the_worker_processes_of_a_sweep(store: str, mymodels: dict, tmp_path: Path) -> None:
    args = ["--workers", "2", "--trust-target", "mymodels", *MINE, "search.n_trials=2", "search.outer_folds=2",
            "search.inner_folds=2", f"tracking.uri={store}"]
    proc = subprocess.run([EXPT, "sweep", *args], cwd=tmp_path, env=mymodels, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    trials = [r for r in all_runs(store) if r.data.tags.get("expt.run_type") == "trial"]
    assert len(trials) == 6  # 2 per study: 2 outer folds and the final search, every one built in a worker
    assert {t.data.tags["expt.trial_state"] for t in trials} == {"COMPLETE"}


@pytest.mark.parametrize(("text", "masked"), [
    ("http://alice:s3cret@host:5000/x", "http://alice:***@host:5000/x"),
    ("https://bot:ghp_T0ken@github.example/x.git", "https://bot:***@github.example/x.git"),
    ("postgresql+psycopg://u:pw@db/optuna and sqlite:///a.db", "postgresql+psycopg://u:***@db/optuna and sqlite:///a.db"),
    ("mysql://root:pw@127.0.0.1:3306/mlflow", "mysql://root:***@127.0.0.1:3306/mlflow"),
    ("postgresql://u:p@ss@w0rd@db:5432/x", "postgresql://u:***@db:5432/x"),  # '@' in the password, written raw
    ("postgresql://u:pa:ss@db/x", "postgresql://u:***@db/x"),  # ':' in the password
    ("postgresql://u:p%40ss%3A%25@db/x", "postgresql://u:***@db/x"),  # %-escapes
    ("postgresql://db/x?user=u&password=hunter2&sslmode=require", "postgresql://db/x?user=u&password=***&sslmode=require"),
    ("http://host/api?token=abc;x=1", "http://host/api?token=***;x=1"),
    ("error at 'postgresql://u:pw@db/x': refused", "error at 'postgresql://u:***@db/x': refused"),
    ("http://host:5000", "http://host:5000"),
    ("sqlite:////tmp/a@b/mlruns.db", "sqlite:////tmp/a@b/mlruns.db"),  # no password: a path is left alone
    ("http://u:***@host", "http://u:***@host"),  # masking twice changes nothing
])
def test_one_masking_function_for_every_way_a_uri_carries_a_secret(text: str, masked: str) -> None:
    assert mask_credentials(text) == masked


def test_a_masked_uri_gets_its_password_back_only_from_a_matching_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    from expt.core.errors import UsageError
    from expt.tracking.uri import with_credentials

    stored, real = "postgresql://u:***@db/x", "postgresql://u:pw@db/x"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert with_credentials("sqlite:///a.db") == "sqlite:///a.db"
    assert with_credentials(stored, real) == real
    with pytest.raises(UsageError, match="set MLFLOW_TRACKING_URI"):
        with_credentials(stored, "postgresql://u:pw@elsewhere/x")  # another server's password is not this one's
    monkeypatch.setenv("MLFLOW_TRACKING_URI", real)
    assert with_credentials(stored) == real


def test_credentials_are_masked_in_uris_params_and_messages() -> None:
    from expt.tracking.uri import masked_config

    values = {"seed": 0, "tracking": {"uri": "http://alice:s3cret@host:5000", "records": None}}
    params = flatten(masked_config(values))
    assert params["tracking.uri"] == "http://alice:***@host:5000"
    assert not any("s3cret" in v for v in params.values())


@pytest.mark.parametrize("uri", ["http://user:pw@127.0.0.1:1", "postgresql://user:pw@127.0.0.1:1/mlflow"])
def test_an_unreachable_store_with_a_password_never_prints_it(tmp_path: Path, uri: str) -> None:
    result = CliRunner().invoke(app, ["train", "model=knn", "learner=quick", f"tracking.uri={uri}"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach ") and "127.0.0.1:1" in result.stderr
    assert "pw" not in result.output
    assert not (tmp_path / "mlruns.db").exists()

