"""The layout is a rule in code: imports point one way, no package imports itself round, no private name
crosses a module boundary, and Optuna's private API is touched in one module only."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

LINT = str(Path(sys.executable).with_name("lint-imports"))
LAYERS = "cli -> features -> tracking -> core -> models, never upwards"
ACYCLIC = "no import cycle among the modules of any package"
OPTUNA_INTERNALS = ROOT / "expt" / "sweep" / "storage.py"


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the copy of expt at ``root`` (PYTHONPATH puts it before the editable install)."""
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1"}
    return subprocess.run([LINT, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept() -> None:
    proc = lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{LAYERS} KEPT" in proc.stdout and f"{ACYCLIC} KEPT" in proc.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    # core reaching up into a feature, inside a function (where lazy imports live) as much as at the top
    ("expt/core/data.py", "def _upward():\n    from expt.sweep import runner  # noqa\n", LAYERS),
    # two sweep modules importing each other: the engine imports storage, storage now the engine
    ("expt/sweep/storage.py", "def _round():\n    from expt.sweep import engine  # noqa\n", ACYCLIC),
])
def test_contracts_fail_when_an_import_breaks_them(tmp_path: Path, module: str, line: str, broken: str) -> None:
    shutil.copytree(ROOT / "expt", tmp_path / "expt", ignore=shutil.ignore_patterns("__pycache__", "*.gz"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / module, "a") as fh:
        fh.write("\n\n" + line)
    proc = lint(tmp_path)
    assert proc.returncode != 0
    assert f"{broken} BROKEN" in proc.stdout, proc.stdout


def _modules() -> list[Path]:
    return sorted((ROOT / "expt").rglob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_private_name_crosses_a_module_boundary() -> None:
    """No ``from expt.<module> import _y``, and no ``module._y`` on an expt module bound by an import."""
    found = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        bound: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("expt"):
                found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name}" for a in node.names
                          if _private(a.name)]
                bound |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                bound |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("expt")}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                base = node.value
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(base, ast.Name) and base.id in bound and base.id not in ("self", "cls"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses .{node.attr}")
    assert found == []


def test_optuna_internals_are_wrapped_in_one_module() -> None:
    """Optuna's private attributes and modules appear in expt/sweep/storage.py and nowhere else."""
    internals = ("_storage", "_study_id", "_trial_id", "_get_stale_trial_ids", "_heartbeat")
    found = []
    for path in _modules():
        if path == OPTUNA_INTERNALS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in internals:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optuna") and any(
                    _private(part) for part in node.module.split(".")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert found == []
    assert "_get_stale_trial_ids" in OPTUNA_INTERNALS.read_text()  # the wrapper is where it says it is
