"""The billing states in a real browser: a minimal Reflex app (just the states, no components)
driven by headless chromium, against the real local billing server.

The server sits behind the forwarding proxy from tests/faults.py, which counts the upstream
requests: that is how "the loop stops when the tab closes" and "a reload does not double the
loop" are measured at the server, where they matter.

The module runs twice: with the query store in memory and in Redis (the session's throwaway
``redis-server``; without it the Redis half is skipped locally and fails in CI).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from reflex.testing import AppHarness
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

import billing_ui.runtime
from billing_ui.core.cache import MemoryQueryStore, QueryStore
from billing_ui.core.queries import QUERY_TYPES
from billing_ui.core.redis_cache import RedisQueryStore
from billing_ui.server.testing import RunningServer, create_customer
from tests.faults import FaultProxy

from .browser import billing_behind_proxy, chromium, click, run_app, wait_for

INTERVAL = 1.0
METRICS = "/v1/usage/metrics"
HEADROOM = 10.0
"""Seconds added to every deadline derived from INTERVAL: a loaded 2-CPU machine can delay a
tick by seconds. The assertions count requests and ticks; only the deadlines use the clock."""


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
    with billing_behind_proxy(tmp_path_factory.mktemp("billing")) as both:
        yield both


@pytest.fixture(scope="module", params=["memory", "redis"])
def app(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    billing: tuple[RunningServer, FaultProxy],
) -> Iterator[AppHarness]:
    server, proxy = billing
    store: QueryStore = MemoryQueryStore()
    if request.param == "redis":
        store = RedisQueryStore(
            request.getfixturevalue("redis_url"),
            namespace=f"e2e{uuid.uuid4().hex[:12]}",
            types=QUERY_TYPES,
        )
    billing_ui.runtime.install(None, store=store)  # the app's configure() keeps this store
    env = {
        "BUI_E2E_CUSTOMER": create_customer(server, ["pro"]),
        "BUI_E2E_INTERVAL": str(INTERVAL),
        "BUI_E2E_BILLING_URL": proxy.url,
        "BUI_E2E_KEY": server.api_key,
    }
    root = Path(tmp_path_factory.mktemp("states_app"))
    with run_app(root, app_source=states_app, env=env) as harness:
        yield harness


def metric_text(browser: WebDriver, feature: str) -> str:
    found = browser.find_elements(By.ID, f"metric-{feature}")
    return found[0].text if found else ""


def open_page(app: AppHarness, browser: WebDriver) -> None:
    assert app.frontend_url is not None
    browser.get(app.frontend_url)
    wait_for(lambda: metric_text(browser, "api_calls"), timeout=30, message="no metrics shown")


def metric_requests(proxy: FaultProxy) -> int:
    return len(proxy.seen(METRICS))


def wait_requests(proxy: FaultProxy, count: int, intervals: float) -> None:
    """Wait until ``count`` more metric requests have reached the server; the deadline is
    ``intervals`` refresh intervals plus HEADROOM."""
    target = metric_requests(proxy) + count
    wait_for(
        lambda: metric_requests(proxy) >= target,
        timeout=INTERVAL * intervals + HEADROOM,
        message=lambda: f"{metric_requests(proxy)} metric requests, waiting for {target}",
    )


def wait_quiet(proxy: FaultProxy, quiet_intervals: float = 2.0) -> None:
    """Wait until no metric request has arrived for ``quiet_intervals`` intervals (a tick in
    flight has landed), within a deadline."""
    last = [metric_requests(proxy), time.monotonic()]

    def quiet() -> bool:
        now = metric_requests(proxy)
        if now != last[0]:
            last[:] = [now, time.monotonic()]
        return time.monotonic() - last[1] >= INTERVAL * quiet_intervals

    wait_for(quiet, timeout=INTERVAL * quiet_intervals * 3 + HEADROOM, interval=0.05)


def requests_in(proxy: FaultProxy, seconds: float) -> int:
    """How many metric requests reach the server in the next ``seconds`` (an observation
    window: the assertion is about what does *not* happen in it)."""
    before = metric_requests(proxy)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return metric_requests(proxy) - before


def assert_one_loop(proxy: FaultProxy, ticks: int) -> None:
    """The refresh loop runs, and only once: ``ticks`` more requests arrive (deadline derived
    from the interval), and never faster than one per interval. One loop fetches, then sleeps
    a whole interval, so n requests span at least n - 1 intervals; two loops would make the n
    requests in about half that."""
    start, t0 = metric_requests(proxy), time.monotonic()
    wait_requests(proxy, ticks, intervals=ticks * 3)
    elapsed = time.monotonic() - t0
    count = metric_requests(proxy) - start
    assert count <= elapsed / INTERVAL + 2, (
        f"{count} requests in {elapsed:.1f} s ({elapsed / INTERVAL:.1f} intervals): "
        "more than one loop"
    )


def test_metrics_appear_and_follow_the_server_within_one_interval(
    app: AppHarness, browser: WebDriver, billing: tuple[RunningServer, FaultProxy]
) -> None:
    server, proxy = billing
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
    changed_at = metric_requests(proxy)
    wait_for(
        lambda: metric_text(browser, "api_calls") == f"api_calls={before + 5:g}",
        timeout=INTERVAL * 3 + HEADROOM,
        message=lambda: f"screen shows {metric_text(browser, 'api_calls')!r}",
    )
    # Within one interval means: the first tick after the change brings it. Count the ticks
    # (metric requests) since the change, not seconds: one, plus one if a tick was already on
    # its way when the usage changed, plus one if a loaded machine rendered it late.
    ticks = metric_requests(proxy) - changed_at
    assert 1 <= ticks <= 3, f"the screen caught up after {ticks} refreshes"


def test_closing_the_tab_stops_the_requests(
    app: AppHarness, billing: tuple[RunningServer, FaultProxy]
) -> None:
    _, proxy = billing
    with chromium() as browser:
        open_page(app, browser)
        wait_requests(proxy, 2, intervals=3)  # the loop runs while the tab is open
    namespace = app.app_instance.event_namespace if app.app_instance else None
    assert namespace is not None
    wait_for(lambda: not namespace.token_to_sid, timeout=10, message="the socket never closed")
    # A loop notices the closed tab after its sleep (at most one interval): let a tick already
    # in flight land, then nothing more may come.
    wait_quiet(proxy)
    assert requests_in(proxy, INTERVAL * 3) == 0, "requests continued after the tab closed"


def test_reloading_does_not_double_the_loop(
    app: AppHarness, browser: WebDriver, billing: tuple[RunningServer, FaultProxy]
) -> None:
    _, proxy = billing
    open_page(app, browser)
    for _ in range(3):
        browser.refresh()
        wait_for(lambda: metric_text(browser, "api_calls"), timeout=30, message="no metrics")
    # A superseded loop wakes after its sleep and exits without fetching; the last page's loop
    # is the only one left.
    assert_one_loop(proxy, ticks=6)


def test_a_click_tracks_once_and_the_meter_moves(
    app: AppHarness, browser: WebDriver, billing: tuple[RunningServer, FaultProxy]
) -> None:
    _, proxy = billing
    open_page(app, browser)
    before = float(metric_text(browser, "api_calls").split("=")[1])
    tracks = len(proxy.seen("/v1/usage/track"))
    click(browser, By.ID, "track")
    wait_for(
        lambda: metric_text(browser, "api_calls") == f"api_calls={before + 1:g}",
        timeout=5 + HEADROOM,
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
    wait_requests(proxy, 1, intervals=2)  # the reconnect's own first fetch
    assert_one_loop(proxy, ticks=5)
