"""The billing states in a real browser: a minimal Reflex app (just the states, no components)
driven by headless chromium, against the real local billing server.

The server sits behind the forwarding proxy from tests/faults.py, which counts the upstream
requests: that is how "the loop stops when the tab closes" and "a reload does not double the
loop" are measured at the server, where they matter.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from reflex.testing import AppHarness
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from billing_ui.server.testing import RunningServer, create_customer, running_server
from tests.faults import FaultProxy

from .browser import chromium, run_app, wait_for

INTERVAL = 1.0
METRICS = "/v1/usage/metrics"


def states_app() -> None:
    # AppHarness writes this body out as the app module; it runs in the test process, so the
    # settings come from the environment the fixture sets (server side, never the browser).
    import os

    import reflex as rx

    import billing_ui.states as bs
    from billing_ui.core import AsyncBillingClient

    bs.configure(
        customer_resolver=lambda state: os.environ["BUI_E2E_CUSTOMER"],
        trackable={"api_calls": bs.TrackRule(max_quantity=100)},
        refresh_interval=float(os.environ["BUI_E2E_INTERVAL"]),
        client_factory=lambda: AsyncBillingClient(
            base_url=os.environ["BUI_E2E_BILLING_URL"],
            api_key=os.environ["BUI_E2E_KEY"],
            max_retries=0,
        ),
    )

    def meter(m: bs.views.MetricView) -> rx.Component:
        return rx.text(m.feature_key, "=", m.consumed, id="metric-" + m.feature_key)

    def index() -> rx.Component:
        return rx.vstack(
            rx.text(bs.UsageMetricsState.router.session.client_token, id="token"),
            rx.foreach(bs.UsageMetricsState.metrics, meter),
            rx.text(bs.UsageMetricsState.error, id="error"),
            rx.button(
                "track", on_click=lambda: bs.TrackUsageState.track("api_calls", 1), id="track"
            ),
        )

    app = rx.App()
    app.add_page(index, on_load=bs.UsageMetricsState.poll)


@pytest.fixture(scope="module")
def billing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, FaultProxy]]:
    db = tmp_path_factory.mktemp("billing") / "billing.db"
    with running_server(db_path=db, seed=True) as server, FaultProxy(server.base_url) as proxy:
        yield server, proxy


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, billing: tuple[RunningServer, FaultProxy]
) -> Iterator[AppHarness]:
    server, proxy = billing
    env = {
        "BUI_E2E_CUSTOMER": create_customer(server, ["pro"]),
        "BUI_E2E_INTERVAL": str(INTERVAL),
        "BUI_E2E_BILLING_URL": proxy.url,
        "BUI_E2E_KEY": server.api_key,
    }
    os.environ.update(env)
    try:
        with run_app(Path(tmp_path_factory.mktemp("states_app")), app_source=states_app) as h:
            yield h
    finally:
        for key in env:
            os.environ.pop(key, None)


def metric_text(browser: WebDriver, feature: str) -> str:
    found = browser.find_elements(By.ID, f"metric-{feature}")
    return found[0].text if found else ""


def open_page(app: AppHarness, browser: WebDriver) -> None:
    assert app.frontend_url is not None
    browser.get(app.frontend_url)
    wait_for(lambda: metric_text(browser, "api_calls"), timeout=30, message="no metrics shown")


def requests_in(proxy: FaultProxy, seconds: float) -> int:
    """How many metric requests reach the server in the next ``seconds`` (an observation
    window: the assertion is about what does *not* happen in it)."""
    before = len(proxy.seen(METRICS))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return len(proxy.seen(METRICS)) - before


def test_metrics_appear_and_follow_the_server_within_one_interval(
    app: AppHarness, browser: WebDriver, billing: tuple[RunningServer, FaultProxy]
) -> None:
    server, _ = billing
    open_page(app, browser)
    shown = metric_text(browser, "api_calls")
    before = float(shown.split("=")[1])
    httpx.post(
        f"{server.base_url}/v1/usage/track",
        json={
            "customer_id": os.environ["BUI_E2E_CUSTOMER"],
            "feature_key": "api_calls",
            "quantity": 5,
        },
        headers=server.auth(),
    ).raise_for_status()
    changed_at = time.monotonic()
    wait_for(
        lambda: metric_text(browser, "api_calls") == f"api_calls={before + 5:g}",
        timeout=INTERVAL * 3,
        message=lambda: f"screen shows {metric_text(browser, 'api_calls')!r}",
    )
    # A tick happens at least once per interval; allow the render a little slack.
    assert time.monotonic() - changed_at <= INTERVAL * 1.5 + 0.5


def test_closing_the_tab_stops_the_requests(
    app: AppHarness, billing: tuple[RunningServer, FaultProxy]
) -> None:
    _, proxy = billing
    with chromium() as browser:
        open_page(app, browser)
        proxy.wait_for(lambda seen: len([r for r in seen if r.path == METRICS]) >= 1)
        assert requests_in(proxy, INTERVAL * 3) >= 2, "the loop must run while the tab is open"
    namespace = app.app_instance.event_namespace if app.app_instance else None
    assert namespace is not None
    wait_for(lambda: not namespace.token_to_sid, timeout=10, message="the socket never closed")
    # Let a tick already in flight land, then nothing more may come.
    requests_in(proxy, INTERVAL * 1.2)
    assert requests_in(proxy, INTERVAL * 3) == 0, "requests continued after the tab closed"


def test_reloading_does_not_double_the_loop(
    app: AppHarness, browser: WebDriver, billing: tuple[RunningServer, FaultProxy]
) -> None:
    _, proxy = billing
    open_page(app, browser)
    for _ in range(3):
        browser.refresh()
        wait_for(lambda: metric_text(browser, "api_calls"), timeout=30, message="no metrics")
    requests_in(proxy, INTERVAL * 1.2)  # let the superseded loops' last ticks land
    window = 6
    count = requests_in(proxy, INTERVAL * window)
    # One loop makes one request per interval (+1 for a tick at the window's edge); two loops
    # would make about twice as many.
    assert count <= window + 1, f"{count} requests in {window} intervals: more than one loop"
    assert count >= window - 2, f"only {count} requests in {window} intervals: the loop stalled"


def test_a_click_tracks_once_and_the_meter_moves(
    app: AppHarness, browser: WebDriver, billing: tuple[RunningServer, FaultProxy]
) -> None:
    _, proxy = billing
    open_page(app, browser)
    before = float(metric_text(browser, "api_calls").split("=")[1])
    tracks = len(proxy.seen("/v1/usage/track"))
    browser.find_element(By.ID, "track").click()
    wait_for(
        lambda: metric_text(browser, "api_calls") == f"api_calls={before + 1:g}",
        timeout=5,
        message=lambda: metric_text(browser, "api_calls"),
    )
    assert len(proxy.seen("/v1/usage/track")) == tracks + 1


def test_the_loop_resumes_once_after_a_reconnect(
    app: AppHarness, browser: WebDriver, billing: tuple[RunningServer, FaultProxy]
) -> None:
    """Cut the tab's network (Chromium's own offline emulation, over the DevTools protocol)
    until the backend sees the socket close, then restore it: the page reconnects by itself,
    and the refresh loop comes back exactly once."""
    _, proxy = billing
    open_page(app, browser)
    namespace = app.app_instance.event_namespace if app.app_instance else None
    assert namespace is not None
    wait_for(lambda: dict(namespace.token_to_sid), timeout=10, message="never connected")
    (first_sid,) = namespace.token_to_sid.values()

    def network(offline: bool) -> None:
        browser.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )

    browser.execute_cdp_cmd("Network.enable", {})
    network(offline=True)
    try:
        wait_for(lambda: not namespace.token_to_sid, timeout=15, message="the socket stayed up")
    finally:
        network(offline=False)
    wait_for(lambda: dict(namespace.token_to_sid), timeout=20, message="no reconnect")
    assert first_sid not in namespace.token_to_sid.values(), "expected a new socket"
    requests_in(proxy, INTERVAL * 1.2)  # the reconnect's own first fetch
    window = 5
    count = requests_in(proxy, INTERVAL * window)
    assert window - 2 <= count <= window + 1, f"{count} requests in {window} intervals"
