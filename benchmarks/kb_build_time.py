"""How long the knowledge base took to build, read from its shards (issue 24's closing figure).

Every record carries the time its cell finished (``created``, to the second). The build ran in pieces (``make kb``
stops after 2 hours; sessions ended and resumed on a fresh clone), so the wall time is the sum of the gaps between
consecutive finishes, leaving out a gap longer than GAP minutes (the build was not running then). Also printed:
the fit seconds the records state (per fit, × folds × repeats = the cells' fitting time), which is the build's work
without its meta-features, data loading and process overhead.

Usage: python benchmarks/kb_build_time.py [SHARDS=recipes/kb/shards] [GAP=15]
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path


def main() -> None:
    from expt.kb.shards import SHARDS, read_shard

    shards = Path(sys.argv[1]) if len(sys.argv) > 1 else SHARDS
    gap = float(sys.argv[2]) * 60 if len(sys.argv) > 2 else 15 * 60.0
    records = [r for path in sorted(shards.glob("*.jsonl.gz")) for r in read_shard(path)]
    if not records:
        raise SystemExit(f"no records in {shards}")
    times = sorted(datetime.fromisoformat(r["created"].replace("Z", "+00:00")).timestamp() for r in records)
    steps = [b - a for a, b in zip(times, times[1:], strict=False)]
    running = sum(s for s in steps if s <= gap)
    pauses = sum(1 for s in steps if s > gap)
    fitting = sum(r.get("fit_seconds", 0.0) * r["protocol"]["folds"] * r["protocol"].get("repeats", 1)
                  for r in records)
    datasets = {r["dataset"]["name"] for r in records}
    configs = {r["model"]["config_key"] for r in records}
    print(f"{len(records)} records: {len(datasets)} datasets x {len(configs)} configurations "
          f"({len(list(shards.glob('*.jsonl.gz')))} shards)")
    print(f"wall time while building: {running / 3600:.2f} h in {pauses + 1} pieces "
          f"(gaps over {gap / 60:.0f} min left out), {datetime.fromtimestamp(times[0]):%Y-%m-%d %H:%M} to "
          f"{datetime.fromtimestamp(times[-1]):%Y-%m-%d %H:%M}")
    print(f"fitting time the records state: {fitting / 3600:.2f} CPU-hours (one thread per fit)")


if __name__ == "__main__":
    main()
