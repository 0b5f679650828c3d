"""Every dotted ``expt.…`` name in a docstring or comment resolves, so code that moves cannot leave a stale
pointer behind (a sweep's plots named a ``warm_up`` in a module gone for months).

A name resolves when its longest importable prefix is a module of expt and the rest are attributes of it.
MLflow tag keys (``expt.run_type``) and the Optuna attributes of a sweep's storage (``expt.surplus``) are
written the same way but are not Python names: they are allowed as the constants that define them spell them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import io
import re
import tokenize
from pathlib import Path

from expt.sweep import storage
from expt.tracking import tags

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("expt", "tests", "benchmarks")
DOTTED = re.compile(r"(?<![\w./-])expt(?:\.[A-Za-z_]\w*)+")
KEYS = {v for module in (tags, storage) for v in vars(module).values() if isinstance(v, str) and v.startswith("expt.")}


def prose(source: str) -> list[tuple[int, str]]:
    """(line, text) of every comment and every bare string statement (docstrings, attribute docs)."""
    found = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
             if tok.type == tokenize.COMMENT]
    found += [(node.lineno, node.value.value) for node in ast.walk(ast.parse(source))
              if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
              and isinstance(node.value.value, str)]
    return found


def is_key(name: str) -> bool:
    return name in KEYS or name.startswith(tags.PACKAGE_TAG_PREFIX)


def resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            spec = importlib.util.find_spec(module)
        except ImportError:  # a prefix of it is a module, not a package
            spec = None
        if spec is None:
            continue
        if i == len(parts):
            return True  # a module: found, not imported (``expt.kb.__main__`` would run)
        obj = importlib.import_module(module)
        for attr in parts[i:]:
            fields = getattr(obj, "__dataclass_fields__", {})
            if attr in fields:  # a dataclass field without a default is no class attribute
                obj = fields[attr]
                continue
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def pointers() -> dict[str, list[str]]:
    """Each dotted name -> where it is written (path:line)."""
    out: dict[str, list[str]] = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            for line, text in prose(path.read_text()):
                for offset, row in enumerate(text.splitlines()):
                    for name in DOTTED.findall(row):
                        out.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{line + offset}")
    return out


def test_every_dotted_name_in_prose_resolves() -> None:
    found = pointers()
    assert "expt.core.build.build" in found  # the scan sees docstrings at all
    stale = {name: where for name, where in found.items() if not is_key(name) and not resolves(name)}
    assert not stale, "\n".join(f"{name}: {', '.join(where)}" for name, where in sorted(stale.items()))


def test_a_stale_pointer_is_caught() -> None:
    assert not resolves("expt.logsink.warm_up") and not resolves("expt.data.Dataset")
    assert not resolves("expt.tracking.environment.mark")  # moved to expt.core.timeline
    assert resolves("expt.core.timeline.mark") and resolves("expt.sweep.plan.SweepPlan.objective")
    assert is_key("expt.run_type") and is_key("expt.pkg.numpy") and not is_key("expt.data.Dataset")
