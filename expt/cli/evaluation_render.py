"""The tables `expt recommend --evaluate` adds under noise: first picks in score units and in fresh noisy copies,
the probe simulated, and the simultaneous intervals (render.py prints the recorded-table figures)."""

from __future__ import annotations

from typing import Any

NAMES = {"oracle under noise": "oracle under noise",
         "full search": "full search (every configuration; = the oracle)", "portfolio": "static greedy portfolio",
         "adaptive": "adaptive probe", "single-best": "single best, fitted without d's group",
         "rf_defaults": "random forest defaults", "hindsight": "(hindsight: single best, d included)"}


def noise_tables(ev: Any, default: str) -> list[Any]:
    """The tables, or none where the records have no per-fold scores."""
    out = [_simultaneous_table(ev)] if ev.comparisons and "sim_low" in ev.comparisons[0]["top1"] else []
    if not ev.noise or not ev.noise.get("n"):
        return out
    return [*out, _top1_table(ev, default), _probe_table(ev, default), _probe_comparisons(ev, default)]


def _interval(cell: dict[str, float], simultaneous: bool = False) -> str:
    low, high = (cell["sim_low"], cell["sim_high"]) if simultaneous else (cell["low"], cell["high"])
    return f"[{low:+.3f}, {high:+.3f}]"


def _simultaneous_table(ev: Any) -> Any:
    from rich.table import Table

    c0 = ev.comparisons[0]
    out = Table(title=f"the same differences with simultaneous 95% intervals: max-|t| bootstrap over all "
                      f"{c0['family']} differences shown (critical |t| {c0['crit']:.2f}, against 1.96 for one)",
                title_justify="left")
    for col in ("recommender", "against", "top-1", "best-of-3", "best-of-5"):
        out.add_column(col, justify="left" if col in ("recommender", "against") else "right", no_wrap=True)
    for c in ev.comparisons:
        out.add_row(c["recommender"], c["against"], *(f"{c[m]['diff']:+.3f} {_interval(c[m], True)}"
                                                      for m in ("top1", "best3", "best5")))
    return out


def _label(name: str, default: str) -> str:
    from expt.cli.render import EVALUATION_NAMES

    return NAMES.get(name, EVALUATION_NAMES.get(name, name)) + (" ← default" if name == default else "")


def _top1_table(ev: Any, default: str) -> Any:
    from rich.table import Table

    n = ev.noise
    out = Table(title=f"first pick in score units ({ev.metric}: best_d - s_d(pick)) and scored in {n['copies']} "
                      f"fresh noisy copies of d's row ({n['n']} datasets); noise of a difference between two "
                      f"configurations, median row: {n['difference_noise']:.2f} x (best - median) among the better "
                      f"half, {n['difference_noise_all']:.2f} x over all pairs", title_justify="left")
    for col in ("recommender", "t_d recorded", "loss recorded", "t_d fresh", "loss fresh", "t_d fresh (all-pairs)"):
        out.add_column(col, justify="left" if col == "recommender" else "right")
    oracle = n["top1"]["oracle under noise"]
    out.add_row(_label("oracle under noise", default), "—", "—", f"{oracle['t']:.3f}", f"{oracle['loss']:.4f}",
                f"{oracle['t_all']:.3f}")
    rows = {k: v for k, v in n["top1"].items() if k != "oracle under noise"}
    for name, row in sorted(rows.items(), key=lambda kv: (kv[0] == "hindsight", kv[1]["t"])):
        recorded = ev.rows.get(name, {})
        out.add_row(_label(name, default), f"{row['recorded']:.3f}", f"{recorded.get('loss1', float('nan')):.4f}",
                    f"{row['t']:.3f}", f"{row['loss']:.4f}", f"{row['t_all']:.3f}")
    return out


def _probe_table(ev: Any, default: str) -> Any:
    from rich.table import Table

    n = ev.noise
    out = Table(title="the probe, simulated: the user's CV (one noisy copy) keeps the best-looking of the first K, "
                      "scored in a fresh copy; t_d (loss in score units) · share of a full search's fit time",
                title_justify="left")
    out.add_column("probe")
    for k in (1, 3, 5):
        out.add_column(f"K = {k}", justify="right")
    for name in ("full search", "portfolio", "default", "adaptive", "single-best"):
        if name not in n["probe"]:
            continue
        cells = n["probe"][name]
        label = _label(default, default) if name == "default" else _label(name, default)
        out.add_row(label, *(f"{cells[k]['t']:.3f} ({cells[k]['loss']:.4f}) · " + (
            f"{100 * cells[k]['time']:.0f}%" if cells[k]["time"] is not None else "—") for k in (1, 3, 5)))
    return out


def _probe_comparisons(ev: Any, default: str) -> Any:
    from rich.table import Table

    cs = ev.noise["comparisons"]
    family = cs[0]["family"] if cs else 0
    out = Table(title=f"probe, paired differences in t_d (negative: better; default = {default}), one row per K "
                      f"(rows where the two pick alike left out): 95% interval, and simultaneous over the {family} "
                      f"differences (max-|t| bootstrap, critical |t| {cs[0]['crit'] if cs else 0:.2f})",
                title_justify="left")
    for col in ("probe", "against", "K", "difference", "95% interval", "simultaneous", "better/worse"):
        out.add_column(col, justify="left" if col in ("probe", "against") else "right", no_wrap=True)
    for c in cs:
        for k in (1, 3, 5):
            cell = c[f"k{k}"]
            if cell["better"] == 0 and cell["worse"] == 0:
                continue
            out.add_row(c["recommender"], c["against"], str(k), f"{cell['diff']:+.3f}", _interval(cell),
                        _interval(cell, True), f"{cell['better']}/{cell['worse']}")
    return out
