"""Dataset meta-features: what a dataset looks like to a learner, in numbers comparable across datasets.

Dataset meta-features are computed on a seeded subsample (stratified for
classification) of at most ``max_rows`` rows, after imputing and encoding, in four
families: general (size, types, missing values, classes), statistical (skewness,
correlation, PCA, outliers), information-theoretic (entropies and mutual information
with the target on binned values) and landmarkers (3-fold scores of cheap learners,
scaled so that 0 is the trivial baseline and 1 is perfect). Every value is finite:
a recommender measures distances on them.

Not pymfe: measured on this 2-core machine, pymfe 0.4.4 took 5.3 s to import and
6.5-11 s for its default groups on a 5,000 x 50 numeric table (the budget is 2 s),
and it treats any target as classes, so regression would need code of its own
anyway. ``benchmarks/bench_metafeatures.py`` compares the two.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from expt.core.data import Dataset

VERSION = 1  # bump when a feature's definition changes: records of different versions are not compared
MAX_ROWS = 5_000
LANDMARK_ROWS = 2_000
MAX_CORR_COLUMNS = 200
BINS = 10
MAX_LEVELS = 10  # categorical levels one-hot encoded for the landmarkers; the rest share one column
CLIP = 1e6


def dataset_features(dataset: Dataset, *, seed: int = 0, max_rows: int = MAX_ROWS) -> dict[str, float]:
    """Meta-features of a loaded ``expt.core.data.Dataset``; deterministic for a seed.

    On one thread: OpenBLAS's two threads took 7.7 s for the eigenvalues of a 1,107-column
    correlation matrix on this 2-core machine, one thread 0.16 s.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _dataset_features(dataset, seed, max_rows)


def _dataset_features(dataset: Dataset, seed: int, max_rows: int) -> dict[str, float]:
    import numpy as np

    X, y = _subsample(dataset.X, dataset.y, dataset.task, seed, max_rows)
    numeric = _numeric_matrix(X, dataset.numeric)
    encoded = _encoded_matrix(X, numeric, dataset.categorical)
    classification = dataset.task == "classification"
    target = _target_codes(y) if classification else _bin(np.asarray(y, dtype=float))
    out: dict[str, float] = {}
    out.update(_general(dataset, X))
    out.update(_statistical(numeric, seed))
    out.update(_information(X, numeric, dataset.categorical, target))
    out.update(_target_stats(y, classification))
    out.update(_landmarkers(encoded, y, classification, seed))
    return {k: float(np.clip(np.nan_to_num(v, nan=0.0, posinf=CLIP, neginf=-CLIP), -CLIP, CLIP))
            for k, v in out.items()}


def _subsample(X: pd.DataFrame, y: np.ndarray, task: str, seed: int, max_rows: int) -> tuple[pd.DataFrame, np.ndarray]:
    import numpy as np

    y = np.asarray(y)
    if len(X) <= max_rows:
        return X, y
    index = np.sort(_sample_rows(y, task == "classification", seed, max_rows))
    return X.iloc[index], y[index]


def _numeric_matrix(X: pd.DataFrame, numeric: list[str]) -> np.ndarray:
    """Numeric columns, missing values imputed with the column median (0 for an all-missing column)."""
    import numpy as np

    if not numeric:
        return np.zeros((len(X), 0))
    values = X[numeric].to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        medians = np.nanmedian(np.where(np.isnan(values).all(axis=0), 0.0, values), axis=0)
    return np.where(np.isnan(values), medians, values)


def _categorical_codes(X: pd.DataFrame, categorical: list[str]) -> list[np.ndarray]:
    """Per categorical column, codes of its most frequent levels (missing and rare levels share the last code)."""
    import numpy as np

    out = []
    for col in categorical:
        values = X[col].astype("object").where(X[col].notna(), "<missing>").astype(str)
        top = values.value_counts().index[:MAX_LEVELS]
        codes = np.full(len(values), len(top), dtype=int)
        for i, level in enumerate(top):
            codes[(values == level).to_numpy()] = i
        out.append(codes)
    return out


def _encoded_matrix(X: pd.DataFrame, numeric: np.ndarray, categorical: list[str]) -> np.ndarray:
    """Standardized numeric columns and one-hot categorical levels: the landmarkers' input."""
    import numpy as np

    parts = [_standardize(numeric)]
    for codes in _categorical_codes(X, categorical):
        parts.append(np.eye(codes.max() + 1)[codes])
    matrix = np.hstack(parts) if parts else np.zeros((len(X), 0))
    return matrix if matrix.shape[1] else np.zeros((len(X), 1))


def _standardize(values: np.ndarray) -> np.ndarray:
    import numpy as np

    if values.shape[1] == 0:
        return values
    sd = values.std(axis=0)
    return (values - values.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _target_codes(y: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.unique(np.asarray(y).astype(str), return_inverse=True)[1]


def _bin(values: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Equal-frequency bins (ties share a bin), as integer codes."""
    import numpy as np

    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, values, side="right")


def _general(dataset: Dataset, X: pd.DataFrame) -> dict[str, float]:
    import numpy as np

    n_rows, n_features = dataset.X.shape
    missing = X.isna().to_numpy()
    out = {
        "general.log_rows": math.log10(n_rows),
        "general.log_features": math.log10(max(n_features, 1)),
        "general.log_dimensionality": math.log10(max(n_features, 1) / n_rows),
        "general.categorical_ratio": len(dataset.categorical) / max(n_features, 1),
        "general.missing_ratio": float(missing.mean()) if missing.size else 0.0,
        "general.missing_rows_ratio": float(missing.any(axis=1).mean()) if missing.size else 0.0,
        "general.log_levels_mean": float(np.mean([math.log10(max(X[c].nunique(), 1)) for c in dataset.categorical]))
        if dataset.categorical else 0.0,
    }
    if dataset.task == "classification":
        counts = np.unique(np.asarray(dataset.y).astype(str), return_counts=True)[1]
        p = counts / counts.sum()
        out["general.log_classes"] = math.log2(len(counts))
        out["general.class_imbalance"] = float(counts.min() / counts.max())
        out["general.class_entropy"] = float(-(p * np.log(p)).sum() / math.log(len(counts)))
    return out


def _statistical(values: np.ndarray, seed: int) -> dict[str, float]:
    import numpy as np

    names = ("skew_abs_mean", "skew_abs_sd", "kurtosis_mean", "cor_abs_mean", "cor_abs_max", "outlier_ratio",
             "pca_95_ratio", "pca_first", "constant_ratio", "zero_ratio", "cv_log_mean")
    if values.shape[1] == 0:
        return {f"stat.{n}": 0.0 for n in names}
    sd = values.std(axis=0)
    varying = sd > 1e-12
    z = (values[:, varying] - values[:, varying].mean(axis=0)) / sd[varying]
    skew = (z ** 3).mean(axis=0) if varying.any() else np.zeros(1)
    kurt = (z ** 4).mean(axis=0) - 3 if varying.any() else np.zeros(1)
    out = {
        "stat.skew_abs_mean": float(np.abs(skew).mean()),
        "stat.skew_abs_sd": float(np.abs(skew).std()),
        "stat.kurtosis_mean": float(np.log1p(np.clip(kurt, -2, None) + 2).mean()),
        "stat.outlier_ratio": float((np.abs(z) > 3).mean()) if varying.any() else 0.0,
        "stat.constant_ratio": float(1 - varying.mean()),
        "stat.zero_ratio": float((values == 0).mean()),
    }
    means = np.abs(values.mean(axis=0))
    with np.errstate(all="ignore"):
        cv = np.where(means > 1e-12, sd / means, 0.0)
    out["stat.cv_log_mean"] = float(np.log1p(cv).mean())
    if varying.sum() >= 2:
        if z.shape[1] > MAX_CORR_COLUMNS:  # correlation and PCA on a seeded subset: O(columns^2) memory, ^3 time
            z = z[:, np.sort(np.random.default_rng(seed).choice(z.shape[1], MAX_CORR_COLUMNS, replace=False))]
        corr = np.corrcoef(z, rowvar=False)
        upper = np.abs(corr[np.triu_indices_from(corr, k=1)])
        out["stat.cor_abs_mean"], out["stat.cor_abs_max"] = float(np.nanmean(upper)), float(np.nanmax(upper))
        eig = np.clip(np.linalg.eigvalsh(np.nan_to_num(corr))[::-1], 0, None)
        share = np.cumsum(eig) / eig.sum() if eig.sum() > 0 else np.ones_like(eig)
        out["stat.pca_95_ratio"] = float((np.searchsorted(share, 0.95) + 1) / len(eig))
        out["stat.pca_first"] = float(share[0])
    else:
        out.update({"stat.cor_abs_mean": 0.0, "stat.cor_abs_max": 0.0, "stat.pca_95_ratio": 1.0, "stat.pca_first": 1.0})
    return out


def _entropy(codes: np.ndarray) -> float:
    import numpy as np

    p = np.bincount(codes) / len(codes)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    import numpy as np

    joint = np.bincount(a * (b.max() + 1) + b, minlength=(a.max() + 1) * (b.max() + 1)).reshape(a.max() + 1, -1)
    p = joint / joint.sum()
    pa, pb = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())


def _information(X: pd.DataFrame, numeric: np.ndarray, categorical: list[str], target: np.ndarray) -> dict[str, float]:
    """Entropies and mutual information with the (binned, for regression) target, per attribute."""
    import numpy as np

    columns = [_bin(numeric[:, j]) for j in range(numeric.shape[1])] + _categorical_codes(X, categorical)
    h_target = _entropy(target)
    if not columns or h_target == 0:
        return {"info.attr_entropy_mean": 0.0, "info.mi_mean": 0.0, "info.mi_max": 0.0,
                "info.noise_signal_log": 0.0, "info.equiv_attributes_log": 0.0}
    entropies = np.array([_entropy(c) / math.log(max(c.max() + 1, 2)) for c in columns])
    mi = np.array([_mutual_information(c, target) for c in columns]) / h_target
    raw_entropy = float(np.mean([_entropy(c) for c in columns]))
    mi_mean = float(mi.mean())
    return {
        "info.attr_entropy_mean": float(entropies.mean()),
        "info.mi_mean": mi_mean,
        "info.mi_max": float(mi.max()),
        "info.noise_signal_log": math.log1p(max(raw_entropy / max(mi_mean * h_target, 1e-9) - 1, 0.0)),
        "info.equiv_attributes_log": math.log1p(1 / max(mi_mean, 1e-9)),
    }


def _target_stats(y: np.ndarray, classification: bool) -> dict[str, float]:
    import numpy as np

    if classification:
        return {}
    values = np.asarray(y, dtype=float)
    sd = values.std()
    if sd == 0:
        return {"target.skew": 0.0, "target.kurtosis_log": 0.0, "target.distinct_ratio": 0.0}
    z = (values - values.mean()) / sd
    return {"target.skew": float((z ** 3).mean()), "target.kurtosis_log": float(np.log1p((z ** 4).mean())),
            "target.distinct_ratio": float(len(np.unique(values)) / len(values))}


def _landmarkers(X: np.ndarray, y: np.ndarray, classification: bool, seed: int) -> dict[str, float]:
    """Three-fold scores of cheap learners, as a share of the way from the trivial baseline to perfect.

    Classification: accuracy against the majority class (0 = majority, 1 = all right).
    Regression: R2 (0 = predicting the mean), clipped at -1.
    """
    import warnings

    import numpy as np
    from sklearn.linear_model import Ridge, RidgeClassifier
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    y = np.asarray(y) if classification else np.asarray(y, dtype=float)
    if len(y) > LANDMARK_ROWS:
        index = _sample_rows(y, classification, seed, LANDMARK_ROWS)
        X, y = X[index], y[index]
    if classification:
        learners = {"one_nn": KNeighborsClassifier(1), "stump": DecisionTreeClassifier(max_depth=1, random_state=seed),
                    "tree3": DecisionTreeClassifier(max_depth=3, random_state=seed), "naive_bayes": GaussianNB(),
                    "linear": RidgeClassifier(alpha=1.0)}
        counts = np.unique(y, return_counts=True)[1]
        folds = StratifiedKFold(min(3, int(counts.min())), shuffle=True, random_state=seed) if counts.min() >= 2 \
            else KFold(3, shuffle=True, random_state=seed)
    else:
        learners = {"one_nn": KNeighborsRegressor(1), "stump": DecisionTreeRegressor(max_depth=1, random_state=seed),
                    "tree3": DecisionTreeRegressor(max_depth=3, random_state=seed), "linear": Ridge(alpha=1.0)}
        folds = KFold(3, shuffle=True, random_state=seed)
    splits = list(folds.split(X, y))
    out = {}
    for name, learner in learners.items():
        scores = []
        for train, test in splits:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    predicted = learner.fit(X[train], y[train]).predict(X[test])
                except (ValueError, np.linalg.LinAlgError):
                    scores.append(0.0)
                    continue
            scores.append(_relative_score(y[train], y[test], predicted, classification))
        out[f"land.{name}"] = float(np.mean(scores))
    out["land.linear_minus_tree3"] = out["land.linear"] - out["land.tree3"]
    out["land.one_nn_minus_linear"] = out["land.one_nn"] - out["land.linear"]
    return out


def _sample_rows(y: np.ndarray, classification: bool, seed: int, n: int) -> np.ndarray:
    """A seeded sample of ``n`` row positions, stratified by class where every class has two rows."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    stratify = y if classification and np.unique(y, return_counts=True)[1].min() >= 2 else None
    index, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=stratify)
    return index


def _relative_score(y_train: np.ndarray, y_test: np.ndarray, predicted: np.ndarray, classification: bool) -> float:
    import numpy as np

    if classification:
        values, counts = np.unique(y_train, return_counts=True)
        base = float((y_test == values[counts.argmax()]).mean())
        accuracy = float((predicted == y_test).mean())
        return (accuracy - base) / (1 - base) if base < 1 else 0.0
    total = float(((y_test - y_train.mean()) ** 2).sum())
    if total == 0:
        return 0.0
    return max(1 - float(((y_test - predicted) ** 2).sum()) / total, -1.0)
