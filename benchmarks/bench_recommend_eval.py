"""How good `expt recommend` is: the leave-one-group-out evaluation on the shipped knowledge base (issue 24).

The same code as `expt recommend --evaluate` (``expt.meta.evaluate``), on the knowledge base alone
(no ./records.jsonl), so anyone gets the same figures: every recommender and baseline, paired 95%
bootstrap intervals (seeded), the learning curve, the figures under noise and the probe simulated. The
groups the default recommender was not chosen on (those not in recipes/kb/preregistration_groups.tsv)
are also reported alone: the confirmation of a method fixed before they existed. Then issue 24's targets,
checked from those figures:
- regression: the default's top-1 minus the single best's, paired 95% interval below zero on all groups,
  and the point estimate below zero on the new groups alone;
- classification: the default is the single best unless its inner leave-one-group-out chose otherwise
  (ridge: alpha = inf); where it did, the interval's upper bound at most +0.02;
- the probe with K = 5 (simulated): within 0.02 of the full search on regression, below the static
  portfolio's top 5 on classification, each at most 20% of the full search's fit time;
- the learning curve of the default's top-1 going down on regression from 25 groups to all.

Two evaluations, in this order (decided before the rebuilt knowledge base was first evaluated):
1. issue 24's, pre-registered: the configurations of the portfolio when the default was fixed (commit 68bdea4;
   the boosting families joined the portfolio after it, a0da98f), on every dataset of the rebuilt knowledge base;
2. issue 23's: the whole portfolio, the LightGBM, XGBoost and CatBoost configurations included, as
   `expt recommend` uses it.
Usage: python benchmarks/bench_recommend_eval.py [SEED=0]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

PREREGISTERED = Path(__file__).resolve().parents[1] / "recipes" / "kb" / "preregistration_groups.tsv"


def new_groups(table) -> set[str]:
    known = {tuple(line.split("\t")) for line in PREREGISTERED.read_text().splitlines()
             if line and not line.startswith("#")}
    return {g for g in table.groups if (table.task, g) not in known}


def _interval(c: dict) -> str:
    return f"{c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"


def targets(ev, default: str) -> list[tuple[str, bool, str]]:
    vs_single = next(c for c in ev.comparisons if c["recommender"] == default and c["against"] == "single-best")
    top1 = vs_single["top1"]
    out = []
    if ev.task == "regression":
        out.append(("top-1 - single best, interval below 0 (all groups)", top1["high"] < 0, _interval(top1)))
        sub = next((c for c in ev.subset.get("comparisons", []) if c["against"] == "single-best"), None)
        out.append((f"top-1 - single best below 0 on the {ev.subset.get('groups', 0)} new groups alone",
                    sub is not None and sub["top1"]["diff"] < 0, _interval(sub["top1"]) if sub else "no new groups"))
        curve = [p for p in sorted(ev.curve, key=lambda p: p["size"]) if p["method"] == default and p["size"] >= 25]
        out.append(("learning curve goes down from 25 groups to all",
                    len(curve) > 1 and all(b["top1"] <= a["top1"] for a, b in zip(curve, curve[1:], strict=False)),
                    " -> ".join(f"{p['top1']:.3f} ({p['size']})" for p in curve)))
    else:
        alphas = ev.chosen.get(default, {}).get("alpha", {})
        learned = sum(n for v, n in alphas.items() if v != "inf")
        out.append((f"single best unless the inner selection chose the regression ({learned} of "
                    f"{sum(alphas.values())} outer folds did); then the upper bound <= +0.02",
                    learned == 0 or top1["high"] <= 0.02, _interval(top1)))
    probe = ev.noise.get("probe", {})
    if probe:
        full, static, adaptive = probe["full search"][5], probe["portfolio"][5], probe["adaptive"][5]
        if ev.task == "regression":
            out.append(("probe K=5 within 0.02 of the full search", adaptive["t"] - full["t"] <= 0.02,
                        f"{adaptive['t']:.3f} vs {full['t']:.3f}"))
        else:
            out.append(("probe K=5 below the static portfolio's top 5", adaptive["t"] < static["t"],
                        f"{adaptive['t']:.3f} vs {static['t']:.3f}"))
        out.append(("probe K=5 at most 20% of the full search's fit time", adaptive["time"] <= 0.2,
                    f"{adaptive['time']:.0%}"))
    return out


BOOSTING = ("lightgbm", "xgboost", "catboost")  # the families added after the default was fixed


def report(records: list, what: str, seed: int) -> None:
    from expt.cli.evaluation_render import print_evaluation
    from expt.meta.evaluate import evaluate
    from expt.meta.rankers import DEFAULT_METHOD
    from expt.meta.recommend import build_table, rf_default_key

    print(f"\n=== {what} ===")
    started = time.perf_counter()
    evaluations = []
    for task in ("classification", "regression"):
        table = build_table(records, task)
        evaluations.append(evaluate(table, rf_key=rf_default_key(task), seed=seed, only=new_groups(table)))
    seconds = time.perf_counter() - started
    print_evaluation(evaluations, DEFAULT_METHOD)
    print(f"\n{len(records)} knowledge-base records, seed {seed}, evaluated in {seconds:.1f} s")
    for ev in evaluations:
        if ev.subset:
            rows = ev.subset["rows"]
            print(f"{ev.task}, the {ev.subset['groups']} groups new since the default was fixed ({ev.subset['n']} "
                  "datasets), top-1 t_d: " + ", ".join(f"{name} {row['top1']:.3f}" for name, row in rows.items()))
        print(f"targets, {ev.task} ({DEFAULT_METHOD}):")
        for what_, met, detail in targets(ev, DEFAULT_METHOD):
            print(f"  {'met   ' if met else 'MISSED'} {what_}" + (f": {detail}" if detail else ""))


def main() -> None:
    from expt.meta.records import read_kb

    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    records = read_kb()
    report([r for r in records if r["model"]["family"] not in BOOSTING],
           "issue 24, pre-registered: the portfolio as it was when the default was fixed (no boosting families)", seed)
    report(records, "issue 23: the whole portfolio, LightGBM, XGBoost and CatBoost included", seed)


if __name__ == "__main__":
    main()
