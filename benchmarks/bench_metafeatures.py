"""expt's dataset meta-features against pymfe's default groups on a 5,000 x 50 numeric table (issue 4's budget: 2 s).

Both sides in one process, after their imports (pymfe's import time is printed too,
since a train run that emits a record would pay it). Needs pymfe (`pip install
'.[bench]'`; `make bench` installs it); without it only expt's side runs.
Usage: bench_metafeatures.py [REPEATS=3]
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings


def main() -> None:
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    from expt.core.data import _make_dataset
    from expt.meta.dataset_features import dataset_features

    warnings.filterwarnings("ignore")
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    X, y = make_classification(n_samples=5000, n_features=50, n_informative=10, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(50)]).assign(y=y)
    data = _make_dataset(frame, "y", "classification", "bench")
    dataset_features(data)  # warm: first calls import the landmarkers' estimators
    ours = []
    for _ in range(repeats):
        start = time.perf_counter()
        features = dataset_features(data)
        ours.append(time.perf_counter() - start)
    print(f"expt: {len(features)} meta-features, median {statistics.median(ours):.3f} s of {repeats} "
          f"(budget 2 s), all finite: {all(np.isfinite(list(features.values())))}")
    try:
        start = time.perf_counter()
        from pymfe.mfe import MFE
    except ImportError:
        print("pymfe not installed (pip install '.[bench]'): no comparison")
        print(f"expt meta-features / budget = {statistics.median(ours) / 2:.2f}x")
        return
    print(f"import pymfe: {time.perf_counter() - start:.2f} s")
    theirs = []
    for _ in range(repeats):
        start = time.perf_counter()
        mfe = MFE(random_state=0)  # default groups
        mfe.fit(X, y, suppress_warnings=True)
        names, values = mfe.extract(suppress_warnings=True)
        theirs.append(time.perf_counter() - start)
    finite = sum(1 for v in values if v is not None and np.isfinite(v))
    print(f"pymfe default groups: {len(names)} meta-features ({finite} finite), median "
          f"{statistics.median(theirs):.3f} s of {repeats}")
    print(f"expt meta-features / budget = {statistics.median(ours) / 2:.2f}x")
    print(f"expt meta-features / pymfe default groups = {statistics.median(ours) / statistics.median(theirs):.3f}x")


if __name__ == "__main__":
    main()
