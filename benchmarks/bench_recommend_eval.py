"""How good `expt recommend` is: the leave-one-group-out evaluation on the shipped knowledge base (issue 14).

The same code as `expt recommend --evaluate` (``expt.meta.evaluate``), on the knowledge base alone
(no ./records.jsonl), so anyone gets the same figures: every recommender and baseline, paired 95%
bootstrap intervals (seeded) and the learning curve. Then the issue's targets, checked from those
figures for the default recommender:
- its top-1 mean t_d below the single best configuration fitted without the group, the 95% interval
  of the paired difference below zero;
- its top-1 below the single best in hindsight (d included);
- its best-of-3 below the static greedy portfolio's best-of-3;
- its learning curve going down (mean top-1 at each size no higher than at the size before).
Usage: python benchmarks/bench_recommend_eval.py [SEED=0]
"""

from __future__ import annotations

import sys
import time


def targets(ev, default: str) -> list[tuple[str, bool, str]]:
    row, rows = ev.rows[default], ev.rows
    vs_single = next(c for c in ev.comparisons if c["recommender"] == default and c["against"] == "single-best")
    top1 = vs_single["top1"]
    curve = [p for p in sorted(ev.curve, key=lambda p: p["size"]) if p["method"] == default]
    steps = [f"{p['top1']:.3f}" for p in curve]
    return [
        (f"top-1 {row['top1']:.3f} < single best without the group {rows['single-best']['top1']:.3f}, "
         f"interval below 0", top1["high"] < 0,
         f"{top1['diff']:+.3f} [{top1['low']:+.3f}, {top1['high']:+.3f}]"),
        (f"top-1 {row['top1']:.3f} < hindsight single best {rows['hindsight']['top1']:.3f}",
         row["top1"] < rows["hindsight"]["top1"], ""),
        (f"best-of-3 {row['best3']:.3f} < static greedy portfolio's {rows['portfolio']['best3']:.3f}",
         row["best3"] < rows["portfolio"]["best3"], ""),
        ("learning curve goes down", all(b["top1"] <= a["top1"] for a, b in zip(curve, curve[1:], strict=False)),
         " -> ".join(steps) + " (sizes " + ", ".join(str(p["size"]) for p in curve) + ")"),
    ]


def main() -> None:
    from expt.cli.evaluation_render import print_evaluation
    from expt.meta.evaluate import evaluate
    from expt.meta.rankers import DEFAULT_METHOD
    from expt.meta.recommend import build_table, rf_default_key
    from expt.meta.records import read_kb

    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    records = read_kb()
    started = time.perf_counter()
    evaluations = [evaluate(build_table(records, task), rf_key=rf_default_key(task), seed=seed)
                   for task in ("classification", "regression")]
    seconds = time.perf_counter() - started
    print_evaluation(evaluations, DEFAULT_METHOD)
    print(f"\n{len(records)} knowledge-base records, seed {seed}, evaluated in {seconds:.1f} s")
    for ev in evaluations:
        print(f"targets, {ev.task} ({DEFAULT_METHOD}):")
        for what, met, detail in targets(ev, DEFAULT_METHOD):
            print(f"  {'met   ' if met else 'MISSED'} {what}" + (f": {detail}" if detail else ""))


if __name__ == "__main__":
    main()
