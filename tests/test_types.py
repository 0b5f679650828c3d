"""The type checker is part of the suite (issue 22): mypy, with pyproject.toml's ``[tool.mypy]`` settings, is
clean on expt/. A test rather than a step of ``make test`` before pytest, so that its half-minute from a cold cache
runs on one pytest-xdist worker while the other runs tests; ``make lint`` runs it too."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT


def test_mypy_finds_no_type_error_in_expt() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout
