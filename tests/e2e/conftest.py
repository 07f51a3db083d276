"""Fixtures for the e2e tests: a headless chromium per test, and a toolchain check that fails
early with a clear message instead of letting Reflex or Selenium try to download something."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

# Register every billing state in the base Reflex registration context, at collection: each
# AppHarness app forks that context, so a state first imported inside one app's context would be
# missing from the next app's (its events then have "no registered handler").
import billing_ui.components
import billing_ui.states
import billing_ui.states.history
import billing_ui.states.nudge  # noqa: F401

from .browser import CHROMEDRIVER, CHROMIUM, chromium

MIN_BUN = (1, 4, 4)  # reflex 0.10.1's minimum; below it Reflex downloads bun from the internet


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this folder `e2e` (so `-m "not e2e"` gives the fast suite) and run
    them last: AppHarness changes process-wide Reflex state (config, env vars, registered
    states), which unit tests collected after tests/e2e should not inherit."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: here in item.path.parents)  # stable: keeps order otherwise


@pytest.fixture(scope="session", autouse=True)
def e2e_toolchain() -> None:
    """Fail (not skip: CI must not go green without its browser tests) if a tool is missing."""
    hint = "run `make test`, or `bash scripts/bootstrap.sh && . scripts/env.sh`"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing ({hint})")
    bun = os.environ.get("REFLEX_BUN_PATH") or shutil.which("bun")
    if not bun or not os.access(bun, os.X_OK):
        pytest.fail(f"no bun found (REFLEX_BUN_PATH or PATH); {hint}")
    out = subprocess.run([bun, "--version"], capture_output=True, text=True, check=True).stdout
    version = tuple(int(part) for part in out.strip().split("-")[0].split("."))
    if version < MIN_BUN:
        pytest.fail(f"{bun} is bun {out.strip()}, Reflex needs >= 1.4.4; {hint}")
    if os.environ.get("REFLEX_USE_NPM", "0").lower() in ("1", "true", "yes"):
        pytest.fail(f"REFLEX_USE_NPM is set: npm would need node >= 22.22; {hint}")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """A fresh headless chromium (own temporary profile) for one test."""
    with chromium() as driver:
        yield driver
