"""Headless chromium, a deadline-based wait, and an AppHarness runner for the e2e tests.

Everything here uses what scripts/bootstrap.sh installs: Debian's chromium and chromedriver,
bun from the npm registry. Nothing may download a browser, a driver or bun at run time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from reflex.testing import AppHarness
from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.remote_connection import RemoteConnection
from selenium.webdriver.remote.webdriver import WebDriver

import billing_ui.runtime
from billing_ui.server.testing import RunningServer, running_server
from tests.e2e.toolchain import CHROMEDRIVER, CHROMIUM
from tests.faults import FaultProxy

T = TypeVar("T")


# --no-sandbox: we run as root. The networking flags stop chromium from calling home, which on
# this network only produces a flood of refused connections (and slows start-up).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


COMMAND_TIMEOUT_S = 90.0
"""The longest one WebDriver command may take (Selenium's own limit is 120 s, and a navigation
waits up to 300 s for its page load). A command that needs the page's main thread waits
behind whatever the page is doing: on 2 CPUs beside two burners, a page re-rendering on every
retry tick of an outage fell behind without bound (chromedriver log: each CDP call slower than
the last, 1.5 s, 5 s, 19 s, 33 s; one text read 279 s). A check that slow has failed its wait
anyway; failing the command at this limit says so sooner, instead of a teardown hung for
minutes. Chromedriver's page-load timeout gets the same limit (its script timeout stays 30 s)."""

CHROMEDRIVER_LOG = "BILLING_UI_CHROMEDRIVER_LOG"
"""A directory: each chromium() writes chromedriver's verbose log there (every command with
the time it took and the DevTools calls behind it), to find which command hangs and why."""


class WaitTimeout(AssertionError):
    """A condition did not hold before its deadline."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Exceptions raised by the predicate count as "not yet" (the page may still be rendering),
    but the last one is reported. On timeout raises WaitTimeout naming the predicate, its last
    value or exception (with Selenium's message, which its repr leaves out), how many checks
    ran, the wall time they took and the longest one (a browser starved of CPU shows as a few
    slow checks, a condition that never came as many quick ones), and ``message`` (a string,
    or a callable evaluated only on failure, e.g. to dump the page).
    """
    started = time.monotonic()
    deadline = started + timeout
    checks, slowest = 0, 0.0
    while True:
        error: Exception | None = None
        began = time.monotonic()
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # not ready yet (e.g. element not rendered); report if last
            error = exc
        checks, slowest = checks + 1, max(slowest, time.monotonic() - began)
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    name = getattr(predicate, "__qualname__", repr(predicate))
    if error is not None:
        said = (getattr(error, "msg", None) or str(error)).strip().splitlines()
        detail = f"last exception: {type(error).__name__}: {said[0] if said else ''}"
    else:
        detail = f"last value: {value!r}"
    detail += (
        f"; {checks} checks in {time.monotonic() - started:.1f} s, the slowest {slowest:.1f} s"
    )
    extra = message() if callable(message) else message
    if extra:
        detail += f"; {extra}"
    raise WaitTimeout(f"{name} not true after {timeout:g}s ({detail})")


NOT_CLICKED = (
    StaleElementReferenceException,  # a re-render replaced the element between find and click
    ElementClickInterceptedException,  # something (an overlay, a transition) covered it
    ElementNotInteractableException,  # not laid out yet
    NoSuchElementException,  # not rendered yet
)
"""Errors after which the click was certainly not delivered, so clicking again is safe."""


def click(browser: WebDriver, by: str, selector: str, timeout: float = 10.0) -> None:
    """Find the element and click it, finding it afresh and clicking again while the click
    was not delivered (see NOT_CLICKED), until ``timeout``. React re-renders replace DOM
    nodes at any moment on a busy machine: finding once and clicking later is a race."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            browser.find_element(by, selector).click()
            return
        except NOT_CLICKED as exc:
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"could not click {selector!r} in {timeout:g}s: {exc!r}") from exc
        time.sleep(0.05)


def fresh(read: Callable[[], T], timeout: float = 10.0) -> T:
    """``read()`` (which finds elements and reads them), again if a re-render made an element
    stale between finding and reading it; any other error propagates."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except StaleElementReferenceException:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.05)


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """Start headless Debian chromium with a fresh profile; quit it and delete the profile."""
    profile = tempfile.mkdtemp(prefix="billing-ui-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver path makes Selenium skip Selenium Manager (which would download one).
    log_dir = os.environ.get(CHROMEDRIVER_LOG)
    if log_dir:
        log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept: the driver writes to it
            prefix="chromedriver-", suffix=".log", dir=log_dir, delete=False
        )
        log.close()
        service = Service(CHROMEDRIVER, service_args=["--verbose"], log_output=log.name)
    else:
        service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    executor = driver.command_executor
    assert isinstance(executor, RemoteConnection)
    executor.client_config.timeout = COMMAND_TIMEOUT_S
    driver.set_page_load_timeout(COMMAND_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()  # stops chromium and chromedriver
        shutil.rmtree(profile, ignore_errors=True)


@contextmanager
def patched_env(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` for the block, then as it was (keys it lacked removed)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@contextmanager
def billing_behind_proxy(folder: Path) -> Iterator[tuple[RunningServer, FaultProxy]]:
    """A seeded local billing server in ``folder`` and a fault proxy in front of it (what the
    apps under test talk to, so a test can hold or fail their requests)."""
    with (
        running_server(db_path=folder / "billing.db", seed=True) as server,
        FaultProxy(server.base_url) as proxy,
    ):
        yield server, proxy


@contextmanager
def run_app(
    root: Path,
    app_source: Callable[[], None] | str | None = None,
    app_name: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[AppHarness]:
    """Run a Reflex app with AppHarness: backend in a thread, `bun run dev` frontend process.

    ``root`` holds the app (its rxconfig.py, .web/ and reflex.lock/). With ``app_source`` (a
    function whose body is the app module, or source text plus ``app_name``) AppHarness writes
    a fresh app into ``root``; with None, ``root`` must already be a Reflex app. On exit the
    frontend's whole process group is terminated and the backend thread joined. ``env``: set
    for the app's whole life (an app under test reads its settings from there), then restored.
    """
    with patched_env(env or {}):
        harness = AppHarness.create(root=root, app_source=app_source, app_name=app_name)
        # Not `with harness:` -- if start() fails half way (e.g. the frontend never comes up),
        # __exit__ would not run and the non-daemon backend thread would keep pytest alive.
        try:
            harness.start()
            yield harness
        finally:
            harness.stop()
            # An app configures billing_ui's process-wide runtime when it is imported
            # (settings, client factory). Start the next app in this process from the
            # defaults, not from a stopped app's client factory (which may read variables its
            # test has since removed).
            billing_ui.runtime.install()
