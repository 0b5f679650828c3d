"""docs/reference/config.md: the config groups under conf/ and the schema a composed config is validated against.

Each option's keys, defaults and the comments beside them are read from its YAML file (an option that extends
another of its group through ``defaults:``, like ``learner=quick`` or every ``search/*.yaml``, shows the merged
keys); the checks per key come from ``expt.core.schema.SCHEMA``, the typed fields from ``expt.core.settings``.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from refgen_md import GENERATED, cell, code, paragraphs, prose, table, text

# `key: value  # comment` or `key:  # comment`; keys in this tree are plain or dotted (search spaces).
_KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[^\s#:'\"\-][^:#]*?):(?:\s+(?P<rest>.*))?$")


def comments(source: str) -> tuple[list[str], dict[str, str]]:
    """(the file's header comment lines, {dotted key: its comment}): a key's comment is the one on its line, else the
    comment lines right above it."""
    header: list[str] = []
    notes: dict[str, str] = {}
    above: list[str] = []
    stack: list[tuple[int, str]] = []
    seen_key = False
    for line in source.splitlines():
        stripped = line.strip()
        if not stripped:
            above = []
            continue
        if stripped.startswith("#"):
            if seen_key:
                above.append(stripped.lstrip("#").strip())
            else:  # the header keeps its indentation: an indented line is an example command
                header.append(stripped[1:].removeprefix(" ").rstrip())
            continue
        match = _KEY.match(line)
        if not match:
            above = []
            continue
        seen_key = True
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"].strip()))
        path = ".".join(k for _, k in stack)
        rest = match["rest"] or ""
        inline = rest[rest.index("#") + 1:].strip() if "#" in rest and not rest.lstrip().startswith("{") else ""
        if rest.lstrip().startswith("#"):
            inline = rest.lstrip()[1:].strip()
        note = inline or " ".join(above)
        if note:
            notes[path] = note
        above = []
    return header, notes


def header_markdown(lines: list[str]) -> tuple[str, str]:
    """(the header's prose as one line, the whole header as Markdown): indented lines are example commands."""
    import itertools

    blocks = []
    for example, group in itertools.groupby(lines, key=lambda line: line.startswith(" ")):
        chunk = list(group)
        blocks.append("```text\n" + "\n".join(c.strip() for c in chunk) + "\n```" if example
                      else text(" ".join(c.strip() for c in chunk)))
    return " ".join(line.strip() for line in lines if not line.startswith(" ")), "\n\n".join(blocks)


def _flatten(node: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Leaf keys as dotted paths; a dotted key (a search space's parameter) or a distribution is one leaf."""
    out: list[tuple[str, Any]] = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and "." not in str(key) and "type" not in value:
            out += _flatten(value, f"{path}.")
        else:
            out.append((path, value))
    return out


def value_text(value: object) -> str:
    import yaml

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


class Option:
    """One YAML file of a group, with the options of its group it extends merged in."""

    def __init__(self, group_dir: Path, name: str) -> None:
        import yaml

        self.name = name
        self.path = group_dir / f"{name}.yaml"
        source = self.path.read_text()
        own = yaml.safe_load(source) or {}
        header, self.notes = comments(source)
        self.summary, self.header = header_markdown(header)
        defaults = own.pop("defaults", []) if isinstance(own, dict) else []
        self.extends = [d for d in defaults if isinstance(d, str) and d != "_self_"]
        self.values: dict[str, Any] = {}
        self_merged = False
        for entry in defaults or ["_self_"]:
            if entry == "_self_":
                self.values, self_merged = _merge(self.values, own), True
            elif isinstance(entry, str):
                base = Option(group_dir, entry)
                self.values = _merge(self.values, base.values)
                self.notes = {**base.notes, **self.notes}
        if not self_merged:
            self.values = _merge(self.values, own)

    def rows(self) -> list[list[str]]:
        """A row per leaf key; a group of keys with a comment of its own (``metric:  # ...``) gets one first."""
        out, shown = [], set()
        for key, value in _flatten(self.values):
            parts = key.split(".")
            for i in range(1, len(parts)):
                group = ".".join(parts[:i])
                if group in self.notes and group not in shown:
                    shown.add(group)
                    out.append([code(group), "", cell(self.notes[group])])
            out.append([code(key), code(value_text(value)), cell(self.notes.get(key, ""))])
        return out


def _groups(conf: Path) -> list[str]:
    """The groups in the primary config's defaults order, then any other folder of conf/."""
    import yaml

    primary = yaml.safe_load((conf / "config.yaml").read_text())
    ordered = []
    for entry in primary.get("defaults", []):
        if isinstance(entry, Mapping):
            name = str(next(iter(entry))).removeprefix("optional ").strip()
            if (conf / name).is_dir():
                ordered.append(name)
    return ordered + sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name not in ordered)


def _defaults_of(conf: Path) -> dict[str, str]:
    import yaml

    primary = yaml.safe_load((conf / "config.yaml").read_text())
    out = {}
    for entry in primary.get("defaults", []):
        if isinstance(entry, Mapping):
            key, value = next(iter(entry.items()))
            out[str(key).removeprefix("optional ").strip()] = value_text(value)
    return out


def _group_section(conf: Path, group: str, default: str | None) -> list[str]:
    group_dir = conf / group
    names = sorted(p.stem for p in group_dir.glob("*.yaml"))
    options = [Option(group_dir, n) for n in names if not n.startswith("_")]
    bases = [n for n in names if n.startswith("_")]
    out = [f"### {group} {{#{group}}}", ""]
    if default is not None:
        out += [f"Default: {code(f'{group}={default}')}" if "$" not in default else
                f"Default: {code(default)} (interpolated: the option of the same name as the model, when there is one)",
                ""]
    rows = [[f"[{code(f'{group}={o.name}')}](#{group}-{o.name})", cell(o.summary)] for o in options]
    out += [table(["Option", "What it is"], rows), ""]
    if bases:
        out += ["Shared by the options that extend it: " + ", ".join(code(f"{group}/{b}.yaml") for b in bases), ""]
    for option in options:
        out += [f"#### {group}={option.name} {{#{group}-{option.name}}}", ""]
        source = f"conf/{group}/{option.name}.yaml"
        extends = ", ".join(code(f"{group}/{e}.yaml") for e in option.extends)
        out += [f"{code(source)}" + (f", extending {extends}" if extends else "") + ".", ""]
        if option.header:
            out += [option.header, ""]
        out += [table(["Key", "Default", "Note"], option.rows()), ""]
    return out


def _hints(cls: type) -> dict[str, Any]:
    import expt.core.settings as settings

    return typing.get_type_hints(cls, vars(settings))


def _dataclass_of(hint: object) -> type | None:
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _type_text(hint: object) -> str:
    if hint is type(None):
        return "None"
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    name = getattr(origin, "__name__", str(origin))
    return f"{name}[{', '.join('...' if a is Ellipsis else _type_text(a) for a in args)}]"


def spec_text(spec: object) -> str:
    """What the schema accepts for a key, in words."""
    from expt.core import schema

    if isinstance(spec, schema.Open):
        return "a mapping (open: its keys are not checked)"
    if isinstance(spec, schema.Choice):
        return "one of " + ", ".join(value_text(v) for v in spec.values)
    if isinstance(spec, schema.Int):
        return "an integer" + (f" ≥ {spec.low}" if spec.low is not None else "")
    if isinstance(spec, schema.Float):
        bounds = [f"≥ {spec.low}" if spec.low is not None else "", f"≤ {spec.high}" if spec.high is not None else ""]
        return "a number " + " and ".join(b for b in bounds if b)
    types_ = spec if isinstance(spec, tuple) else (spec,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list",
             dict: "a mapping", type(None): "null"}
    return " or ".join(names.get(t, getattr(t, "__name__", str(t))) for t in types_)


def _schema_rows(spec: Mapping[str, Any], cls: type | None, prefix: str, filled: Mapping[str, Any],
                 out: list[list[str]], docs: list[tuple[str, str]]) -> None:
    hints = _hints(cls) if cls is not None else {}
    if cls is not None and cls.__doc__ and prefix:
        docs.append((prefix.rstrip("."), cls.__doc__))
    for key, sub in spec.items():
        path = f"{prefix}{key}"
        hint = hints.get(key)
        if isinstance(sub, Mapping):
            _schema_rows(sub, _dataclass_of(hint), f"{path}.", filled, out, docs)
            continue
        default = value_text(filled[path]) if path in filled else ""
        out.append([code(path), cell(spec_text(sub)), code(_type_text(hint)) if hint is not None else "",
                    code(default)])


def _schema_section() -> list[str]:
    from expt.core import folds, schema, settings

    filled = {**{f"data.{k}": v for k, v in schema.DATA_DEFAULTS.items()},
              **{f"learner.cv.{k}": v for k, v in folds.CV_DEFAULTS.items()}}
    rows: list[list[str]] = []
    docs: list[tuple[str, str]] = []
    _schema_rows(schema.SCHEMA, settings.Config, "", filled, rows, docs)
    optional = ", ".join(code(g) for g in schema.OPTIONAL_GROUPS)
    out = ["## The schema {#schema}", "",
           paragraphs(schema.__doc__ or ""), "",
           "An unknown, missing or mistyped key is an error that names it. "
           f"Optional groups (a train run has none): {optional}. "
           f"The typed field is what the code reads ({code('expt.core.settings.Config')}); "
           "a key with a fill value may be left out of an older config and is filled in.", "",
           table(["Key", "Accepts", "Typed as", "Filled when absent"], rows), ""]
    out += ["### The groups as the code reads them {#typed-groups}", ""]
    out += [f"- {prose(doc)}" for _, doc in docs]
    return out + [""]


def render(conf: Path) -> str:
    """The config reference of a conf/ folder as Markdown."""
    defaults = _defaults_of(conf)
    out = ["# Config reference", "",
           GENERATED.format(module="refgen_config", source="the files under `conf/` and `expt/core/schema.py`"),
           "An experiment is one option from each group, composed by Hydra from the primary config "
           f"{code('conf/config.yaml')}, then overrides from the command line or a recipe "
           f"({code('group=option')} picks an option, {code('group.key=value')} sets a key):", "",
           "```yaml", (conf / "config.yaml").read_text().rstrip(), "```", "",
           "## Groups {#groups}", ""]
    for group in _groups(conf):
        out += _group_section(conf, group, defaults.get(group))
    out += _schema_section()
    return "\n".join(out).rstrip() + "\n"
