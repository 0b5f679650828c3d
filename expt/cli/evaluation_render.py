"""What `expt recommend --evaluate` prints: the recorded-table figures (every recommender and baseline, paired
differences, the learning curve), and the tables under noise: first picks in score units and in fresh noisy
copies, the probe simulated, and the simultaneous intervals."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

    from expt.meta.evaluate import Evaluation

EVALUATION_NAMES = {"ridge": "ridge first pick, then portfolio", "conditioned": "conditioned portfolio",
                    "portfolio": "static greedy portfolio",
                    "knn": "knn (meta-features)", "single-best": "single best, fitted without d's group",
                    "rf_defaults": "random forest defaults", "random": "random (expected)",
                    "hindsight": "(hindsight: single best, d included)"}


def print_evaluation(evaluations: list[Evaluation], default: str) -> None:
    from rich.console import Console

    console = Console(width=max(Console().width, 132))
    for ev in evaluations:
        if not ev.n_datasets:
            console.print(f"{ev.task}: fewer than 3 datasets with records; leave-one-group-out needs at least 3",
                          highlight=False)
            continue
        console.print(_evaluation_table(ev, default))
        console.print(_comparison_table(ev))
        for table in noise_tables(ev, default):
            console.print(table)
        if ev.curve:
            console.print(_curve_table(ev))
        chosen = "; ".join(f"{m} " + ", ".join(f"{p} " + " ".join(f"{v}×{n}" for v, n in sorted(
            counts.items(), key=lambda kv: -kv[1])) for p, counts in params.items())
            for m, params in ev.chosen.items() if params)
        console.print(f"chosen by the inner leave-one-group-out (value×outer folds): {chosen}", highlight=False)


def _evaluation_table(ev: Evaluation, default: str) -> Table:
    from rich.table import Table

    out = Table(title=f"leave-one-group-out · {ev.task} · {ev.n_datasets} datasets in {ev.n_groups} groups, "
                      f"{ev.n_configs} configurations · {ev.metric}", title_justify="left")
    for col in ("recommender", "top-1 t_d", "top-1 loss", "best-of-3", "best-of-5", "hit@1", "datasets"):
        out.add_column(col, justify="left" if col == "recommender" else "right")
    for name, row in sorted(ev.rows.items(), key=lambda kv: (kv[0] == "hindsight", kv[1]["top1"])):
        label = EVALUATION_NAMES.get(name, name) + (" ← default" if name == default else "")
        loss = f"{row['loss1']:.4f}" if "loss1" in row else "—"  # best_d - s_d(first pick), in the metric's units
        out.add_row(label, f"{row['top1']:.3f}", loss, f"{row['best3']:.3f}", f"{row['best5']:.3f}",
                    f"{row['hit1']:.2f}", str(row["n"]))
    return out


def _comparison_table(ev: Evaluation) -> Table:
    from rich.table import Table

    out = Table(title=f"paired differences in t_d (negative: better), 95% bootstrap intervals over groups "
                      f"({ev.draws} draws, seed {ev.seed})", title_justify="left")
    for col in ("recommender", "against", "top-1", "best-of-3", "best-of-5", "top-1 better/worse"):
        out.add_column(col, justify="left" if col in ("recommender", "against") else "right", no_wrap=True)
    for c in ev.comparisons:
        cells = [f"{c[m]['diff']:+.3f} [{c[m]['low']:+.3f}, {c[m]['high']:+.3f}]" for m in ("top1", "best3", "best5")]
        out.add_row(c["recommender"], c["against"], *cells, f"{c['top1']['better']}/{c['top1']['worse']}")
    return out


def _curve_table(ev: Evaluation) -> Table:
    from rich.table import Table

    sizes = sorted({(p["all"], p["size"]) for p in ev.curve})
    out = Table(title="learning curve: mean top-1 t_d (best-of-3) by number of training groups; mean over "
                      f"{max(p['seeds'] for p in ev.curve)} seeds (± sd over seeds)", title_justify="left")
    out.add_column("recommender")
    for is_all, size in sizes:
        out.add_column(f"all ({size})" if is_all else str(size), justify="right")
    for method in dict.fromkeys(p["method"] for p in ev.curve):
        cells = {(p["all"], p["size"]): p for p in ev.curve if p["method"] == method}
        out.add_row(method, *(f"{cells[s]['top1']:.3f} ± {cells[s]['top1_sd']:.3f} ({cells[s]['best3']:.3f})"
                              if not s[0] else f"{cells[s]['top1']:.3f} ({cells[s]['best3']:.3f})" for s in sizes))
    return out


NAMES = {"oracle under noise": "oracle under noise",
         "full search": "full search (every configuration; = the oracle)", "portfolio": "static greedy portfolio",
         "adaptive": "adaptive probe", "single-best": "single best, fitted without d's group",
         "rf_defaults": "random forest defaults", "hindsight": "(hindsight: single best, d included)"}


def noise_tables(ev: Evaluation, default: str) -> list[Table]:
    """The tables, or none where the records have no per-fold scores."""
    out = [_simultaneous_table(ev)] if ev.comparisons and "sim_low" in ev.comparisons[0]["top1"] else []
    if not ev.noise or not ev.noise.get("n"):
        return out
    return [*out, _top1_table(ev, default), _probe_table(ev, default), _probe_comparisons(ev, default)]


def _interval(cell: dict[str, float], simultaneous: bool = False) -> str:
    low, high = (cell["sim_low"], cell["sim_high"]) if simultaneous else (cell["low"], cell["high"])
    return f"[{low:+.3f}, {high:+.3f}]"


def _simultaneous_table(ev: Evaluation) -> Table:
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
    return NAMES.get(name, EVALUATION_NAMES.get(name, name)) + (" ← default" if name == default else "")


def _top1_table(ev: Evaluation, default: str) -> Table:
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


def _probe_table(ev: Evaluation, default: str) -> Table:
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


def _probe_comparisons(ev: Evaluation, default: str) -> Table:
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
