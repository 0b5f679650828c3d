"""A comparison as files: the results table (CSV, Markdown), per-fold scores, the pairs tested, the plots.

These go to the ``grid-<id>`` run as artifacts; the terminal table is drawn by ``expt.cli.grid_render`` from the
same :class:`~expt.grid.stats.Comparison`.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from expt.grid.stats import Comparison, verdict

LEGEND = ("best per dataset in bold; p: corrected resampled t-test (Nadeau & Bengio) of the cell against that "
          "best on the same folds")


def cell_text(out: Comparison, row: str, column: str, markdown: bool = False) -> str:
    """``0.9807 ± 0.0100``, the best in bold (Markdown) and the others with their p against it."""
    cell = out.cells.get((row, column))
    if cell is None:
        return ""
    if cell.status != "ok":
        return cell.status
    text = f"{cell.mean:.4f} ± {cell.std:.4f}"
    if column in out.best.get(row, []):
        return f"**{text}**" if markdown else text
    p = out.p_vs_best.get((row, column))
    return text if p is None or math.isnan(p) else f"{text} (p={p:.2g})"


def markdown(out: Comparison, title: str) -> str:
    header = ["dataset", *out.columns]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in out.rows:
        label = f"{row} ({out.metric[row]})" if row in out.metric else row
        lines.append("| " + " | ".join([label, *(cell_text(out, row, c, markdown=True) for c in out.columns)]) + " |")
    if out.average_rank:
        ranks = [f"{out.average_rank[c]:.2f}" if c in out.average_rank else "" for c in out.columns]
        lines.append("| average rank | " + " | ".join(ranks) + " |")
    lines += ["", LEGEND + ".", ""]
    lines += [f"- {line}" for line in verdict(out) + out.notes]
    diagram = cd_text(out)
    if diagram:
        lines += ["", "Critical-difference diagram (average rank; Nemenyi):", "", "```", *diagram, "```"]
    skipped = [c for c in out.cells.values() if c.status != "ok"]
    if skipped:
        lines += ["", "Cells that did not run:", ""]
        lines += [f"- {c.key}: {c.status}" + (f" ({c.reason})" if c.reason else "") for c in skipped]
    return "\n".join(lines) + "\n"


def results_csv(out: Comparison) -> str:
    """One row per cell: what the table shows, with the run it came from."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "model", "cell", "status", "metric", "mean", "std", "n_folds", "best", "rank",
                     "p_vs_best", "run_id", "folds_hash", "reason"])
    for (row, column), cell in out.cells.items():
        ok = cell.status == "ok"
        writer.writerow([row, column, cell.key, cell.status, cell.metric or "", _num(cell.mean) if ok else "",
                         _num(cell.std) if ok else "", len(cell.scores) if ok else "",
                         int(column in out.best.get(row, [])) if ok else "", _num(out.ranks.get((row, column))),
                         _num(out.p_vs_best.get((row, column))), cell.run_id or "", cell.folds_hash or "",
                         cell.reason or ""])
    return buffer.getvalue()


def folds_csv(out: Comparison) -> str:
    """Every fold score, long format: the paired data the tests ran on, for any other analysis."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "model", "fold", "score", "metric", "folds_hash", "run_id"])
    for (row, column), cell in out.cells.items():
        for fold, score in enumerate(cell.scores):
            writer.writerow([row, column, fold, repr(score), cell.metric, cell.folds_hash, cell.run_id])
    return buffer.getvalue()


def pairs_csv(out: Comparison) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "a", "b", "mean_a", "mean_b", "difference", "t", "p", "paired_folds"])
    for p in out.pairs:
        writer.writerow([p["dataset"], p["a"], p["b"], _num(p["mean_a"]), _num(p["mean_b"]), _num(p["difference"]),
                         _num(p["t"]), _num(p["p"]), int(p["paired_folds"])])
    return buffer.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def cd_diagram(out: Comparison, path: Path) -> bool:
    """Demsar's critical-difference diagram (scikit-posthocs draws it): average ranks on an axis, a bar joining
    models Nemenyi's test does not tell apart, and the CD. False when there is no across-dataset test to draw."""
    if out.nemenyi is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import scikit_posthocs

    columns = out.used_columns
    p = pd.DataFrame(1.0, index=columns, columns=columns)
    for (a, b), value in out.nemenyi["pvalues"].items():
        p.loc[a, b] = p.loc[b, a] = value
    figure, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(columns)))
    scikit_posthocs.critical_difference_diagram(pd.Series(out.average_rank), p, ax=ax, alpha=out.alpha,
                                                label_props={"fontsize": 9}, label_fmt_left="{label} ({rank:.2f})",
                                                label_fmt_right="({rank:.2f}) {label}")
    k, cd = len(columns), out.nemenyi["cd"]
    ax.set_xlim(0.9, max(k, 1 + cd) + 0.1)  # Demsar's axis: every rank from 1 (best) to k
    ax.set_xticks(range(1, k + 1))
    ax.plot([1, 1 + cd], [1.3, 1.3], color="black", linewidth=2, marker="|", markersize=8, clip_on=False)
    ax.text(1 + cd / 2, 1.55, f"CD = {cd:.2f}", ha="center", fontsize=9)
    ax.set_ylim(top=2.0)
    ax.set_title(f"average rank over {len(out.used_rows)} datasets (1 = best); bars join models Nemenyi's test does "
                 f"not tell apart (alpha = {out.alpha})", fontsize=8)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return True


def folds_plot(out: Comparison, path: Path) -> None:
    """Fold scores per dataset, one line per fold across the models: the pairing the tests rely on, visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in out.rows if r in out.metric]
    figure, axes = plt.subplots(1, len(rows), figsize=(2.2 + 1.1 * len(out.columns) * len(rows), 3.4), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        columns = [c for c in out.columns if out.ok(row, c)]
        scores = [out.cells[(row, c)].scores for c in columns]
        for fold in range(min(len(s) for s in scores)):
            ax.plot(range(len(columns)), [s[fold] for s in scores], color="0.7", linewidth=0.8, marker=".")
        ax.plot(range(len(columns)), [out.cells[(row, c)].mean for c in columns], color="black", marker="D",
                linestyle="none", label="mean")
        ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
        ax.set_title(row, fontsize=9)
        ax.set_ylabel(out.metric[row], fontsize=8)
    figure.suptitle("fold scores (grey: one fold across the models), mean in black", fontsize=9)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def as_data(out: Comparison) -> dict[str, Any]:
    """The comparison as JSON-ready data (``expt compare --grid --json``): cells as a list, pairs of names joined."""
    def clean(value: object) -> object:
        return None if isinstance(value, float) and math.isnan(value) else value

    cells = [{"dataset": r, "model": c, "cell": cell.key, "status": cell.status, "metric": cell.metric,
              "mean": clean(cell.mean) if cell.status == "ok" else None,
              "std": clean(cell.std) if cell.status == "ok" else None, "scores": [clean(s) for s in cell.scores],
              "best": c in out.best.get(r, []), "rank": out.ranks.get((r, c)), "p_vs_best": clean(out.p_vs_best.get(
                  (r, c), math.nan)), "run_id": cell.run_id, "folds_hash": cell.folds_hash, "reason": cell.reason}
             for (r, c), cell in out.cells.items()]
    nemenyi = None
    if out.nemenyi is not None:
        nemenyi = {"cd": out.nemenyi["cd"], "q_alpha": out.nemenyi["q_alpha"],
                   "pvalues": [{"a": a, "b": b, "p": p} for (a, b), p in out.nemenyi["pvalues"].items()]}
    return {"datasets": out.rows, "models": out.columns, "alpha": out.alpha, "cells": cells,
            "average_rank": out.average_rank, "used_datasets": out.used_rows, "used_models": out.used_columns,
            "friedman": out.friedman, "wilcoxon": out.wilcoxon, "nemenyi": nemenyi,
            "pairs": [{k: clean(v) for k, v in p.items()} for p in out.pairs], "notes": out.notes,
            "verdict": verdict(out)}


def cd_text(out: Comparison, width: int = 60) -> list[str]:
    """The critical-difference diagram in text, for the terminal and Markdown: each model at its average rank on an
    axis from 1 (best) to k, the CD as a bar, and a bar under each group of models closer than the CD."""
    if out.nemenyi is None:
        return []
    k, cd = len(out.used_columns), out.nemenyi["cd"]
    span = max(k, 1 + cd) - 1

    def x(rank: float) -> int:
        return round((rank - 1) / span * width)

    axis = [" "] * (width + 1)
    labels = [" "] * (width + 8)
    for r in range(1, k + 1):
        axis[x(r)] = "|"
        labels[x(r):x(r) + len(str(r))] = str(r)
    lines = ["".join(labels).rstrip(), "".join(axis).replace(" ", "-")]
    ranked = sorted(out.average_rank.items(), key=lambda item: item[1])
    for name, rank in ranked:
        pos = x(rank)
        text = f"{name} ({rank:.2f})"
        lines.append(" " * pos + "o " + text if pos + len(text) < width else " " * (pos - len(text) - 1) + text + " o")
    lines.append("=" * (x(1 + cd) + 1) + f"  CD = {cd:.3f}")
    groups: list[tuple[int, int]] = []
    for i, (_, low) in enumerate(ranked):
        j = max(j for j in range(i, len(ranked)) if ranked[j][1] - low < cd)
        if j > i and not any(a <= i and j <= b for a, b in groups):
            groups.append((i, j))
    for i, j in groups:
        lines.append(" " * x(ranked[i][1]) + "-" * (x(ranked[j][1]) - x(ranked[i][1]) + 1) + "  not told apart: "
                     + ", ".join(name for name, _ in ranked[i:j + 1]))
    return lines
