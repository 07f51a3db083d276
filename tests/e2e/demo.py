"""The repo's real demo app (rxconfig.py + billing_ui/billing_ui.py) under AppHarness, pointed
at a billing server the test controls, and the page helpers the demo tests share.

AppHarness runs an existing app with ``root`` = the repo and ``app_source=None``; ``app_name``
must be given (it defaults to the folder's name). The app reads its configuration from the
environment at import, so :func:`running_demo` sets the variables before the harness imports
the app and keeps them for its whole life (the client is built lazily, per event loop).
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from reflex.testing import AppHarness
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

import billing_ui.demo
import billing_ui.states
from billing_ui.core import _constants as C

from .browser import click, fresh, run_app, wait_for

REPO = Path(__file__).resolve().parents[2]


def _register_demo_states() -> None:
    """Import every module that defines the demo's states, now, outside any AppHarness.

    Each AppHarness registers states into a fork of Reflex's registration context taken when
    the first harness starts. A state class is registered when its module is first imported;
    the demo's modules (``billing_ui.demo.*``, ``billing_ui.states.*``) are imported once per
    process and never again. Imported inside the first demo harness, their states would exist
    only in that harness's fork, and the next demo harness in this process would run without
    them (the browser fails with "Cannot read properties of undefined (reading
    'signed_in_as_rx_state_')"). Imported here, they are in the base every fork starts from.
    """
    for package in (billing_ui.demo, billing_ui.states):
        for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)


_register_demo_states()
PAGE_TIMEOUT = 30.0
"""The first page load compiles the route in the dev server: allow for it."""
DEMO_REFRESH_INTERVAL = 1.0
"""The demo's refresh interval in these tests (``running_demo``'s default)."""
LOAD_HEADROOM = 4.0
"""How many times slower than idle the machine may be (2 CPUs at load 20-30 in the stress runs
beside CPU burners) before a deadline derived from a configured interval fails."""


def refresh_deadline(interval: float = DEMO_REFRESH_INTERVAL) -> float:
    """Seconds a page may take to show what the billing API says after a change (an outage
    starting or ending): one refresh interval, plus the default client's whole retry budget
    for the failing poll (every backoff at its longest, and a connect timeout), with
    ``LOAD_HEADROOM``."""
    backoffs = sum(
        min(C.INITIAL_RETRY_DELAY_S * 2.0**attempt, C.MAX_RETRY_DELAY_S)
        for attempt in range(C.DEFAULT_MAX_RETRIES)
    )
    return LOAD_HEADROOM * (interval + backoffs + C.DEFAULT_CONNECT_TIMEOUT_S)


@contextmanager
def running_demo(
    api_url: str,
    api_key: str,
    customers: list[str],
    refresh_interval: float = DEMO_REFRESH_INTERVAL,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[AppHarness]:
    """The demo app talking to ``api_url``; the sign-in page offers ``customers``. Its track
    outbox is a file of its own in a temporary folder (unless ``extra_env`` names one)."""
    outbox_dir = tempfile.mkdtemp(prefix="billing-ui-demo-outbox-")
    env = {
        "BILLINGOS_API_URL": api_url,
        "BILLINGOS_SECRET_KEY": api_key,
        "BILLING_UI_REFRESH_INTERVAL": str(refresh_interval),
        "BILLING_UI_DEMO_CUSTOMERS": ",".join(customers),
        "BILLING_UI_OUTBOX_DB": str(Path(outbox_dir) / "billing_outbox.db"),
        **(extra_env or {}),
    }
    try:
        with run_app(REPO, app_source=None, app_name="billing_ui", env=env) as harness:
            yield harness
    finally:
        from billing_ui.demo import config

        config.close_tracker()
        shutil.rmtree(outbox_dir, ignore_errors=True)


# --- page helpers ---------------------------------------------------------------------------
def sign_in(browser: WebDriver, harness: AppHarness, customer_id: str) -> None:
    """Open the sign-in page, pick ``customer_id``, wait for the dashboard."""
    assert harness.frontend_url is not None
    sign_in_at(browser, harness.frontend_url, customer_id)


def sign_in_at(browser: WebDriver, url: str, customer_id: str) -> None:
    """:func:`sign_in` on the demo app at ``url``."""
    browser.get(url.rstrip("/") + "/")
    wait_for(
        lambda: browser.find_element(By.ID, f"sign-in-{customer_id}").is_enabled(),
        timeout=PAGE_TIMEOUT,
        message=lambda: browser.page_source[:1500],
    )

    # The click is only handled once the websocket is up; retry until the redirect happens.
    def signed_in() -> bool:
        if "/dashboard" not in browser.current_url:
            browser.find_element(By.ID, f"sign-in-{customer_id}").click()
            return False
        return browser.find_element(By.CSS_SELECTOR, '[data-testid="signed-in-as"]').text == (
            customer_id
        )

    wait_for(signed_in, timeout=PAGE_TIMEOUT, interval=0.25)


def go(browser: WebDriver, page: str) -> None:
    """Client-side navigation through the top bar (keeps the session and the websocket). The
    link is found afresh for the click (the bar re-renders as state arrives)."""
    click(browser, By.CSS_SELECTOR, f'[data-testid="nav-{page}"]', timeout=PAGE_TIMEOUT)
    wait_for(lambda: browser.current_url.rstrip("/").endswith(f"/{page}"), timeout=PAGE_TIMEOUT)


def meter_bar(browser: WebDriver, feature_key: str) -> WebElement:
    return browser.find_element(
        By.CSS_SELECTOR,
        f'[data-testid="usage-meter"][data-feature-key="{feature_key}"] [role="progressbar"]',
    )


def meter_value(browser: WebDriver, feature_key: str) -> float:
    """What the meter of ``feature_key`` shows as consumed (its ``aria-valuenow``)."""
    return fresh(
        lambda: float(meter_bar(browser, feature_key).get_attribute("aria-valuenow") or "nan")
    )


def wait_meter(browser: WebDriver, feature_key: str, expected: float, timeout: float = 10) -> None:
    wait_for(
        lambda: abs(meter_value(browser, feature_key) - expected) < 1e-9,
        timeout=timeout,
        message=lambda: (
            f"{feature_key} meter shows {meter_value(browser, feature_key)}, expected {expected}"
        ),
    )


def track_button(browser: WebDriver, feature_key: str) -> WebElement:
    return browser.find_element(By.ID, f"track-{feature_key}")


def visible(browser: WebDriver, css: str) -> bool:
    def read() -> bool:
        elements = browser.find_elements(By.CSS_SELECTOR, css)
        return bool(elements) and elements[0].is_displayed()

    return fresh(read)


def text_of(browser: WebDriver, css: str) -> str:
    """The text of the element at ``css``, read from a fresh find (see ``fresh``)."""
    return fresh(lambda: browser.find_element(By.CSS_SELECTOR, css).text)
