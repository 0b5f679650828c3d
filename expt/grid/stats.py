"""Is a difference real? Models compared over datasets (ranks, Friedman, Nemenyi) and on one dataset's folds.

Following Demsar (2006, JMLR 7): across datasets, each model's rank per dataset, averaged; Friedman's test of
"all models are equivalent" on those ranks (scipy); for every pair, Nemenyi's post-hoc test and its critical
difference CD = q_alpha * sqrt(k(k+1) / 6N), q_alpha the studentized range quantile over sqrt(2)
(scikit-posthocs gives the pairwise p-values and draws the diagram). With two models, Wilcoxon's signed-rank
test over datasets replaces Friedman. Within a dataset every model saw the same folds, so fold scores pair up;
their differences are not independent (training sets overlap), which the corrected resampled t-test of Nadeau &
Bengio (2003) accounts for: t = mean(d) / sqrt((1/J + n_test/n_train) * var(d)), J fold differences, J-1 degrees
of freedom, n_test/n_train = 1/(k-1) for k-fold CV (Bouckaert & Frank 2004 for repeated CV).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

ALPHA = 0.05


@dataclass
class CellScores:
    """One cell as the comparison sees it: read from MLflow, the same for a live grid and ``expt compare --grid``."""

    key: str
    row: str
    column: str
    status: str  # ok | skipped | failed | missing
    metric: str | None = None
    scores: list[float] = field(default_factory=list)
    folds: int | None = None  # folds per repetition
    run_id: str | None = None
    folds_hash: str | None = None
    reason: str | None = None

    @property
    def mean(self) -> float:
        """As ``expt train`` logs ``<metric>_mean``: numpy's nanmean over the fold scores."""
        import numpy as np

        return float(np.nanmean(self.scores)) if self.scores else math.nan

    @property
    def std(self) -> float:
        import numpy as np

        return float(np.nanstd(self.scores)) if self.scores else math.nan


@dataclass
class Comparison:
    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], CellScores]
    alpha: float = ALPHA
    metric: dict[str, str] = field(default_factory=dict)
    best: dict[str, list[str]] = field(default_factory=dict)  # per row, the best column(s): exact ties all count
    p_vs_best: dict[tuple[str, str], float] = field(default_factory=dict)
    ranks: dict[tuple[str, str], float] = field(default_factory=dict)
    used_rows: list[str] = field(default_factory=list)  # the complete block the across-dataset tests use
    used_columns: list[str] = field(default_factory=list)
    average_rank: dict[str, float] = field(default_factory=dict)
    friedman: dict[str, float] | None = None
    wilcoxon: dict[str, float] | None = None
    nemenyi: dict[str, Any] | None = None  # cd, q_alpha, p-values by pair
    pairs: list[dict[str, Any]] = field(default_factory=list)  # per dataset, every pair: corrected t-test
    notes: list[str] = field(default_factory=list)

    def ok(self, row: str, column: str) -> bool:
        cell = self.cells.get((row, column))
        return cell is not None and cell.status == "ok"


def corrected_t_test(a: list[float], b: list[float], folds: int) -> tuple[float, float]:
    """Nadeau & Bengio's corrected resampled t-test on paired fold scores: (t, two-sided p)."""
    import numpy as np
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) < 2 or folds < 2:
        return math.nan, math.nan
    mean, var = float(d.mean()), float(d.var(ddof=1))
    if var == 0.0:
        return (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / math.sqrt((1.0 / len(d) + 1.0 / (folds - 1)) * var)
    return t, float(2.0 * stats.t.sf(abs(t), len(d) - 1))


def nemenyi_cd(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """(critical difference, q_alpha) of Nemenyi's test for k models over n datasets (Demsar 2006, sec. 3.2.2)."""
    from scipy.stats import studentized_range

    q_alpha = float(studentized_range.ppf(1.0 - alpha, k, math.inf)) / math.sqrt(2.0)
    return q_alpha * math.sqrt(k * (k + 1) / (6.0 * n)), q_alpha


def compare(cells: list[CellScores], alpha: float = ALPHA) -> Comparison:
    """The whole comparison: per-dataset best and paired tests, then ranks and tests across datasets."""
    rows = list(dict.fromkeys(c.row for c in cells))
    columns = list(dict.fromkeys(c.column for c in cells))
    out = Comparison(rows, columns, {(c.row, c.column): c for c in cells}, alpha)
    for row in rows:
        _within_dataset(out, row)
    _block(out)
    if len(out.used_columns) >= 2 and len(out.used_rows) >= 1:
        _ranks(out)
    if len(out.used_columns) >= 2 and len(out.used_rows) >= 2:
        _across_datasets(out)
    return out


def _within_dataset(out: Comparison, row: str) -> None:
    ok = [out.cells[(row, c)] for c in out.columns if out.ok(row, c)]
    if not ok:
        return
    out.metric[row] = str(ok[0].metric)
    top = max(c.mean for c in ok)
    out.best[row] = [c.column for c in ok if c.mean == top]
    best = out.cells[(row, out.best[row][0])]
    for i, a in enumerate(ok):
        for b in ok[i + 1:]:
            paired = a.folds_hash == b.folds_hash and len(a.scores) == len(b.scores)
            t, p = corrected_t_test(a.scores, b.scores, a.folds or 0) if paired else (math.nan, math.nan)
            out.pairs.append({"dataset": row, "a": a.column, "b": b.column, "mean_a": a.mean, "mean_b": b.mean,
                              "difference": a.mean - b.mean, "t": t, "p": p, "paired_folds": paired})
    for cell in ok:
        if cell.column not in out.best[row]:
            pair = next(p for p in out.pairs if p["dataset"] == row and {p["a"], p["b"]} == {best.column, cell.column})
            out.p_vs_best[(row, cell.column)] = pair["p"]


def _block(out: Comparison) -> None:
    """The complete block (every model on every dataset) the across-dataset tests need; a cell that did not run
    leaves out its model or its dataset, whichever keeps more cells (its dataset on a tie)."""
    full_columns = [c for c in out.columns if all(out.ok(r, c) for r in out.rows)]
    full_rows = [r for r in out.rows if all(out.ok(r, c) for c in out.columns)]
    if len(out.rows) * len(full_columns) >= len(full_rows) * len(out.columns):
        out.used_rows, out.used_columns = list(out.rows), full_columns
    else:
        out.used_rows, out.used_columns = full_rows, list(out.columns)
    left = [c for c in out.columns if c not in out.used_columns] + [r for r in out.rows if r not in out.used_rows]
    if left:
        out.notes.append(f"ranks and tests over the {len(out.used_rows)} datasets x {len(out.used_columns)} models "
                         f"that ran everywhere; left out: {', '.join(left)}")


def _ranks(out: Comparison) -> None:
    from scipy.stats import rankdata

    for row in out.used_rows:
        means = [out.cells[(row, c)].mean for c in out.used_columns]
        for column, rank in zip(out.used_columns, rankdata([-m for m in means], method="average"), strict=True):
            out.ranks[(row, column)] = float(rank)
    for column in out.used_columns:
        out.average_rank[column] = sum(out.ranks[(r, column)] for r in out.used_rows) / len(out.used_rows)


def _across_datasets(out: Comparison) -> None:
    import numpy as np
    from scipy import stats

    matrix = np.array([[out.cells[(r, c)].mean for c in out.used_columns] for r in out.used_rows])
    n, k = matrix.shape
    if k >= 3:
        result = stats.friedmanchisquare(*matrix.T)
        out.friedman = {"statistic": float(result.statistic), "pvalue": float(result.pvalue), "df": k - 1, "n": n}
    else:
        differences = matrix[:, 0] - matrix[:, 1]
        if np.any(differences != 0):
            result = stats.wilcoxon(matrix[:, 0], matrix[:, 1])
            out.wilcoxon = {"statistic": float(result.statistic), "pvalue": float(result.pvalue), "n": n}
    cd, q_alpha = nemenyi_cd(k, n, out.alpha)
    out.nemenyi = {"cd": cd, "q_alpha": q_alpha, "pvalues": _nemenyi_pvalues(matrix, out.used_columns)}
    if n < 5:
        out.notes.append(f"{n} datasets: tests across datasets have little power with fewer than about 10 "
                         "(Demsar 2006); read the per-dataset paired tests too")


def _nemenyi_pvalues(matrix: np.ndarray, columns: list[str]) -> dict[tuple[str, str], float]:
    import warnings

    import scikit_posthocs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ties: Nemenyi's p-values are not tie-corrected (said in the docs)
        table = scikit_posthocs.posthoc_nemenyi_friedman(matrix)
    values = table.to_numpy()
    return {(a, b): float(values[i, j]) for i, a in enumerate(columns) for j, b in enumerate(columns) if i < j}


def verdict(out: Comparison) -> list[str]:
    """The across-dataset result in words, one line each."""
    lines = []
    n, k = len(out.used_rows), len(out.used_columns)
    if out.friedman is not None:
        f = out.friedman
        said = "the models differ" if f["pvalue"] < out.alpha else "no evidence that the models differ"
        lines.append(f"Friedman chi2({f['df']}) = {f['statistic']:.3f}, p = {f['pvalue']:.4g} over {n} datasets: "
                     f"{said} (alpha = {out.alpha})")
    elif out.wilcoxon is not None:
        w = out.wilcoxon
        said = "the two models differ" if w["pvalue"] < out.alpha else "no evidence that the two models differ"
        lines.append(f"Wilcoxon signed-rank over {n} datasets: W = {w['statistic']:.3g}, p = {w['pvalue']:.4g}: "
                     f"{said} (alpha = {out.alpha})")
    if out.nemenyi is not None:
        different = [f"{a} vs {b} (p = {p:.3g})" for (a, b), p in out.nemenyi["pvalues"].items() if p < out.alpha]
        lines.append(f"Nemenyi critical difference {out.nemenyi['cd']:.3f} in average rank ({k} models, {n} datasets, "
                     f"alpha = {out.alpha}): " + ("; ".join(different) + " differ" if different
                                                 else "no pair differs by more"))
    elif k >= 2 and n < 2:
        lines.append("one dataset: no test across datasets; the paired t-tests below compare the models on its folds")
    return lines
