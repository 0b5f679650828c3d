"""docs/reference/records.md: the record schema, read from the code that writes records.

The keys come from the dict that ``expt.meta.records.make_record`` returns (its source, with the comment on each
key's line), the required ones from ``REQUIRED``, the kinds of record from the ``source=`` of every call to
``make_record`` under expt/, the model part from ``expt.meta.model_features.model_features``, and the
meta-feature names from running ``expt.meta.dataset_features.dataset_features`` on a bundled classification and
regression dataset. The example is the first record of the shipped knowledge base.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import tokenize
from pathlib import Path

from refgen_md import GENERATED, cell, code, paragraphs, table, text


def _comments(source: str) -> dict[int, str]:
    return {tok.start[0]: tok.string.lstrip("#").strip()
            for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise LookupError(f"no function {name}")


def _returned_dict(function: ast.FunctionDef) -> ast.Dict:
    """The dict literal the function returns, or builds into the name it returns."""
    for node in ast.walk(function):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict):
            return node.value
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            return node.value
    raise LookupError(f"{function.name} returns no dict literal")


def dict_keys(node: ast.Dict, source: str, notes: dict[int, str], prefix: str = "",
              taken: int | None = None) -> list[tuple[str, str, str]]:
    """(dotted key, the expression that fills it, the comment on its line) of a dict literal, nested ones opened
    (a nested key on its parent's last line leaves the comment to the parent)."""
    out = []
    for key, value in zip(node.keys, node.values, strict=True):
        if not isinstance(key, ast.Constant):
            continue
        path = f"{prefix}{key.value}"
        line = value.end_lineno or key.lineno
        note = notes.get(line, "") if line != taken else ""
        if isinstance(value, ast.Dict):
            out.append((path, "", note))
            out += dict_keys(value, source, notes, f"{path}.", line)
        else:
            out.append((path, ast.get_source_segment(source, value) or "", note))
    return out


def _writers(package: Path) -> list[list[str]]:
    """Who makes records: the ``source=`` literal of each ``make_record`` call and where it is."""
    rows = []
    for path in sorted(package.rglob("*.py")):
        source = path.read_text()
        if "make_record(" not in source:
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "make_record":
                args = {k.arg: k.value for k in node.keywords}
                kind = args.get("source")
                literal = ast.get_source_segment(source, kind) if kind is not None else ""
                evaluation = args.get("evaluation")
                rows.append([code(literal or ""), code(ast.get_source_segment(source, evaluation) or "")
                             if evaluation is not None else "",
                             code(f"{path.relative_to(package.parent)}:{node.lineno}")])
    return rows


def _meta_feature_rows(conf: Path) -> list[list[str]]:
    import yaml

    from expt.core.data import load_dataset
    from expt.meta.dataset_features import dataset_features

    seen: dict[str, set[str]] = {}
    for option in ("iris", "diabetes"):  # scikit-learn's bundled data: no download
        spec = yaml.safe_load((conf / "data" / f"{option}.yaml").read_text())
        dataset = load_dataset(spec)
        for name in dataset_features(dataset):
            seen.setdefault(name, set()).add(dataset.task)
    return [[code(name), code(name.split(".")[0]), "yes" if "classification" in tasks else "",
             "yes" if "regression" in tasks else ""] for name, tasks in seen.items()]


def _example(package: Path) -> str:
    with gzip.open(package / "kb" / "records.jsonl.gz", "rt") as f:
        return json.dumps(json.loads(f.readline()), indent=2)


def render(root: Path) -> str:
    """The record reference of the checkout at ``root`` as Markdown."""
    from expt.meta import dataset_features, model_features, records

    package = root / "expt"
    source = (package / "meta" / "records.py").read_text()
    make = _function(ast.parse(source), "make_record")
    fields = dict_keys(_returned_dict(make), source, _comments(source))
    required = set(records.REQUIRED)
    field_rows = [[code(key), "yes" if key in required else "", code(expr), cell(note)] for key, expr, note in fields]

    model_source = (package / "meta" / "model_features.py").read_text()
    model_fn = _function(ast.parse(model_source), "model_features")
    model_rows = [[code(f"model.{key}"), code(expr), cell(note)]
                  for key, expr, note in dict_keys(_returned_dict(model_fn), model_source, _comments(model_source))]
    model_rows.append([code("model.config_key"), code("config_key(out)"),
                       cell((model_features.config_key.__doc__ or "").strip())])

    out = ["# Record schema", "",
           GENERATED.format(module="refgen_records", source="`expt/meta/records.py` and the modules it names"),
           paragraphs(records.__doc__ or ""), "",
           f"Schema version: {code(str(records.SCHEMA))}. A run logs its records as the MLflow artifact "
           f"{code(records.ARTIFACT)}; the records file is {code('tracking.records')} "
           "(see the [config reference](config.md#tracking)).", "",
           "## Keys {#keys}", "",
           paragraphs(ast.get_docstring(make) or ""), "",
           "A reader skips a record that lacks a required key, has another schema version, no finite score or an "
           "unknown task.", "",
           table(["Key", "Required", "Filled from", "Note"], field_rows), "",
           "## Who writes records {#writers}", "",
           table([f"{code('source')}", f"{code('evaluation')}", "Made at"], _writers(package)), "",
           "## The model part {#model}", "",
           paragraphs(model_features.__doc__ or ""), "",
           table(["Key", "Filled from", "Note"], model_rows), "",
           "Left out of a configuration's identity (they change how a model runs, not what it learns): "
           + ", ".join(code(p) for p in model_features.RUNTIME_PARAMS) + ".", "",
           "## Meta-features {#meta-features}", "",
           paragraphs(dataset_features.__doc__ or ""), "",
           f"Meta-features version: {code(str(dataset_features.VERSION))} (records of different versions are not "
           "compared). The names, computed by this version on a classification and a regression dataset:", "",
           table(["Name", "Family", "Classification", "Regression"], _meta_feature_rows(root / "conf")), "",
           "## An example {#example}", "",
           text("The first record of the shipped knowledge base (expt/kb/records.jsonl.gz):"), "",
           "```json", _example(package), "```", ""]
    return "\n".join(out).rstrip() + "\n"
