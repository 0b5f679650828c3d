"""A real browser for the tests: headless Chromium from Debian, driven by Selenium 4.

Like ``servers.py`` installs PostgreSQL, the session fixture ``browser`` finds ``chromium`` and
``chromedriver`` (the Debian packages ``chromium`` and ``chromium-driver``); when they are missing
and the tests run as root on a system with apt (a fresh CI machine), it installs them once
(non-interactive, waiting for the dpkg lock, a file lock against parallel sessions). Otherwise it
fails with what to install. Selenium is given the driver's path, so Selenium Manager never tries
to download one (the tests need no network).

Environment:

* ``EXPT_TEST_CHROMIUM``: the browser binary to look for *before* installing (default
  ``/usr/bin/chromium``); pointing it at a missing path exercises the install path.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import apt_get_install

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BROWSER_ENV = "EXPT_TEST_CHROMIUM"
PACKAGES = ("chromium", "chromium-driver")
HOW = ("install Chromium and its driver (Debian/Ubuntu: `sudo apt-get install chromium chromium-driver`) or run "
       "the tests as root, which installs them")


def _found(browser: str) -> bool:
    return Path(browser).is_file() and Path(CHROMEDRIVER).is_file()


def _install() -> None:
    """``apt-get install chromium chromium-driver`` as root, once (a file lock keeps parallel sessions apart)."""
    if os.geteuid() != 0:
        pytest.fail(f"the browser tests need {CHROMIUM} and {CHROMEDRIVER}: {HOW}", pytrace=False)
    if not shutil.which("apt-get"):
        pytest.fail(f"no Chromium and no apt-get to install it: {HOW}", pytrace=False)
    with open(os.path.join(tempfile.gettempdir(), "expt-tests-chromium-install.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _found(CHROMIUM):  # another session installed it while this one waited
            return
        started = time.monotonic()
        print("\n[browser] Chromium missing: apt-get update && apt-get install chromium chromium-driver ...",
              file=sys.stderr, flush=True)
        apt_get_install(list(PACKAGES), HOW)
        print(f"[browser] installed Chromium in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)


def chromium_paths() -> tuple[str, str]:
    """The browser and its driver, installed first when missing (root + apt only)."""
    if not _found(os.environ.get(BROWSER_ENV) or CHROMIUM):
        _install()
    if not _found(CHROMIUM):
        pytest.fail(f"installed {' '.join(PACKAGES)} but found no {CHROMIUM} and {CHROMEDRIVER}", pytrace=False)
    return CHROMIUM, CHROMEDRIVER


def start_chromium(width: int = 1400, height: int = 1000):  # selenium's WebDriver
    """A headless Chromium under chromedriver; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = Options()
    options.binary_location = browser
    for argument in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                     "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to run its sandbox as root
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """A headless Chromium (a Selenium WebDriver) for the session."""
    started = time.monotonic()
    driver = start_chromium()
    print(f"\n[browser] headless Chromium in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    try:
        yield driver
    finally:
        driver.quit()
