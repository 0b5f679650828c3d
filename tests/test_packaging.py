"""The wheel carries the top-level conf/ (as expt/conf/) and the knowledge base: a throwaway virtual environment
with only the wheel of expt installed runs it from a folder with no checkout in it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv holding the built wheel; its dependencies are read from the dev venv (a .pth line), so the
    test does not download the stack again, but expt itself can only come from the wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    source, wheels, venv = tmp / "source", tmp / "wheels", tmp / "venv"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "dist", "outputs",
                                                                "__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], check=True,
                   capture_output=True)
    wheel = next(wheels.glob("expt_runner-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "expt/conf/config.yaml" in names and "expt/conf/model/svm.yaml" in names
    assert "expt/kb/records.jsonl.gz" in names
    assert "expt/kb/records.packed.json.gz" in names
    assert not any(n.startswith("conf/") for n in names), "conf/ is shipped inside the package, not beside it"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path("
                                "'purelib'))"], check=True, capture_output=True, text=True).stdout.strip())
    (site / "dev-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel)], check=True,
                   capture_output=True)
    return venv


def run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / "expt"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_wheel_prints_a_config_from_a_folder_without_a_checkout(installed: Path, tmp_path: Path) -> None:
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import expt.core.config as c; "
                            "print(c.__file__); print(c.conf_dir())"], cwd=tmp_path, capture_output=True, text=True,
                           check=True).stdout.split()
    assert all(p.startswith(str(installed)) for p in where), f"the installed copy must run, not the checkout: {where}"
    proc = run(installed, tmp_path, "train", "--cfg", "data=wine")
    assert proc.returncode == 0, proc.stderr
    assert "name: wine" in proc.stdout and "_target_:" in proc.stdout


@pytest.mark.slow
def test_wheel_trains_and_recommends_from_its_knowledge_base(installed: Path, tmp_path: Path, store: str) -> None:
    proc = run(installed, tmp_path, "train", "data=wine", "model=knn", "learner=quick", f"tracking.uri={store}")
    assert proc.returncode == 0, proc.stderr
    assert "mean ± std" in proc.stdout
    (tmp_path / "d.yaml").write_text("id: wine\n")
    recommend = run(installed, tmp_path, "recommend", "d.yaml", "--json", "--top", "3")
    assert recommend.returncode == 0, recommend.stderr
    payload = json.loads(recommend.stdout)
    assert len(payload["recommendations"]) == 3
    assert all(r["support"] for r in payload["recommendations"])
