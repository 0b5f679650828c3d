"""A report's data (:func:`expt.publish.report.collect`) as HTML and as Markdown, section by section.

The same sections in both, each with a fixed id (``glance``, ``config``, ``data``, ``model``,
``folds``, ``plots``, ``search`` for a sweep, ``lineage``) so a reader, a link and a test can find
them. Every value from the run is escaped: a tag or a config value is text, never markup.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

SEARCH_PLOTS = ("optimization_history", "outer_vs_inner", "param_importances")
MAX_TRIALS = 60  # rows of a search's trial table; the rest are counted
STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d232a;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:20px;margin:34px 0 10px;border-bottom:2px solid #dde3ea;
padding-bottom:4px}h3{font-size:16px;margin:18px 0 6px}
.sub{color:#5b6670}.estimate{font-size:30px;font-weight:600}.card{background:#fff;border:1px solid #e1e6eb;
border-radius:8px;padding:14px 18px;margin:10px 0}
table{border-collapse:collapse;margin:6px 0;background:#fff;font-size:13px}th,td{border:1px solid #e1e6eb;
padding:4px 8px;text-align:left;vertical-align:top}th{background:#eef2f6}td.n{text-align:right;
font-variant-numeric:tabular-nums}pre{background:#fff;border:1px solid #e1e6eb;padding:10px;overflow:auto;
font-size:12px}code{background:#eef2f6;padding:1px 4px;border-radius:3px}
figure{display:inline-block;margin:8px;background:#fff;border:1px solid #e1e6eb;padding:6px;vertical-align:top}
figure img{max-width:500px;height:auto;display:block}figcaption{font-size:12px;color:#5b6670;text-align:center}
nav a{margin-right:12px}.failed{color:#b3261e}
"""


def fmt(value: object, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def when(ms: int | None) -> str:
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "—"


def title(data: dict[str, Any]) -> str:
    g = data["glance"]
    kind = "sweep" if data["kind"] == "sweep" else "train run"
    return f"{g['data']} · {g['model']} · {kind} {data['name']}"


def sections(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(id, heading) in the order both renderings follow."""
    out = [("glance", "At a glance"), ("config", "Configuration"), ("data", "Data"), ("model", "Model"),
           ("folds", "Outer folds" if data["kind"] == "sweep" else "Folds"), ("plots", "Evaluation plots")]
    if data["kind"] == "sweep":
        out.append(("search", "Search history and parameter importances"))
    return [*out, ("lineage", "Lineage")]


def estimate(data: dict[str, Any]) -> str:
    g = data["glance"]
    text = f"{g['metric']} {fmt(g['estimate'])} ± {fmt(g['spread'])}"
    if data["kind"] == "sweep":
        text += f" (outer folds, unbiased; mean inner best {fmt(g['inner'])}, optimistic)"
    return text


def glance_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    g = data["glance"]
    rows = [("data", f"{g['data']} ({g['task']})"), ("model", f"{g['model']} (family {g['family']})"),
            ("estimate", estimate(data)), ("protocol", g["protocol"]), ("seed", fmt(g["seed"])),
            ("run", f"{data['name']} ({data['run_id']}), {data['status']}"), ("user", data["user"]),
            ("started", when(data["started"])), ("ended", when(data["ended"])), ("store", data["uri"])]
    if data.get("description"):
        rows.insert(0, ("description", data["description"]))
    rows += [(f"tag {k}", v) for k, v in data["user_tags"].items()]
    return rows


def data_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    spec, record = data["data"], data.get("record") or {}
    shape = record.get("dataset", {})
    rows = [("name", spec.get("name")), ("source", spec.get("source")), ("target", spec.get("target")),
            ("task", spec.get("task"))]
    rows += [(k, spec.get(k)) for k in ("id", "path", "item") if spec.get(k)]
    rows += [(k.replace("_", " "), shape.get(k)) for k in ("n_rows", "n_features", "n_classes") if shape.get(k)]
    return [(k, fmt(v)) for k, v in rows if v is not None]


def model_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    model = (data.get("record") or {}).get("model") or {}
    params = model.get("params") or {k[len("model.estimator."):]: v for k, v in data["params"].items()
                                     if k.startswith("model.estimator.") and not k.endswith("_target_")}
    rows = [("family", model.get("family") or data["glance"]["family"]),
            ("class", model.get("target") or data["params"].get("model.estimator._target_")),
            ("parameters (fitted)", fmt(model.get("n_parameters")) if model.get("n_parameters") is not None
             else "not counted (no refit model, or a kind without a count)"),
            ("pipeline steps", " → ".join(model.get("steps") or []) or "—")]
    return rows + [(f"hyperparameter {k}", fmt(v)) for k, v in sorted(params.items())]


def meta_features(data: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(((data.get("record") or {}).get("meta_features") or {}).items()))


def fold_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    metric = data["metric"]
    if data["kind"] == "sweep":
        head = ["unit", f"outer {metric}", f"inner best {metric}", "best trial", "trials", "pruned", "failed",
                "best parameters", "other outer metrics"]
        rows = [[u["unit"], fmt(u["outer"]), fmt(u["inner best"]), fmt(u["best trial"]), fmt(u["trials"]),
                 fmt(u["pruned"]), fmt(u["failed"]), ", ".join(f"{k}={v}" for k, v in u["best params"].items()),
                 ", ".join(f"{k} {fmt(v)}" for k, v in u["other metrics"].items())] for u in data["units"]]
        return head, rows
    names = [m["metric"] for m in data["metrics"]] or [metric]
    head = ["fold", *names, f"train {metric}", "fit s", "n train", "n test", "status"]
    rows = [[str(f["fold"]), *(fmt(f["scores"].get(n)) for n in names), fmt(f[f"train {metric}"]), fmt(f["fit s"], 3),
             fmt(f["n train"]), fmt(f["n test"]), f["status"] + (f": {f['error']}" if f.get("error") else "")]
            for f in data["folds"]]
    if data["metrics"]:
        rows.append(["mean ± std", *(f"{fmt(m['mean'])} ± {fmt(m['std'])}" for m in data["metrics"]), "", "", "", "",
                     ""])
    return head, rows


def plots_of(data: dict[str, Any], search: bool) -> list[dict[str, str]]:
    """The evaluation plots (``search=False``: out-of-fold, the run's and each outer fold's) or a sweep's search
    plots (optimization history, inner vs outer, parameter importances)."""
    own = [p for p in data["plots"] if (p["key"] in SEARCH_PLOTS) == search]
    return own if search else own + data.get("fold_plots", [])


def trial_rows(trials: list[dict[str, Any]]) -> tuple[list[list[str]], int]:
    best = sorted(trials, key=lambda t: -(t["score"] if t["score"] is not None else -math.inf))
    shown = sorted(best[:MAX_TRIALS], key=lambda t: t["trial"])
    rows = [[str(t["trial"]), t["state"], fmt(t["score"]), ", ".join(f"{k}={v}" for k, v in sorted(t["params"].items()))
             ] for t in shown]
    return rows, len(trials) - len(shown)


# --------------------------------------------------------------------------- HTML


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(head: list[str], rows: list[list[str]], numeric: bool = True) -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td class="{"n" if numeric and i else ""}">{_e(c)}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _figures(plots: list[dict[str, str]], empty: str) -> str:
    if not plots:
        return f'<p class="sub">{_e(empty)}</p>'
    return "".join(f'<figure id="plot-{_e(p["key"])}"><img src="{p["uri"]}" alt="{_e(p["title"])}">'
                   f'<figcaption>{_e(p["title"])}</figcaption></figure>' for p in plots)


def _html_section(data: dict[str, Any], key: str) -> str:
    if key == "glance":
        metrics = [[m["metric"] + (" (selects)" if m["selects"] else ""), fmt(m["mean"]), fmt(m["std"])]
                   for m in data.get("metrics", [])]
        extra = f"<h3>Every metric</h3>{_table(['metric', 'mean', 'std'], metrics)}" if metrics else ""
        return f'<div class="card"><div class="estimate">{_e(estimate(data))}</div></div>' \
               f"{_pairs(glance_rows(data))}{extra}"
    if key == "config":
        return f"<pre>{_e(data['config'])}</pre>"
    if key == "data":
        features = meta_features(data)
        table = _table(["meta-feature", "value"], [[k, fmt(v)] for k, v in features.items()]) if features else \
            '<p class="sub">meta-features not recorded (tracking.records=null)</p>'
        return f"{_pairs(data_rows(data))}<h3>Meta-features</h3>{table}"
    if key == "model":
        return _pairs(model_rows(data))
    if key == "folds":
        return _table(*fold_table(data))
    if key == "plots":
        return _figures(plots_of(data, search=False), "no evaluation plots: this run was made with "
                                                      "tracking.plots=false or before expt drew them")
    if key == "search":
        parts = [_figures(plots_of(data, search=True), "no search plots logged")]
        for unit, trials in data["history"].items():
            rows, more = trial_rows(trials)
            note = f'<p class="sub">and {more} more trials</p>' if more else ""
            parts.append(f"<h3>{_e(unit)}: {len(trials)} trials</h3>"
                         f"{_table(['trial', 'state', 'inner score', 'parameters'], rows)}{note}")
        return "".join(parts)
    lineage = data["lineage"]
    pairs = [(k, v) for k, v in lineage.items() if k not in ("packages", "rerun", "check")]
    pairs += [(f"package {k}", v) for k, v in lineage.get("packages", {}).items()]
    return f"<p>Reproduce it: <code>{_e(lineage['rerun'])}</code> (add <code>--check</code> to compare every " \
           f"score and the model's predictions exactly).</p>{_pairs(pairs)}"


def render_html(data: dict[str, Any]) -> str:
    nav = "".join(f'<a href="#{k}">{_e(h)}</a>' for k, h in sections(data))
    body = "".join(f'<section id="{k}"><h2>{_e(h)}</h2>{_html_section(data, k)}</section>' for k, h in sections(data))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title(data))}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{STYLE}</style></head>'
            f'<body><main><h1>{_e(title(data))}</h1><p class="sub">expt report · {_e(when(data["started"]))}</p>'
            f"<nav>{nav}</nav>{body}</main></body></html>\n")


# --------------------------------------------------------------------------- Markdown


def _md(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]) + "\n"


def _md_images(plots: list[dict[str, str]], refs: list[dict[str, str]], empty: str) -> str:
    refs += plots
    return "\n".join(f"![{p['title']}][{p['key']}]" for p in plots) + "\n" if plots else f"_{empty}_\n"


def _md_section(data: dict[str, Any], key: str, refs: list[dict[str, str]]) -> str:
    if key == "glance":
        metrics = [[m["metric"], fmt(m["mean"]), fmt(m["std"])] for m in data.get("metrics", [])]
        return f"**{estimate(data)}**\n\n" + _md_table(["", ""], [list(r) for r in glance_rows(data)]) + \
            ("\n" + _md_table(["metric", "mean", "std"], metrics) if metrics else "")
    if key == "config":
        return f"```yaml\n{data['config'].rstrip()}\n```\n"
    if key == "data":
        features = meta_features(data)
        return _md_table(["", ""], [list(r) for r in data_rows(data)]) + "\n### Meta-features\n\n" + (
            _md_table(["meta-feature", "value"], [[k, fmt(v)] for k, v in features.items()]) if features
            else "_not recorded (tracking.records=null)_\n")
    if key == "model":
        return _md_table(["", ""], [list(r) for r in model_rows(data)])
    if key == "folds":
        return _md_table(*fold_table(data))
    if key == "plots":
        return _md_images(plots_of(data, search=False), refs, "no evaluation plots (tracking.plots=false)")
    if key == "search":
        out = _md_images(plots_of(data, search=True), refs, "no search plots logged")
        for unit, trials in data["history"].items():
            rows, more = trial_rows(trials)
            out += f"\n### {unit}: {len(trials)} trials\n\n" + _md_table(["trial", "state", "inner score",
                                                                          "parameters"], rows)
            out += f"\n_and {more} more trials_\n" if more else ""
        return out
    lineage = data["lineage"]
    rows = [[k, fmt(v)] for k, v in lineage.items() if k not in ("packages", "rerun", "check")]
    rows += [[f"package {k}", v] for k, v in lineage.get("packages", {}).items()]
    return f"Reproduce it: `{lineage['rerun']}` (add `--check` to compare exactly).\n\n" + _md_table(["", ""], rows)


def render_markdown(data: dict[str, Any]) -> str:
    refs: list[dict[str, str]] = []
    parts = [f"# {title(data)}\n", f"_expt report · {when(data['started'])}_\n"]
    for key, heading in sections(data):
        parts.append(f'<a id="{key}"></a>\n\n## {heading}\n\n{_md_section(data, key, refs)}')
    parts += [f"[{p['key']}]: {p['uri']}" for p in refs]
    return "\n".join(parts) + "\n"
