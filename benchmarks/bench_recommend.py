"""``expt recommend`` latency with the shipped knowledge base plus 10,000 records (issues 4 and 24: under 1 s
after imports).

The records are made here: 500 datasets x 20 configurations with random meta-features
and scores, in a JSON-lines file like the one runs append to. Timed, after imports:
reading the file, building the table, computing the query dataset's meta-features
(breast_cancer) and ranking with the default recommender, as `expt recommend dataset.yaml --records FILE` does.
Usage: bench_recommend.py [N_RECORDS=10000] [REPEATS=5]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def make_records(path: Path, n: int, configs: int = 20, seed: int = 0) -> None:
    import numpy as np

    from expt.core.data import load_dataset
    from expt.meta.dataset_features import VERSION, dataset_features

    rng = np.random.default_rng(seed)
    template = dataset_features(load_dataset({"source": "sklearn", "id": "breast_cancer", "target": "target"}))
    names = list(template)
    with open(path, "w") as fh:
        for i in range(n // configs):
            features = dict(zip(names, rng.normal(size=len(names)).tolist(), strict=True))
            for c in range(configs):
                score = float(rng.uniform(0.5, 1.0))
                fh.write(json.dumps({
                    "schema": 1, "id": f"bench/{i}/{c}", "created": "2026-11-23T00:00:00Z", "expt_version": "0",
                    "dataset": {"name": f"d{i}", "fingerprint": f"f{i}", "task": "classification", "target": "y",
                                "n_rows": 1000, "n_features": 30, "n_classes": 2},
                    "meta_features": features, "meta_features_version": VERSION,
                    "model": {"name": "svm", "family": "svm", "params": {"C": float(2 ** c)}, "preprocessing": {},
                              "config_key": f"svm(C={2 ** c})|", "steps": [], "n_parameters": None},
                    "config": {"model_option": "svm"}, "metric": {"name": "accuracy", "direction": "maximize"},
                    "scores": [score] * 5, "score": score, "score_std": 0.0, "evaluation": "5-fold CV",
                    "seed": 0, "source": {"kind": "bench"}}, sort_keys=True) + "\n")


def main() -> None:
    from expt.core.data import load_dataset
    from expt.meta.advise import recommend
    from expt.meta.dataset_features import dataset_features
    from expt.meta.rankers import DEFAULT_METHOD
    from expt.meta.recommend import build_table
    from expt.meta.records import read_records

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory(prefix="expt-bench-") as tmp:
        path = Path(tmp) / "records.jsonl"
        make_records(path, n)
        print(f"{n} records, {path.stat().st_size / 1e6:.1f} MB")
        data = load_dataset({"source": "sklearn", "id": "breast_cancer", "target": "target"})
        parts: dict[str, list[float]] = {"read": [], "table": [], "meta-features": [], "rank": [], "total": []}
        for _ in range(repeats):
            t0 = time.perf_counter()
            records = read_records([str(path)], kb=True)
            t1 = time.perf_counter()
            table = build_table(records, "classification")
            t2 = time.perf_counter()
            features = dataset_features(data)
            t3 = time.perf_counter()
            recs, _ = recommend(table, features, method=DEFAULT_METHOD, top=5)
            t4 = time.perf_counter()
            for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=True):
                parts[key].append(value)
        assert len(recs) == 5 and len(table.datasets) >= n // 20
        print(", ".join(f"{k} {statistics.median(v):.3f} s" for k, v in parts.items()) + f" (medians of {repeats})")
        print(f"expt recommend with the knowledge base + {n} records / 1 s budget = "
              f"{statistics.median(parts['total']):.2f}x")
    # The knowledge base alone, from its packed form (what read_records uses) and from the records file.
    import gzip

    from expt.meta.records import default_kb_path, parse_records, read_kb

    packed, plain = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        read_kb()
        t1 = time.perf_counter()
        parse_records(gzip.decompress(default_kb_path().read_bytes()))
        packed.append(t1 - t0)
        plain.append(time.perf_counter() - t1)
    print(f"the knowledge base alone: {statistics.median(packed):.3f} s packed, {statistics.median(plain):.3f} s "
          f"from the records file ({statistics.median(packed) / statistics.median(plain):.2f}x; medians of {repeats})")


if __name__ == "__main__":
    main()
