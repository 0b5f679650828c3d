"""Configs are untrusted input: each attack below is what someone who can write a config file, a logged run or an
Optuna storage would try. Every one must end in one line naming the problem, with nothing done: no file or folder
made, no run logged or left RUNNING, no record appended, no secret printed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import all_runs
from typer.testing import CliRunner

from expt.cli import app

SECRET = "hunter2-do-not-print"

# name: (the estimator node, a piece of the one-line refusal). VICTIM is where each attack would write.
ATTACKS: dict[str, tuple[dict[str, Any], str]] = {
    "module attribute traversal": ({"_target_": "expt.core.config.os.makedirs", "name": "VICTIM"},
                                   "cannot be imported"),
    "traversal with _args_": ({"_target_": "expt.core.config.os.makedirs", "_args_": ["VICTIM"]},
                              "_args_ is a Hydra instantiation key"),
    "function under an allowed prefix": ({"_target_": "sklearn.datasets.dump_svmlight_file", "X": [[1.0]], "y": [1],
                                          "f": "VICTIM"}, "is a function, not a class"),
    "expt class of the wrong kind": ({"_target_": "expt.tracking.client.Tracker", "uri": "sqlite:///VICTIM",
                                      "experiment": "x"}, "not a class a config may build"),
    "class reached through another module": ({"_target_": "expt.tracking.uri.Path"},
                                             "pathlib.Path, a class from outside the allowed prefixes"),
    "_args_ on an allowed class": ({"_target_": "sklearn.svm.SVC", "_args_": ["VICTIM"]},
                                   "_args_ is a Hydra instantiation key"),
    "_recursive_ false": ({"_target_": "sklearn.pipeline.Pipeline", "_recursive_": False,
                           "steps": [["s", {"_target_": "sklearn.svm.SVC"}]]}, "_recursive_ is a Hydra"),
    "_partial_ on an estimator": ({"_target_": "sklearn.svm.SVC", "_partial_": True},
                                  "allowed on an optimizer or LR scheduler only"),
    "nested target in an optimizer node": (
        {"_target_": "expt.models.MLPClassifier", "max_epochs": 1,
         "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True,
                       "lr": {"_target_": "expt.tracking.client.Tracker", "uri": "sqlite:///VICTIM",
                              "experiment": "x"}}}, "an optimizer takes numbers and flags"),
    "nested target in a pipeline step": ({"_target_": "sklearn.pipeline.Pipeline", "steps": [
        ["s", {"_target_": "expt.tracking.client.Tracker", "uri": "sqlite:///VICTIM", "experiment": "x"}]]},
        "not a class a config may build"),
    "a pickle cache folder": ({"_target_": "sklearn.pipeline.Pipeline", "memory": "VICTIM",
                               "steps": [["s", {"_target_": "sklearn.svm.SVC"}]]}, "memory names a cache folder"),
    "fullwidth look-alike letter": ({"_target_": "ｓklearn.svm.SVC"}, "is not a dotted class path"),
    "zero-width space": ({"_target_": "sklearn.svm.SVC\u200b"}, "is not a dotted class path"),
    "leading whitespace": ({"_target_": " sklearn.svm.SVC"}, "is not a dotted class path"),
    "a second line": ({"_target_": "sklearn.svm.SVC\nos.system"}, "is not a dotted class path"),
    "dunder attribute": ({"_target_": "sklearn.svm.SVC.__init__"}, "cannot be imported"),
    "environment resolver": ({"_target_": "sklearn.svm.SVC", "C": "${oc.env:EXPT_TEST_SECRET}"},
                             "uses the resolver 'oc.env'"),
    "environment resolver, spaced": ({"_target_": "sklearn.svm.SVC", "C": "${ oc.env : EXPT_TEST_SECRET }"},
                                     "uses the resolver 'oc.env'"),
    "decode resolver": ({"_target_": "sklearn.svm.SVC", "C": "${oc.decode:'${oc.env:EXPT_TEST_SECRET}'}"},
                        "uses the resolver"),
}


def _node(attack: str, victim: Path) -> dict[str, Any]:
    text = yaml.safe_dump(ATTACKS[attack][0], allow_unicode=True)
    return yaml.safe_load(text.replace("VICTIM", str(victim)))


def _assert_refused(result: Any, attack: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert ATTACKS[attack][1] in lines[0]
    assert SECRET not in result.output


def _assert_nothing_happened(tmp_path: Path, victim: Path) -> None:
    assert not victim.exists() and not victim.with_name(victim.name + "-journal").exists()
    assert not (tmp_path / "records.jsonl").exists()


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPT_TEST_SECRET", SECRET)


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_config_file_cannot_build_anything_but_allowed_classes(tmp_path: Path, store: str, attack: str) -> None:
    """Through ``expt train conf=FILE`` with a model group of the attacker's own (``--config-dir``), so the
    estimator node is exactly the attack: nothing merges into it."""
    victim = tmp_path / "victim"
    groups = tmp_path / "evil" / "model"
    groups.mkdir(parents=True)
    (groups / "evil.yaml").write_text(yaml.safe_dump(
        {"name": "evil", "family": "svm", "tasks": ["classification", "regression"],
         "estimator": _node(attack, victim)}, allow_unicode=True))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("# @package _global_\ndefaults:\n  - override /model: evil\n  - override /data: iris\n"
                      "  - override /learner: quick\n")
    result = CliRunner().invoke(app, ["train", "--config-dir", str(tmp_path / "evil"), f"conf={recipe}",
                                      f"tracking.uri={store}"])
    _assert_refused(result, attack)
    _assert_nothing_happened(tmp_path, victim)
    assert all_runs(store) == []


def _tamper(text: str, node: dict[str, Any]) -> str:
    """A logged or stored config with its estimator replaced (the rest, defaults list included, kept)."""
    doc = yaml.safe_load(text)
    doc["model"]["estimator"] = node
    return "# @package _global_\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


REPLAYED = ["module attribute traversal", "function under an allowed prefix", "expt class of the wrong kind",
            "nested target in a pipeline step", "zero-width space", "environment resolver"]


@pytest.mark.parametrize("attack", REPLAYED)
def test_rerun_of_a_tampered_logged_config_builds_nothing(tmp_path: Path, store: str, attack: str) -> None:
    from mlflow import MlflowClient

    ran = CliRunner().invoke(app, ["train", "data=iris", "model=knn", "learner=quick", "tracking.log_model=false",
                                   f"tracking.uri={store}"])
    assert ran.exit_code == 0, ran.output
    (parent,) = [r for r in all_runs(store) if r.data.tags["expt.run_type"] == "train"]
    logged = Path(MlflowClient(tracking_uri=store).download_artifacts(parent.info.run_id, "config.yaml", str(tmp_path)))
    artifact = Path(parent.info.artifact_uri.removeprefix("file://")) / "config.yaml"
    victim = tmp_path / "victim"
    artifact.write_text(_tamper(logged.read_text(), _node(attack, victim)))
    os.remove(tmp_path / "records.jsonl")
    before = len(all_runs(store))
    result = CliRunner().invoke(app, ["rerun", parent.info.run_id, "--tracking-uri", store])
    _assert_refused(result, attack)
    _assert_nothing_happened(tmp_path, victim)
    assert len(all_runs(store)) == before


SWEEP = ["data=iris", "model=knn", "search=knn", "search.n_trials=1", "search.outer_folds=2",
         "search.inner_folds=2", "tracking.log_model=false", "tracking.records=null"]


def _tampered_sweep(tmp_path: Path, store: str, attack: str) -> tuple[str, Path]:
    """A finished sweep whose stored config someone then edited; returns its storage and the victim path."""
    import optuna

    from expt.sweep.storage import META_CONFIG, open_storage

    storage_url = str(tmp_path / "optuna.journal")
    ran = CliRunner().invoke(app, ["sweep", "--sweep-id", "s1", "--storage", storage_url, *SWEEP,
                                   f"tracking.uri={store}"])
    assert ran.exit_code == 0, ran.output
    storage = open_storage(storage_url)
    study = optuna.load_study(study_name="s1", storage=storage)
    victim = tmp_path / "victim"
    storage.set_study_user_attr(study._study_id, META_CONFIG, _tamper(study.user_attrs[META_CONFIG],
                                                                       _node(attack, victim)))
    return storage_url, victim


@pytest.mark.parametrize("attack", ["module attribute traversal", "nested target in a pipeline step",
                                    "environment resolver"])
def test_resuming_a_sweep_whose_storage_was_tampered_builds_nothing(tmp_path: Path, store: str, attack: str) -> None:
    storage_url, victim = _tampered_sweep(tmp_path, store, attack)
    before = all_runs(store)
    result = CliRunner().invoke(app, ["sweep", "--resume", "s1", "--storage", storage_url])
    _assert_refused(result, attack)
    _assert_nothing_happened(tmp_path, victim)
    after = all_runs(store)
    assert len(after) == len(before) and not any(r.info.status == "RUNNING" for r in after)


def test_a_joining_worker_refuses_a_tampered_storage(tmp_path: Path, store: str) -> None:
    """The process a --workers sweep (or a machine joining it) starts rebuilds the plan from the storage alone."""
    import queue

    from expt.sweep.runner import worker_main

    attack = "expt class of the wrong kind"
    storage_url, victim = _tampered_sweep(tmp_path, store, attack)
    before = len(all_runs(store))
    errors: queue.Queue[str] = queue.Queue()
    worker_main("s1", storage_url, queue.Queue(), errors, 1)
    message = errors.get_nowait()
    assert ATTACKS[attack][1] in message and len(message.splitlines()) == 1
    _assert_nothing_happened(tmp_path, victim)
    assert len(all_runs(store)) == before
