"""The bad-input suite: every way a user can get a config, an override, a data file or a dataset.yaml wrong.

Each case runs the real ``expt`` in a subprocess, in a folder holding a copy of a store and a
records file that an earlier good run left, and asserts what a user would check: a non-zero exit,
exactly one line on stderr naming the problem and the fix, no traceback, and nothing written:
no new run, none left RUNNING, the earlier run FINISHED with the same metrics, records.jsonl
byte-identical. ``pytest -q tests/test_bad_input.py`` runs it (marked slow); the count is printed at the end.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import EXPT

STORE = "tracking.uri=sqlite:///mlruns.db"
GOOD_CSV = "a,b,y\n" + "".join(f"{i * 0.37 % 3:.2f},{i % 7},{'uv'[i % 2]}\n" for i in range(40))


def _rows(header: str, row: Callable[[int], str], n: int = 40) -> str:
    return header + "\n" + "".join(row(i) + "\n" for i in range(n))


FILES: dict[str, str | bytes] = {
    "broken.yaml": "learner:\n  cv: {folds: 3\n",
    "latin1.yaml": b"# caf\xe9 au lait\nseed: 1\n",
    "list.yaml": "- data: wine\n- model: svm\n",
    "unknown_key.yaml": "learner:\n  cv:\n    foldz: 3\n",
    "wrong_type.yaml": "learner:\n  cv:\n    folds: three\n",
    "bad_defaults.yaml": "defaults: 3\n",
    "evil_target.yaml": "model:\n  estimator:\n    _target_: collections.OrderedDict\n",
    "empty.csv": "",
    "header_only.csv": "a,b,y\n",
    "latin1.csv": b"a,b,y\n1,2,caf\xe9\n3,4,th\xe9\n" * 10,
    "inf_feature.csv": _rows("a,b,y", lambda i: f"{'inf' if i == 3 else i},{i % 5},{'uv'[i % 2]}"),
    "inf_target.csv": _rows("a,b,y", lambda i: f"{i},{i % 5},{'-inf' if i == 7 else i * 0.5 + 0.25}"),
    "no_target.csv": _rows("a,b,y", lambda i: f"{i},{i % 5},"),
    "one_class.csv": _rows("a,b,y", lambda i: f"{i},{i % 5},same"),
    "tiny.csv": _rows("a,b,y", lambda i: f"{i},{i % 2},{'uv'[i % 2]}", n=4),
    "empty_column.csv": _rows("a,b,c,y", lambda i: f"{i},{i % 5},,{'uv'[i % 2]}"),
    "ragged.csv": "a,b,y\n1,2,u\n3,4,v,9,9\n5,6,u\n",
    "fake.parquet": "a,b,y\n1,2,u\n",
    "table.xlsx": "not a spreadsheet",
    "ds_broken.yaml": "path: [good.csv\ntarget: y\n",
    "ds_latin1.yaml": b"path: good.csv\ntarget: y\n# r\xe9sum\xe9\n",
    "ds_unknown_key.yaml": "path: good.csv\ntarget: y\ncolour: red\n",
    "ds_wrong_type.yaml": "path: good.csv\ntarget: y\ndrop: a\n",
    "ds_no_data.yaml": "target: y\n",
    "ds_inf.yaml": "path: inf_feature.csv\ntarget: y\n",
    "ds_one_class.yaml": "path: one_class.csv\ntarget: y\n",
    "ds_good.yaml": "path: good.csv\ntarget: y\n",
}


@dataclass
class Case:
    id: str
    args: list[str]
    expect: str  # a distinctive part of the one line on stderr
    secret: str | None = None  # must appear nowhere in the output
    tracked: bool = True  # append tracking.uri=sqlite:///mlruns.db (train and sweep)


def train(*args: str) -> list[str]:
    return ["train", "data=file", "data.path=good.csv", "data.target=y", "learner=quick", *args]


def on_file(name: str, *args: str) -> list[str]:
    return ["train", "data=file", f"data.path={name}", "data.target=y", "learner=quick", *args]


def sweep(*args: str) -> list[str]:
    return ["sweep", "data=file", "data.path=good.csv", "data.target=y", "model=logistic_regression",
            "search.n_trials=2", "search.outer_folds=2", "search.inner_folds=2", *args]


CASES = [
    # Recipes and logged configs (conf=PATH)
    Case("recipe: malformed YAML", ["train", "conf=broken.yaml"], "'broken.yaml' is not valid YAML at line 3"),
    Case("recipe: not UTF-8", ["train", "conf=latin1.yaml"], "'latin1.yaml' is not UTF-8"),
    Case("recipe: a list, not a mapping", ["train", "conf=list.yaml"], "must hold a mapping of keys to values"),
    Case("recipe: unknown key", ["train", "conf=unknown_key.yaml"], "unknown config key 'learner.cv.foldz'"),
    Case("recipe: wrong type", ["train", "conf=wrong_type.yaml"], "learner.cv.folds must be a whole number"),
    Case("recipe: _target_ outside the allow-list", ["train", "conf=evil_target.yaml"],
         "'collections.OrderedDict' is not allowed (allowed prefixes: sklearn., expt., torch.nn., torch.optim., "
         "optuna.samplers., optuna.pruners., lightgbm., xgboost., catboost.); if you trust that code, pass "
         "--trust-target collections"),
    Case("recipe: defaults not a list", ["train", "conf=bad_defaults.yaml"], "defaults must be a list of entries"),
    Case("recipe: missing file", ["train", "conf=nowhere.yaml"], "config file 'nowhere.yaml' not found"),
    # Overrides
    Case("override: unknown model", train("model=svn"), "unknown model 'svn'; did you mean 'svm'?"),
    Case("override: unknown data option", ["train", "data=irsi"], "unknown data 'irsi'; did you mean 'iris'?"),
    Case("override: unknown key", train("learner.cv.foldz=3"), "unknown config key 'learner.cv.foldz'"),
    Case("override: unknown estimator parameter", train("model=svm", "model.estimator.Cc=3"),
         "write +model.estimator.Cc=VALUE"),
    Case("override: added parameter the estimator lacks", train("model=svm", "+model.estimator.bogus=1"),
         "SVC has no parameter 'bogus'"),
    Case("override: + on a key that is set", train("model=svm", "+model.estimator.C=3"),
         "model.estimator.C is already set; drop the +"),
    Case("override: text for a number", train("learner.cv.folds=abc"), "learner.cv.folds must be a whole number"),
    Case("override: not a boolean", train("learner.cv.shuffle=maybe"), "learner.cv.shuffle must be"),
    Case("override: not a choice", train("learner.preprocessing.scale=zscore"),
         "learner.preprocessing.scale must be one of"),
    Case("override: C=nan", train("model=svm", "model.estimator.C=nan"),
         "model.estimator.C is nan, and config values must be finite; set model.estimator.C to a number"),
    Case("override: C=inf", train("model=svm", "model.estimator.C=inf"), "model.estimator.C is inf"),
    Case("override: folds=inf", train("learner.cv.folds=inf"), "learner.cv.folds is inf"),
    Case("override: folds=0", train("learner.cv.folds=0"), "learner.cv.folds must be at least 2"),
    Case("override: folds=-3", train("learner.cv.folds=-3"), "learner.cv.folds must be at least 2"),
    Case("override: seed=nan", train("seed=nan"), "seed is nan"),
    Case("override: unparsable syntax", train("learner.cv.folds=[1"), "cannot parse override 'learner.cv.folds=[1'"),
    Case("override: no equals sign", train("modelsvm"), "modelsvm"),
    Case("override: unknown option", train("--no-such-option"), "unknown option '--no-such-option'"),
    Case("override: _target_=os.system", train("model.estimator._target_=os.system"),
         "'os.system' is not allowed"),
    Case("override: nested _target_ builtins.eval",
         train("model=mlp", "model.estimator.optimizer._target_=builtins.eval"), "'builtins.eval' is not allowed"),
    Case("override: --trust-target not a path", train("--trust-target", "os system"),
         "--trust-target 'os system' is not a module or class path"),
    Case("override: unknown metric", train("learner.metric.classification=acuracy"), "unknown metric 'acuracy'"),
    Case("override: regression metric on classes", train("learner.metric.classification=r2"),
         "'r2' is a regression metric"),
    Case("override: model for the other task", ["train", "data=diabetes", "model=logistic_regression"],
         "handles classification, but diabetes is a regression task"),
    Case("override: unknown model format", train("tracking.model_format=pickle"), "tracking.model_format must be"),
    # Tracking
    Case("tracking: unreachable server", train("tracking.uri=http://127.0.0.1:1"),
         "cannot reach the MLflow tracking server at http://127.0.0.1:1", tracked=False),
    Case("tracking: password in the URI", train("tracking.uri=http://user:pw@127.0.0.1:1"),
         "cannot reach the MLflow tracking server", secret="pw", tracked=False),
    Case("tracking: unreachable database, password", train("tracking.uri=postgresql://u:pw@127.0.0.1:1/db"),
         "cannot reach the database of the MLflow tracking store at postgresql://127.0.0.1:1", secret="pw",
         tracked=False),
    Case("tracking: empty experiment name", train("tracking.experiment="), "tracking.experiment is empty"),
    Case("tracking: records path climbs out", train("tracking.records=../../x.jsonl"),
         "tracking.records '../../x.jsonl' leaves the working directory"),
    Case("tracking: records onto a data file", train("tracking.records=good.csv"),
         "tracking.records 'good.csv' must name a .jsonl file"),
    # Data files
    Case("data: missing file", on_file("nowhere.csv"), "data file 'nowhere.csv' not found"),
    Case("data: empty file", on_file("empty.csv"), "data file 'empty.csv' is empty"),
    Case("data: header only", on_file("header_only.csv"), "header_only has no rows"),
    Case("data: not UTF-8", on_file("latin1.csv"), "data file 'latin1.csv' is not UTF-8"),
    Case("data: inf in a feature", on_file("inf_feature.csv"), "holds inf values"),
    Case("data: -inf in the target", on_file("inf_target.csv"), "target 'y' of inf_target holds inf values"),
    Case("data: target all missing", on_file("no_target.csv"), "target column 'y' of no_target has no values"),
    Case("data: one class", on_file("one_class.csv"), "has a single class"),
    Case("data: fewer rows than folds", on_file("tiny.csv", "learner.cv.folds=5"),
         "4 rows, fewer than learner.cv.folds=5"),
    Case("data: fewer rows per class than folds", on_file("tiny.csv"),
         "every class of the target has fewer rows than learner.cv.folds=3"),
    Case("data: a column of all missing values", on_file("empty_column.csv"),
         "column 'c' of empty_column has no values; drop with data.drop=[c]"),
    Case("data: ragged rows", on_file("ragged.csv"), "cannot read data file 'ragged.csv'"),
    Case("data: text named .parquet", on_file("fake.parquet"), "cannot read data file 'fake.parquet'"),
    Case("data: unknown extension", on_file("table.xlsx"), "has an unknown extension"),
    Case("data: target column not there", train("data.target=label"), "target column 'label' not in good"),
    Case("data: drop an unknown column", train("data.drop=[zz]"), "data.drop names columns not in good: zz"),
    Case("data: unknown scikit-learn id", ["train", "data=iris", "data.id=irsi"], "data.id 'irsi' is not a bundled"),
    Case("data: unknown data key", train("+data.pth=x.csv"), "unknown config key 'data.pth'"),
    # Sweeps
    Case("sweep: unreachable storage, password", sweep("--storage", "postgresql://u:secret@127.0.0.1:1/db"),
         "cannot open the Optuna storage 'postgresql://u:***@127.0.0.1:1/db'", secret="secret"),
    Case("sweep: --sweep-id climbs out", sweep("--sweep-id", "../../etc"), "--sweep-id '../../etc' is not a name"),
    Case("sweep: --resume climbs out", ["sweep", "--resume", "../x"], "--resume '../x' is not a name", tracked=False),
    Case("sweep: n_trials=0", sweep("search.n_trials=0"), "search.n_trials must be at least 1"),
    Case("sweep: max_failure_rate=nan", sweep("search.max_failure_rate=nan"), "search.max_failure_rate is nan"),
    Case("sweep: unknown search", ["sweep", "data=file", "data.path=good.csv", "search=nosuch"],
         "unknown search 'nosuch'"),
    Case("sweep: --workers 0", sweep("--workers", "0"), "Invalid value for '--workers'"),
    # dataset.yaml (expt recommend, expt metafeatures)
    Case("dataset.yaml: malformed YAML", ["recommend", "ds_broken.yaml"], "ds_broken.yaml is not valid YAML"),
    Case("dataset.yaml: not UTF-8", ["metafeatures", "ds_latin1.yaml"], "ds_latin1.yaml is not UTF-8"),
    Case("dataset.yaml: missing", ["recommend", "nowhere.yaml"], "dataset file 'nowhere.yaml' not found"),
    Case("dataset.yaml: unknown key", ["metafeatures", "ds_unknown_key.yaml"], "'ds_unknown_key.yaml.colour'"),
    Case("dataset.yaml: wrong type", ["metafeatures", "ds_wrong_type.yaml"], "drop must be list"),
    Case("dataset.yaml: names no data", ["recommend", "ds_no_data.yaml"], "names no data"),
    Case("dataset.yaml: inf in the data", ["metafeatures", "ds_inf.yaml"], "holds inf values"),
    Case("dataset.yaml: one class", ["recommend", "ds_one_class.yaml"], "has a single class"),
    Case("recommend: unknown method", ["recommend", "ds_good.yaml", "--method", "magic"],
         "--method 'magic' is not a recommender"),
    Case("recommend: --out is a file", ["recommend", "ds_good.yaml", "--out", "good.csv"],
         "--out 'good.csv' is a file; pass a folder"),
    Case("recommend: --records store not there", ["recommend", "ds_good.yaml", "--records", "sqlite:///nothere.db"],
         "no MLflow store at sqlite:///"),
    Case("metafeatures: --seed -1", ["metafeatures", "ds_good.yaml", "--seed", "-1"], "Invalid value for '--seed'"),
    Case("recommend: --top 0", ["recommend", "ds_good.yaml", "--top", "0"], "Invalid value for '--top'"),
    # The command line itself
    Case("cli: unknown command", ["trian"], "No such command 'trian'"),
    Case("rerun: unknown run", ["rerun", "0123456789abcdef", "--tracking-uri", "sqlite:///mlruns.db"],
         "no run '0123456789abcdef'"),
    # Metrics, the user's run metadata, and from a run to a model (expt register, predict, report)
    Case("metrics: unknown name", train("learner.metrics=[accuracy,f1_macr]"),
         "unknown metric 'f1_macr' for learner.metrics; did you mean f1_macro"),
    Case("metrics: needs probabilities the model lacks", train("model=svm", "learner.metrics=[accuracy,neg_log_loss]"),
         "learner.metrics 'neg_log_loss' needs predicted probabilities, which SVC does not give"),
    Case("metrics: selecting metric needs probabilities",
         train("model=svm", "learner.metric.classification=roc_auc_ovr"),
         "learner.metric.classification 'roc_auc_ovr' needs predicted probabilities"),
    Case("metrics: a scorer class not trusted", train("learner.metrics=[{_target_: mylib.Cost}]"),
         "'mylib.Cost' is not allowed"),
    Case("tracking: a reserved tag", train("tracking.tags={expt.run_type: sweep}"),
         "tracking.tags.expt.run_type uses a prefix expt and MLflow set themselves"),
    Case("tracking: skops for a torch network", train("model=mlp", "tracking.model_format=skops"),
         "tracking.model_format=skops cannot save MLPClassifier"),
    Case("register: unknown run", ["register", "0123456789abcdef0123456789abcdef", "--name", "m", "-u",
                                   "sqlite:///mlruns.db"], "no run '0123456789abcdef0123456789abcdef'"),
    Case("register: a bad name", ["register", "0123456789abcdef0123456789abcdef", "--name", "a/b", "-u",
                                  "sqlite:///mlruns.db"], "--name 'a/b' is not a model name"),
    Case("predict: unknown registered model", ["predict", "--model", "models:/nope@champion", "good.csv", "-u",
                                                "sqlite:///mlruns.db"], "no registered model 'nope' with alias"),
    Case("predict: not a model reference", ["predict", "--model", "my-model", "good.csv", "-u", "sqlite:///mlruns.db"],
         "--model 'my-model' is neither a run id nor runs:/ID/model nor models:/NAME@alias"),
    Case("report: unknown run", ["report", "0123456789abcdef0123456789abcdef", "-u", "sqlite:///mlruns.db"],
         "no run '0123456789abcdef0123456789abcdef'"),
    Case("ui: a sweep id that is a path", ["ui", "--sweep", "../x", "-u", "sqlite:///mlruns.db"],
         "--sweep '../x' is not a name"),
]


def _snapshot(db: Path) -> dict[str, list[tuple]]:
    """Every row MLflow keeps about experiments and runs (read with sqlite3: a case must change none)."""
    with sqlite3.connect(db) as con:
        tables = ("experiments", "runs", "metrics", "latest_metrics", "params", "tags")
        snap = {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}  # noqa: S608
        snap["status"] = con.execute("SELECT run_uuid, status FROM runs").fetchall()
        snap["scores"] = sorted(con.execute("SELECT run_uuid, key, value FROM latest_metrics").fetchall())
    con.close()
    return snap


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where one good `expt train` ran: its store, its records.jsonl and every input file of the cases."""
    base = tmp_path_factory.mktemp("earlier")
    (base / "good.csv").write_text(GOOD_CSV)
    proc = subprocess.run([EXPT, *train("model=logistic_regression", "tracking.log_model=false"), STORE],
                          cwd=base, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name, content in FILES.items():
        path = base / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return base


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_ends_in_one_line_and_writes_nothing(case: Case, earlier: Path, tmp_path: Path,
                                                       tried_bad_input) -> None:
    tried_bad_input(case.id)
    for item in earlier.iterdir():
        if item.is_file() and not item.name.startswith("mlruns.db-"):
            shutil.copy(item, tmp_path / item.name)
    files = {p.name for p in tmp_path.iterdir()}
    before = _snapshot(tmp_path / "mlruns.db")
    records = (tmp_path / "records.jsonl").read_bytes()
    args = [*case.args, *([STORE] if case.tracked and case.args[0] in ("train", "sweep") else [])]
    proc = subprocess.run([EXPT, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert case.expect in lines[0], lines[0]
    assert "Traceback" not in output
    if case.secret is not None:
        assert case.secret not in output
    after = _snapshot(tmp_path / "mlruns.db")
    assert {status for _, status in after["status"]} == {"FINISHED"}  # nothing RUNNING, nothing FAILED
    assert after["status"] == before["status"] and after["scores"] == before["scores"]  # no new run; same metrics
    assert after == before  # and not a param, tag or experiment more
    assert (tmp_path / "records.jsonl").read_bytes() == records
    assert not (tmp_path / "outputs").exists(), "a sweep was stored"
    made = {p.name for p in tmp_path.iterdir()} - files - {"mlruns.db-wal", "mlruns.db-shm"}
    assert not made, f"files were written: {made}"


@pytest.mark.slow
def test_a_10000_level_categorical_column_runs_capped_and_without_warnings(tmp_path: Path) -> None:
    """Not bad input: one-hot encoding keeps learner.preprocessing.max_categories columns (the rest share one)."""
    n = 10_000
    rows = "".join(f"{i % 17 / 4:.2f},city{(i * 7919) % n:05d},{'yn'[(i % 17) < 8]}\n" for i in range(n))
    (tmp_path / "cities.csv").write_text("x,city,y\n" + rows)
    args = ["data=file", "data.path=cities.csv", "data.target=y", "learner=quick", "model=logistic_regression"]
    proc = subprocess.run([EXPT, "train", *args, "tracking.log_model=false", STORE], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # not one warning
    assert "10000 rows, 2 features" in proc.stdout
    with sqlite3.connect(tmp_path / "mlruns.db") as con:
        assert con.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall() == [("FINISHED", 4)]
    con.close()

    from expt.core.config import compose
    from expt.core.prepare import prepare

    prepared = prepare(compose([*args, STORE]))
    assert prepared.dataset.X["city"].nunique() == n
    width = prepared.pipeline[:-1].fit_transform(prepared.dataset.X, prepared.dataset.y).shape[1]
    assert width == 1 + 50  # x, and the city's 10,000 levels in max_categories=50 columns


# `expt predict`, `register` and `report` on the runs of a store: the cases need the ids of its runs.
PUBLISH_FILES = {"missing_column.csv": "a,y\n1.0,u\n2.0,v\n", "text_in_number.csv": "a,b,y\n1.0,2,u\nabc,3,v\n",
                 "empty_rows.csv": "a,b,y\n"}
PUBLISH_CASES = [
    ("predict: a column missing", ["predict", "--model", "{model}", "missing_column.csv"],
     "data file 'missing_column.csv' lacks column 'b' that the model takes"),
    ("predict: text in a number column", ["predict", "--model", "{model}", "text_in_number.csv", "--out", "p.csv"],
     "column 'a' of 'text_in_number.csv' holds 'abc' (row 2) where the model expects a number (double)"),
    ("predict: no rows", ["predict", "--model", "{model}", "empty_rows.csv"], "has no rows; nothing to predict"),
    ("predict: no data file", ["predict", "--model", "{model}", "nowhere.csv"], "data file 'nowhere.csv' not found"),
    ("predict: --out into a missing folder", ["predict", "--model", "{model}", "good.csv", "--out", "no/p.csv"],
     "folder 'no' does not exist"),
    ("predict: --proba of a model without probabilities", ["predict", "--model", "{svm}", "good.csv", "--proba"],
     "gives no probabilities (Pipeline); drop --proba"),
    ("predict: a run without a model", ["predict", "--model", "{no_model}", "good.csv"],
     "logged no model (tracking.log_model=false)"),
    ("register: a run without a model", ["register", "{no_model}", "--name", "m"], "logged no model"),
    ("register: a bad alias", ["register", "{model}", "--name", "m", "--alias", "latest"],
     "--alias 'latest' is not an alias"),
    ("report: a run without its config.yaml", ["report", "{bare}"], "has no config.yaml artifact"),
    ("report: a run not made by expt", ["report", "{plain}"], "was not made by expt train or expt sweep"),
    ("report: --out not .html", ["report", "{model}", "--out", "r.pdf"], "must name an .html file"),
]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A store with a logistic regression and an SVM that logged models, a run without one, a train-typed run
    without artifacts and a run expt did not make."""
    base = tmp_path_factory.mktemp("published")
    (base / "good.csv").write_text(GOOD_CSV)
    for name, text in PUBLISH_FILES.items():
        (base / name).write_text(text)
    for args in (["model=logistic_regression"], ["model=svm"], ["model=knn", "tracking.log_model=false"]):
        proc = subprocess.run([EXPT, *train(*args), "tracking.plots=false", STORE], cwd=base, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{base}/mlruns.db")
    runs = {r.data.tags.get("expt.model"): r.info.run_id for r in client.search_runs(["1"], "tags.`expt.run_type` = "
                                                                                         "'train'")}
    ids = {"model": runs["logistic_regression"], "svm": runs["svm"], "no_model": runs["knn"],
           "bare": client.create_run("1", tags={"expt.run_type": "train"}).info.run_id,
           "plain": client.create_run("1").info.run_id}
    for run_id in (ids["bare"], ids["plain"]):
        client.set_terminated(run_id)
    with sqlite3.connect(base / "mlruns.db") as con:  # the store is in WAL mode: fold the log in before copies
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return base, ids


@pytest.mark.slow
@pytest.mark.parametrize(("case_id", "args", "expect"), PUBLISH_CASES, ids=[c[0] for c in PUBLISH_CASES])
def test_publishing_bad_input_ends_in_one_line_and_writes_nothing(case_id: str, args: list[str], expect: str,
                                                                  published: tuple[Path, dict[str, str]],
                                                                  tmp_path: Path, tried_bad_input) -> None:
    tried_bad_input(case_id)
    base, ids = published
    for item in base.iterdir():
        if item.is_file() and not item.name.startswith("mlruns.db-"):
            shutil.copy(item, tmp_path / item.name)
    shutil.copytree(base / "mlartifacts", tmp_path / "mlartifacts")
    files = {p.name for p in tmp_path.iterdir()}
    before = _snapshot(tmp_path / "mlruns.db")
    with sqlite3.connect(tmp_path / "mlruns.db") as con:
        registry = con.execute("SELECT count(*) FROM registered_models").fetchall()
    con.close()
    artifacts = sorted(str(p) for p in (tmp_path / "mlartifacts").rglob("*"))
    command = [EXPT, *[a.format(**ids) for a in args], "--tracking-uri", STORE.split("=", 1)[1]]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expect in lines[0], lines[0]
    assert "Traceback" not in output
    assert _snapshot(tmp_path / "mlruns.db") == before
    with sqlite3.connect(tmp_path / "mlruns.db") as con:
        assert con.execute("SELECT count(*) FROM registered_models").fetchall() == registry
    con.close()
    assert sorted(str(p) for p in (tmp_path / "mlartifacts").rglob("*")) == artifacts  # no report logged
    made = {p.name for p in tmp_path.iterdir()} - files - {"mlruns.db-wal", "mlruns.db-shm"}
    assert not made, f"files were written: {made}"
