"""A customer change in a real browser: the demo app in headless chromium samples its own page
on every DOM mutation while the signed-in customer changes, with one of the previous customer's
requests held by the fault proxy (a slow billing API) and released only after the switch.

No sample taken under the new customer's name may show the previous customer's meters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from reflex.testing import AppHarness
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from billing_ui.core import BillingClient
from billing_ui.server.testing import RunningServer, create_customer, running_server
from tests.faults import FaultProxy, hold

from .browser import click, wait_for
from .demo import PAGE_TIMEOUT, running_demo, sign_in, wait_meter

A, B = "e2e_switch_a", "e2e_switch_b"
A_API_CALLS = 4321.0
METRICS = "/v1/usage/metrics"

SAMPLER = """
window.__samples = [];
const sample = () => {
  const who = document.querySelector('[data-testid="signed-in-as"]');
  const bars = [...document.querySelectorAll(
      '[data-testid="usage-meter"] [role="progressbar"]')];
  window.__samples.push({
    who: who ? who.textContent : "",
    values: bars.map((b) => b.getAttribute("aria-valuenow")),
  });
};
new MutationObserver(sample).observe(document.body, {
  subtree: true, childList: true, attributes: true, characterData: true,
});
"""


@pytest.fixture(scope="module")
def billing(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, FaultProxy]]:
    db = tmp_path_factory.mktemp("switch-billing") / "billing.db"
    with running_server(db_path=db, seed=True) as server, FaultProxy(server.base_url) as proxy:
        create_customer(server, ["pro"], customer_id=A)
        create_customer(server, ["free"], customer_id=B)
        with BillingClient(base_url=server.base_url, api_key=server.api_key) as client:
            client.track_usage(customer_id=A, feature_key="api_calls", quantity=A_API_CALLS)
        yield server, proxy


@pytest.fixture(scope="module")
def demo(billing: tuple[RunningServer, FaultProxy]) -> Iterator[AppHarness]:
    server, proxy = billing
    with running_demo(proxy.url, server.api_key, [A, B], refresh_interval=1.0) as harness:
        yield harness


def switch_to(browser: WebDriver, customer: str) -> None:
    """Sign out and in as ``customer`` by clicking, without reloading (the sampler lives on)."""
    click(browser, By.CSS_SELECTOR, '[data-testid="sign-out"]')
    wait_for(
        lambda: browser.find_element(By.ID, f"sign-in-{customer}").is_displayed(),
        timeout=PAGE_TIMEOUT,
    )
    click(browser, By.ID, f"sign-in-{customer}")
    wait_for(
        lambda: (
            browser.find_element(By.CSS_SELECTOR, '[data-testid="signed-in-as"]').text == customer
        ),
        timeout=PAGE_TIMEOUT,
    )


def samples(browser: WebDriver) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = browser.execute_script("return window.__samples || []")
    return found


def test_the_previous_customers_meters_never_show_under_the_new_name(
    demo: AppHarness, browser: WebDriver, billing: tuple[RunningServer, FaultProxy]
) -> None:
    _, proxy = billing
    rounds = 3
    for _ in range(rounds):
        sign_in(browser, demo, A)
        wait_meter(browser, "api_calls", A_API_CALLS, timeout=PAGE_TIMEOUT)
        browser.execute_script(SAMPLER)
        gate = threading.Event()
        seen = len(proxy.seen(METRICS))
        proxy.on(METRICS, hold(gate))  # A's next refresh tick hangs at the billing API
        try:
            proxy.wait_for(lambda s, n=seen: len([r for r in s if r.path == METRICS]) > n)
            switch_to(browser, B)
            wait_meter(browser, "api_calls", 0, timeout=PAGE_TIMEOUT)
        finally:
            gate.set()  # A's answer arrives now, after B's name and meters are shown
        released = len(proxy.seen(METRICS))
        # Two more ticks of B's page after the release: any late answer has landed by then.
        proxy.wait_for(lambda s, n=released: len([r for r in s if r.path == METRICS]) >= n + 2)
        wait_meter(browser, "api_calls", 0)
        taken = samples(browser)
        under_b = [s for s in taken if s["who"] == B]
        assert under_b, "the sampler saw nothing under B's name"
        leaked = [s for s in under_b if f"{A_API_CALLS:g}" in s["values"]]
        assert not leaked, f"{len(leaked)} of {len(under_b)} samples under {B} show {A}'s meter"
        click(browser, By.CSS_SELECTOR, '[data-testid="sign-out"]')
        wait_for(lambda: "/dashboard" not in browser.current_url, timeout=PAGE_TIMEOUT)
