"""`pip install .` (not editable) carries the packaged configs, found from any working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_wheel_install_finds_its_configs_from_another_directory(tmp_path: Path, store: str) -> None:
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "-q"]
    source = tmp_path / "source"  # building writes build/ and egg-info: keep that out of the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "outputs"))
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], check=True,
                   capture_output=True)
    wheel = next(wheels.glob("expt_runner-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True,
                   capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    # The dev checkout is an editable install, whose import hook outranks PYTHONPATH: take it out.
    code = (
        "import sys; sys.meta_path = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]\n"
        "import expt; print(expt.__file__); sys.argv = ['expt', *sys.argv[1:]]\n"
        "from expt.cli import main; main()"
    )
    args = ["train", "data=wine", "model=knn", "learner=quick", f"tracking.uri={store}"]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(str(target)), "the installed copy, not the checkout, must have run"
    assert "mean ± std" in proc.stdout
    # A fresh install recommends from the knowledge base the wheel carries.
    (elsewhere / "d.yaml").write_text("id: wine\n")
    recommend = subprocess.run([sys.executable, "-c", code, "recommend", "d.yaml", "--json", "--top", "3"],
                               cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert recommend.returncode == 0, recommend.stderr
    import json

    payload = json.loads(recommend.stdout.split("\n", 1)[1])  # after the line that prints expt.__file__
    assert len(payload["recommendations"]) == 3
    assert all(r["support"] for r in payload["recommendations"])
