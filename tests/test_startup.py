"""`expt --help` stays fast because the CLI module does not import the heavy stack."""

from __future__ import annotations

import subprocess
import sys

from helpers import EXPT

HEAVY = ("torch", "mlflow", "sklearn", "optuna", "pandas")


def test_import_cli_leaves_heavy_libraries_out() -> None:
    code = f"import sys, expt.cli; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_help_lists_train_and_imports_nothing_heavy() -> None:
    code = (
        "import sys, runpy; sys.argv = ['expt', '--help']\n"
        "try:\n    runpy.run_module('expt', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY:' + ' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "train" in out.stdout
    assert out.stdout.strip().endswith("HEAVY:")


def test_console_script_and_module_agree() -> None:
    a = subprocess.run([EXPT, "--version"], capture_output=True, text=True, check=True).stdout
    b = subprocess.run([sys.executable, "-m", "expt", "--version"], capture_output=True, text=True, check=True).stdout
    assert a == b and a.startswith("expt ")
