"""How the rows of a table may be split into folds: shuffled, grouped, or time-ordered.

Shuffled k-fold assumes the rows are exchangeable. Where several rows share a patient, a site or a
session (``learner.cv.groups``), or where the future must not train the past (``learner.cv.kind: time``),
that estimate is optimistic, silently. Here the config's cv keys and the data become a :class:`Folds`:
checked once (before anything is tracked), and the one source of every splitter a run needs, the
sweep's inner folds on an outer training part included, so that train, sweep, grid and rerun split alike.

The column that groups the rows is taken out of the features: it decides the folds and is never learned from
(a group's identity would let a model recognise the group). So is the column that orders them, unless
``learner.cv.order_feature: true``: a numeric time can carry a trend a model may use (a growth curve's age), but a
tree cannot extrapolate it to the future, and a date as text would be a category no future row has.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from expt.core.cv import make_splitter
from expt.core.errors import ConfigError, DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import ArrayLike

    from expt.core.cv import Splitter
    from expt.core.data import Dataset

CV_DEFAULTS = {"kind": "kfold", "groups": None, "order": None, "gap": 0,  # learner.cv keys a config may lack
               "order_feature": False}


@dataclass
class Folds:
    """The rows' split kind and the column values it splits by (``keys``: one per row of the table)."""

    task: str
    n_rows: int
    split: str = "shuffled"
    column: str | None = None
    keys: np.ndarray | None = None  # group codes (grouped) or the rank of each row's time (time)
    shuffle: bool = True
    stratify: bool | str = "auto"
    gap: int = 0
    seed: int = 0

    def splitter(self, folds: int, *, rows: np.ndarray | None = None, repeats: int = 1, shuffle: bool | None = None,
                 key: str = "learner.cv.folds") -> Splitter:
        """A splitter of ``rows`` (positions in the table; all rows by default) into ``folds`` folds.

        ``shuffle=None`` keeps the learner's; a sweep shuffles its outer and inner folds always (where the kind
        allows). Time-ordered folds are never shuffled, and shuffled folds are built exactly as before kinds
        existed, so their folds (and every hash of them) are unchanged.
        """
        shuffle = self.shuffle if shuffle is None else shuffle
        if self.split == "shuffled":
            return make_splitter(self.task, self.n_rows if rows is None else len(rows), folds=folds,
                                 repeats=repeats, shuffle=shuffle, stratify=self.stratify, seed=self.seed, key=key)
        assert self.keys is not None  # folds_of sets them for every kind but shuffled
        keys = self.keys if rows is None else self.keys[rows]
        if self.split == "time":
            return TimeSplit(keys, folds, self.gap)
        return GroupedSplit(keys, folds, classes=self._stratified(), shuffle=shuffle, repeats=repeats,
                            seed=self.seed)

    def _stratified(self) -> bool:
        return self.task == "classification" if self.stratify == "auto" else bool(self.stratify)

    def protocol(self) -> dict[str, Any]:
        """What a record's protocol says of the split: ``split`` (and what it split by)."""
        out: dict[str, Any] = {"split": self.split}
        if self.column is not None:
            out["split_by"] = self.column
        if self.split == "time" and self.gap:
            out["gap"] = self.gap
        return out

    def describe(self) -> str:
        """``shuffled``, ``grouped by site``, ``time by date (gap 2)``: a tag, a protocol key's tail, a check row."""
        if self.split == "shuffled":
            return "shuffled"
        gap = f" (gap {self.gap})" if self.gap else ""
        return f"{self.split} by {self.column}{gap}"

    def digest(self, tests: list[list[int]]) -> str:
        """The fold manifest's hash: the test rows of every fold, in order, and (for a kind other than shuffled,
        whose hashes stay what they were) the kind: two kinds never pair up in a grid or resume each other."""
        payload: Any = tests if self.split == "shuffled" else {"split": self.describe(), "tests": tests}
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]

    def manifest_hash(self, splitter: Splitter, X: pd.DataFrame | np.ndarray, y: ArrayLike) -> str:
        """:meth:`digest` of the folds ``splitter`` makes of ``X``: what a grid pairs and a rerun checks."""
        return self.digest([[int(i) for i in test] for _, test in splitter.split(X, y)])


class GroupedSplit:
    """Group k-fold bound to the groups of the rows it splits (StratifiedGroupKFold for a stratified
    classification, GroupKFold otherwise); ``repeats`` shuffled anew, as RepeatedStratifiedKFold does."""

    def __init__(self, groups: np.ndarray, folds: int, *, classes: bool, shuffle: bool, repeats: int,
                 seed: int) -> None:
        self.groups, self.folds, self.classes = groups, folds, classes
        self.shuffle, self.repeats, self.seed = shuffle, repeats, seed

    def get_n_splits(self, X: object = None, y: object = None, groups: object = None) -> int:
        return self.folds * self.repeats

    def split(self, X: pd.DataFrame | np.ndarray, y: ArrayLike | None = None,
              groups: ArrayLike | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import numpy as np
        from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

        if len(X) != len(self.groups):
            raise ValueError(f"{len(X)} rows to split, {len(self.groups)} group labels")
        cls = StratifiedGroupKFold if self.classes else GroupKFold
        rng = np.random.RandomState(self.seed)
        for _ in range(self.repeats):
            state = (rng if self.repeats > 1 else self.seed) if self.shuffle else None
            yield from cls(n_splits=self.folds, shuffle=self.shuffle, random_state=state).split(X, y, self.groups)


class TimeSplit:
    """Expanding-window folds over the distinct values of the order column (TimeSeriesSplit on them): rows that
    share a time stamp stay on one side, and ``gap`` distinct values between training and test are left out."""

    def __init__(self, ranks: np.ndarray, folds: int, gap: int = 0) -> None:
        self.ranks, self.folds, self.gap = ranks, folds, gap

    def get_n_splits(self, X: object = None, y: object = None, groups: object = None) -> int:
        return self.folds

    def split(self, X: pd.DataFrame | np.ndarray, y: ArrayLike | None = None,
              groups: ArrayLike | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import numpy as np
        from sklearn.model_selection import TimeSeriesSplit

        if len(X) != len(self.ranks):
            raise ValueError(f"{len(X)} rows to split, {len(self.ranks)} time stamps")
        times, codes = np.unique(self.ranks, return_inverse=True)
        for train, test in TimeSeriesSplit(n_splits=self.folds, gap=self.gap).split(times):
            yield np.flatnonzero(codes <= train[-1]), np.flatnonzero((codes >= test[0]) & (codes <= test[-1]))


def folds_of(dataset: Dataset, cv: Mapping[str, Any], *, seed: int, dropped: list[str] | None = None) -> Folds:
    """The split the learner's cv keys ask for, checked against each other and the data; the column it splits by
    is taken out of ``dataset`` (its features). A contradiction or a column that cannot split is one line."""
    cv = {**CV_DEFAULTS, **cv}
    kind, groups, order, gap = cv["kind"], cv["groups"], cv["order"], cv["gap"]
    _check_keys(kind, groups, order, gap, cv)
    folds = Folds(dataset.task, dataset.n_rows, shuffle=cv["shuffle"], stratify=cv["stratify"], gap=gap, seed=seed)
    if kind == "time":
        folds.split, folds.column = "time", order
        values = _take_column(dataset, order, "order", dropped, keep=cv["order_feature"])
        folds.keys = _time_ranks(values, order)
        if cv["order_feature"] and not _is_number(values):
            raise ConfigError(f"learner.cv.order_feature=true keeps {order} a feature, but it is not a number (e.g. "
                              f"{values.iloc[0]!r}); set learner.cv.order_feature=false, or order by a numeric time")
    elif groups is not None:
        if cv["stratify"] is True and dataset.task != "classification":
            raise ConfigError("learner.cv.stratify=true needs a classification target; set learner.cv.stratify=auto")
        folds.split, folds.column = "grouped", groups
        folds.keys = _group_codes(_take_column(dataset, groups, "groups", dropped), groups)
    return folds


def _check_keys(kind: str, groups: str | None, order: str | None, gap: int, cv: Mapping[str, Any]) -> None:
    """The cv keys against each other: only an explicit value that contradicts the kind is refused; the
    defaults (shuffle: true, stratify: auto) adapt to it."""
    if kind == "time":
        if order is None:
            raise ConfigError("learner.cv.kind=time needs the column that orders the rows: set learner.cv.order=COLUMN "
                              "(a date or a number)")
        if groups is not None:
            raise ConfigError("learner.cv.groups and learner.cv.kind=time do not combine (expt has no grouped "
                              "time-ordered folds); set learner.cv.groups=null, or learner.cv.kind=kfold")
        if cv["stratify"] is True:
            raise ConfigError("time-ordered folds cannot be stratified (their order is the time's); set "
                              "learner.cv.stratify=auto")
        if cv["repeats"] > 1:
            raise ConfigError("time-ordered folds are the same in every repeat; set learner.cv.repeats=1")
        return
    if order is not None:
        raise ConfigError(f"learner.cv.order={order} orders time-ordered folds only; set learner.cv.kind=time, "
                          "or learner.cv.order=null")
    if cv["order_feature"]:
        raise ConfigError("learner.cv.order_feature applies to time-ordered folds only; set learner.cv.kind=time, or "
                          "learner.cv.order_feature=false")
    if gap:
        raise ConfigError("learner.cv.gap applies to time-ordered folds only; set learner.cv.kind=time, or "
                          "learner.cv.gap=0")
    if groups is not None and cv["repeats"] > 1 and not cv["shuffle"]:
        raise ConfigError("learner.cv.repeats > 1 needs learner.cv.shuffle=true (unshuffled grouped repeats are "
                          "identical)")


def _take_column(dataset: Dataset, column: str, key: str, dropped: list[str] | None, *,
                 keep: bool = False) -> pd.Series:
    """The column's values, the column taken out of the features (it splits; it is not learned from) unless
    ``keep``."""
    if column == dataset.target:
        raise ConfigError(f"learner.cv.{key}={column} is the target; name another column (learner.cv.{key}=COLUMN)")
    if column not in dataset.X.columns:
        if column in (dropped or []):
            raise ConfigError(f"learner.cv.{key}={column} is in data.drop; take it out of data.drop (expt keeps it "
                              "out of the features itself)")
        shown = ", ".join(map(str, list(dataset.X.columns)[:20])) + (" ..." if dataset.X.shape[1] > 20 else "")
        raise DataError(f"learner.cv.{key}={column} is not a column of {dataset.name}; set learner.cv.{key} to one "
                        f"of: {shown}")
    if dataset.X.shape[1] < 2 and not keep:
        raise DataError(f"learner.cv.{key}={column} is the only feature of {dataset.name}, and it is never a "
                        "feature; add feature columns")
    values = dataset.X[column]
    missing = int(values.isna().sum())
    if missing:
        what = "group (a group of their own, e.g. 'unknown', is one)" if key == "groups" else "time"
        raise DataError(f"learner.cv.{key}={column} is missing in {missing} rows; every row needs its {what}: fill "
                        "them, or drop those rows from the data")
    if keep:
        return values
    dataset.X = dataset.X.drop(columns=column)
    dataset.numeric = [c for c in dataset.numeric if c != column]
    dataset.categorical = [c for c in dataset.categorical if c != column]
    return values


def _group_codes(values: pd.Series, column: str) -> np.ndarray:
    import pandas as pd

    codes, uniques = pd.factorize(values)
    if len(uniques) < 2:
        raise DataError(f"learner.cv.groups={column} has a single group ({uniques[0]!r}); grouped folds need at "
                        "least 2: group by another column, or set learner.cv.groups=null")
    return codes


def _time_ranks(values: pd.Series, column: str) -> np.ndarray:
    """Numbers as they are, dates (or text that parses as dates) as time stamps; the rank of each row's value."""
    import numpy as np
    import pandas as pd

    if _is_number(values) or pd.api.types.is_datetime64_any_dtype(values):
        stamps = values
    else:
        try:
            stamps = pd.to_datetime(values.astype(str), format="mixed")
        except (ValueError, TypeError, OverflowError):
            raise DataError(f"learner.cv.order={column} holds neither numbers nor dates (e.g. {values.iloc[0]!r}); "
                            "order by a date or number column") from None
    return pd.Series(stamps).rank(method="dense").to_numpy(dtype=np.int64)


def _is_number(values: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(values))


def check_folds(folds: Folds, splitter: Splitter, y: np.ndarray, *, key: str, where: str = "") -> None:
    """Every fold of ``splitter`` over the rows of ``y`` has training and test rows: said before anything runs,
    naming the key to change (``where``: which rows, for a sweep's inner folds)."""
    import numpy as np

    if folds.split == "shuffled":
        return
    assert isinstance(splitter, GroupedSplit | TimeSplit)  # what Folds.splitter makes for the other kinds
    n = int(len(np.unique(splitter.groups if isinstance(splitter, GroupedSplit) else splitter.ranks)))
    wanted = splitter.folds
    if folds.split == "grouped" and n < wanted:
        fix = f"lower {key} to {n}, or group by a finer column" if n >= 2 else \
            "raise search.outer_folds, so that each outer training part holds more groups"  # only inner folds
        raise DataError(f"learner.cv.groups={folds.column} has {n} group{'s' if n != 1 else ''}{where}, fewer than "
                        f"{key}={wanted}; {fix}")
    if folds.split == "time" and n <= wanted + folds.gap:
        most = n - 1 - folds.gap
        fix = f"lower {key} to {most}" if most >= 2 else \
            f"lower learner.cv.gap{' or search.outer_folds' if where else ''}, or add rows"
        raise DataError(f"learner.cv.order={folds.column} has {n} distinct times{where}, too few for {key}={wanted} "
                        f"time-ordered folds with learner.cv.gap={folds.gap}; {fix}")
    try:
        empty = any(len(train) == 0 or len(test) == 0 for train, test in splitter.split(np.empty((len(y), 0)), y))
    except ValueError as exc:
        raise DataError(f"cannot split the rows{where} into {key}={wanted} folds ({exc}); lower {key}") from None
    if empty:
        raise DataError(f"{key}={wanted} leaves a fold{where} without rows ({folds.describe()}); lower {key}")
