"""`expt report`'s HTML in a real browser (headless Chromium): every section shows, every image decodes, and
nothing is fetched from anywhere (the file is self-contained)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import EXPT, all_runs

SECTIONS = {"glance": "At a glance", "config": "Configuration", "data": "Data", "model": "Model",
            "plots": "Evaluation plots", "lineage": "Lineage"}


def _expt(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([EXPT, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def _check_page(browser, path: Path, sections: dict[str, str], min_images: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(path.resolve().as_uri())
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"))
    for key, heading in sections.items():
        section = browser.find_element(By.ID, key)
        assert section.find_element(By.TAG_NAME, "h2").text == heading
        browser.execute_script("arguments[0].scrollIntoView()", section)
        assert section.is_displayed() and section.size["height"] > 40
    widths = browser.execute_script("return Array.from(document.images).map(i => [i.alt, i.naturalWidth, "
                                    "i.getBoundingClientRect().width])")
    assert len(widths) >= min_images
    assert all(natural > 0 and shown > 0 for _alt, natural, shown in widths), widths
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(r => r.name)"
                                     ".filter(n => !n.startsWith('data:'))")
    assert fetched == []  # no stylesheet, script, font or image from a network


@pytest.mark.slow
def test_train_and_sweep_reports_render_in_chromium(browser, tmp_path: Path) -> None:
    _expt("train", "data=wine", "model=random_forest", "model.estimator.n_estimators=20", "learner=quick",
          "tracking.description=wine baseline", cwd=tmp_path)
    _expt("sweep", "data=iris", "model=logistic_regression", "search.n_trials=3", "search.outer_folds=2",
          "search.inner_folds=2", cwd=tmp_path)
    store = f"sqlite:///{tmp_path}/mlruns.db"
    runs = {r.data.tags.get("expt.run_type"): r.info.run_id for r in all_runs(store)}
    _expt("report", runs["train"], "--out", "train.html", cwd=tmp_path)
    _expt("report", runs["sweep"], "--out", "sweep.html", cwd=tmp_path)
    _check_page(browser, tmp_path / "train.html", {**SECTIONS, "folds": "Folds"}, min_images=5)
    assert "wine baseline" in browser.find_element("id", "glance").text
    assert f"expt rerun {runs['train']}" in browser.find_element("id", "lineage").text
    sweep_sections = {**SECTIONS, "folds": "Outer folds", "search": "Search history and parameter importances"}
    _check_page(browser, tmp_path / "sweep.html", sweep_sections, min_images=3 + 5 + 2 * 5)
    assert "outer-fold-1" in browser.find_element("id", "folds").text
    assert "final: 3 trials" in browser.find_element("id", "search").text
