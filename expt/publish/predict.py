"""``expt predict``: a logged or registered model on a new data file, its columns checked against the signature.

New data is where a served model meets the world: a column renamed, missing or holding text
would surface as a scikit-learn traceback deep inside the pipeline. The model's logged
signature names every input column and its type; the file is checked against it first, and a
mismatch is one line naming the column, the row and the fix. Columns the model does not take
(the target, an id) are left out, and said so. Predictions come from the same model object
``mlflow models serve`` would load (the scikit-learn flavor), so the two agree.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.errors import DataError, UsageError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.pyfunc import PyFuncModel
    from mlflow.types import Schema
    from sklearn.base import BaseEstimator

NUMERIC = ("double", "float", "long", "integer")
READERS = {".csv": ",", ".tsv": "\t", ".txt": ","}


def read_table(path: str) -> pd.DataFrame:
    """A CSV, TSV or Parquet file as a DataFrame; what cannot be read is one line."""
    import pandas as pd

    file = Path(path)
    if not file.is_file():
        raise DataError(f"data file {path!r} not found; pass the path of a CSV or Parquet file")
    suffix = file.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(file)
        if suffix not in READERS:
            raise DataError(f"data file {path!r} has an unknown extension; use .csv, .tsv or .parquet")
        return pd.read_csv(file, sep=READERS[suffix])
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(f"data file {path!r} is not UTF-8; save it as UTF-8") from None
    except Exception as exc:  # noqa: BLE001 - pandas and pyarrow raise many kinds for one thing: unreadable
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot read data file {path!r} ({first[:160]}); check its format") from None


def check_columns(table: pd.DataFrame, schema: Schema, path: str) -> tuple[pd.DataFrame, list[str]]:
    """The table's columns in the signature's order and types; the columns left out. Raises on a missing or
    mistyped column, naming the first."""
    import pandas as pd

    names, types = schema.input_names(), [str(getattr(t, "name", t)) for t in schema.input_types()]
    missing = [n for n in names if n not in table.columns]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"data file {path!r} lacks column{'s' if len(missing) > 1 else ''} {shown} that the model "
                        f"takes (its signature: {len(names)} columns); add {'them' if len(missing) > 1 else 'it'} "
                        "with the names the model was trained on")
    out: dict[str | int, pd.Series] = {}
    for name, kind in zip(names, types, strict=True):
        column = table[name]
        if kind in NUMERIC:
            converted = pd.to_numeric(column, errors="coerce") if not _is_number(column) else column
            bad = column.notna() & converted.isna()
            if bad.any():
                row = int(bad.to_numpy().nonzero()[0][0])
                raise DataError(f"column {name!r} of {path!r} holds {column.iloc[row]!r} (row {row + 1}) where the "
                                f"model expects a number ({kind}); fix the value or the column")
            out[name] = converted.astype("float64") if kind in ("double", "float") or converted.isna().any() \
                else converted.astype("int64")
        elif kind == "boolean":
            out[name] = column.astype("bool")
        else:
            out[name] = column.where(column.isna(), column.astype(str))
    ignored = [c for c in table.columns if c not in names]
    return pd.DataFrame(out, index=table.index), ignored


def _is_number(column: pd.Series) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def load(uri: str, tracking_uri: str) -> tuple[Any, Schema | None]:
    """The model object (scikit-learn flavor when it has one, else a PyFuncModel: used by duck typing, so Any) and
    its input schema."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with _store(tracking_uri), tempfile.TemporaryDirectory(prefix="expt-predict-") as tmp:
        return _load_local(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))


@contextlib.contextmanager
def _store(uri: str) -> Iterator[None]:
    """MLflow's tracking and registry URIs set to ``uri`` for the download only (``models:/`` aliases resolve
    through the process-wide registry URI; download_artifacts' own ``registry_uri`` did not reach them), then
    put back as they were, the variables they export included: left set, they sent a caller's later clients and
    every later expt command in the process (whose default store is $MLFLOW_TRACKING_URI) to this store."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    before = getattr(tracking, "_tracking_uri", None), getattr(registry, "_registry_uri", None)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])  # type: ignore[arg-type]  # None unsets it (MLflow's own reset)
        mlflow.set_registry_uri(before[1])  # type: ignore[arg-type]
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _load_local(local: str) -> tuple[BaseEstimator | PyFuncModel, Schema | None]:
    import mlflow
    from mlflow.models import Model

    meta = Model.load(local)
    schema = meta.get_input_schema()
    if "sklearn" in meta.flavors:
        import mlflow.sklearn

        return mlflow.sklearn.load_model(local), schema
    return mlflow.pyfunc.load_model(local), schema


def predict(uri: str, tracking_uri: str, data_path: str, *, proba: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Predictions (and with ``proba`` class probabilities) for every row of the file; the columns ignored."""
    import numpy as np
    import pandas as pd

    table = read_table(data_path)
    if table.empty:
        raise DataError(f"data file {data_path!r} has no rows; nothing to predict")
    model, schema = load(uri, tracking_uri)
    if schema is None:
        raise UsageError(f"model {uri} was logged without a signature, so its columns cannot be checked; log it "
                         "again with expt train")
    X, ignored = check_columns(table, schema, data_path)
    if proba and not hasattr(model, "predict_proba"):
        raise UsageError(f"model {uri} gives no probabilities ({type(model).__name__}); drop --proba")
    out = pd.DataFrame({"prediction": np.asarray(model.predict(X))}, index=table.index)
    if proba:
        values = np.asarray(model.predict_proba(X), dtype=float)
        for i, label in enumerate(model.classes_):
            out[f"proba_{label}"] = values[:, i]
    return out, ignored


def check_out(out: str) -> Path:
    """Where the predictions go, checked before anything is loaded or predicted."""
    target = Path(out)
    if target.is_dir():
        raise UsageError(f"--out {out!r} is a folder; name a file, e.g. --out {target / 'predictions.csv'}")
    if not target.parent.is_dir():
        raise UsageError(f"--out {out!r}: folder {str(target.parent)!r} does not exist; create it first")
    return target


def write_csv(table: pd.DataFrame, out: str) -> None:
    """Whole or not at all: into a temporary file beside ``out``, then renamed over it."""
    target = check_out(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            table.to_csv(fh, index=False)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp's 0600 is for secrets; predictions are shared like any output
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
