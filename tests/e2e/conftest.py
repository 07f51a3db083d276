"""Fixtures for the e2e tests: a headless chromium per test, and a toolchain check that fails
early with a clear message instead of letting Reflex or Selenium try to download something."""

from __future__ import annotations

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

from . import toolchain
from .browser import chromium


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
    found = toolchain.problems()
    if found:
        pytest.fail(f"{'; '.join(found)} ({toolchain.HINT})")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    """A fresh headless chromium (own temporary profile) for one test."""
    with chromium() as driver:
        yield driver
