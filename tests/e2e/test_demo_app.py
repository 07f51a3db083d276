"""The demo app in a real browser, against a real billing server the tests control.

One billing server (fresh SQLite file, seeded demo customers) and one demo app per module;
each test gets its own headless chromium, hence its own Reflex session. Tests that change
usage use their own customers, so they do not depend on each other's order. Every wait is a
condition with a deadline, never a sleep.

The module runs twice (issue 10: the e2e tests on both query stores): with billing_ui's query
store in memory and in Redis (the session's throwaway ``redis-server``; without it the Redis
half is skipped locally and fails in CI). Each run has its own billing server and demo app,
built once for all its tests, so a track in one run never shows up in the other's counts.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from reflex.testing import AppHarness
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

import billing_ui.runtime
from billing_ui.core import BillingClient, QuotaExceededError
from billing_ui.core.cache import MemoryQueryStore, QueryStore
from billing_ui.core.queries import QUERY_TYPES
from billing_ui.core.redis_cache import RedisQueryStore
from billing_ui.server.testing import RunningServer, create_customer, running_server

from .browser import click, fresh, wait_for
from .demo import (
    REPO,
    go,
    meter_bar,
    meter_value,
    refresh_deadline,
    running_demo,
    sign_in,
    text_of,
    track_button,
    visible,
    wait_meter,
)

# Customers only these tests touch: (products, usage to record first).
OWN_CUSTOMERS: dict[str, tuple[list[str], dict[str, float]]] = {
    "e2e_track": (["pro"], {"api_calls": 100}),
    "e2e_seats": (["free"], {"seats": 2}),
}
CUSTOMERS = ["demo_free", "demo_pro", "demo_enterprise", "demo_none", *OWN_CUSTOMERS]


class BillingServer:
    """The real local billing server, which a test may stop and start again on the same
    port with the same database (as an outage would)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.port = 0
        self._cm: contextlib.AbstractContextManager[RunningServer] | None = None
        self.server: RunningServer | None = None

    def start(self, *, seed: bool = False) -> RunningServer:
        self._cm = running_server(db_path=self.db_path, port=self.port, seed=seed)
        self.server = self._cm.__enter__()
        self.port = int(self.server.base_url.rsplit(":", 1)[1])
        return self.server

    def stop(self) -> None:
        if self._cm is not None:
            cm, self._cm, self.server = self._cm, None, None
            cm.__exit__(None, None, None)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module", params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> QueryStore:
    """The query store of this run of the module (the demo's ``configure()`` keeps it)."""
    if request.param == "redis":
        return RedisQueryStore(
            request.getfixturevalue("redis_url"),
            namespace=f"e2e{uuid.uuid4().hex[:12]}",
            types=QUERY_TYPES,
        )
    return MemoryQueryStore()


@pytest.fixture(scope="module")
def billing(store: QueryStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BillingServer]:
    control = BillingServer(tmp_path_factory.mktemp("demo-billing") / "billing.db")
    server = control.start(seed=True)
    with BillingClient(base_url=server.base_url, api_key=server.api_key) as client:
        for customer, (products, usage) in OWN_CUSTOMERS.items():
            create_customer(server, products, customer_id=customer)
            for feature, quantity in usage.items():
                client.track_usage(customer_id=customer, feature_key=feature, quantity=quantity)
    try:
        yield control
    finally:
        control.stop()


@pytest.fixture(scope="module")
def api(billing: BillingServer) -> Iterator[BillingClient]:
    """A client of the billing server, to compare the screen with the server's own counts."""
    assert billing.server is not None
    with BillingClient(
        base_url=billing.base_url, api_key=billing.server.api_key, max_retries=0
    ) as client:
        yield client


@pytest.fixture(scope="module")
def demo(store: QueryStore, billing: BillingServer) -> Iterator[AppHarness]:
    assert billing.server is not None
    billing_ui.runtime.install(None, store=store)  # kept by the demo's configure()
    with running_demo(billing.base_url, billing.server.api_key, CUSTOMERS) as harness:
        yield harness


def consumed(api: BillingClient, customer: str, feature: str) -> float:
    metrics = api.get_usage_metrics(customer_id=customer)
    return next(m.consumed for m in metrics if m.feature_key == feature)


def meter_attribute(browser: WebDriver, feature_key: str, name: str) -> str | None:
    return meter_bar(browser, feature_key).get_attribute(name)


def no_pending_tracks(browser: WebDriver) -> bool:
    buttons = browser.find_elements(By.CSS_SELECTOR, '[data-testid="track-button"]')
    return all(b.get_attribute("aria-busy") in (None, "false") for b in buttons)


def test_dashboard_shows_the_customers_seeded_usage(
    demo: AppHarness, browser: WebDriver, api: BillingClient
) -> None:
    sign_in(browser, demo, "demo_pro")
    expected = api.get_usage_metrics(customer_id="demo_pro")
    assert expected, "the seeded customer has meters"
    for metric in expected:
        wait_meter(browser, metric.feature_key, metric.consumed)
        key = metric.feature_key
        limit = fresh(functools.partial(meter_attribute, browser, key, "aria-valuemax"))
        assert float(limit or "nan") == metric.limit
        card = text_of(browser, f'[data-testid="usage-meter"][data-feature-key="{key}"]')
        assert metric.feature_title in card
        assert f"{metric.consumed:,.0f}" in card
    api_calls = text_of(browser, '[data-testid="usage-meter"][data-feature-key="api_calls"]')
    assert "12,345 / 50,000 used" in api_calls  # plans.toml: demo_pro, pro plan
    assert "37,655 remaining" in api_calls
    # The plan's entitlements and the usage chart are on the dashboard too.
    wait_for(
        lambda: visible(browser, '[data-testid="entitlement"][data-feature-key="priority_support"]')
    )
    wait_for(
        lambda: browser.find_elements(
            By.CSS_SELECTOR,
            '[data-testid="usage-chart"][data-feature-key="api_calls"] .recharts-area',
        ),
        timeout=10,
    )
    # A total names the meter's period, whatever the chart's buckets: the monthly api_calls
    # total is "this period"; the hourly chart of ai_tokens (resets daily) totals "today".
    by_key = {m.feature_key: m for m in expected}
    for key, span in (("api_calls", "this period"), ("ai_tokens", "today")):
        total = f'[data-testid="usage-chart"][data-feature-key="{key}"] [data-testid="chart-total"]'
        want = f"{by_key[key].consumed:,.0f} {span}"
        wait_for(lambda total=total, want=want: text_of(browser, total) == want, timeout=10)


def test_clicks_move_the_meter_and_the_server_by_the_quantity(
    demo: AppHarness, browser: WebDriver, api: BillingClient
) -> None:
    customer = "e2e_track"
    sign_in(browser, demo, customer)
    go(browser, "playground")
    for feature, quantity in (("api_calls", 1.0), ("storage_gb", 0.25)):
        before = consumed(api, customer, feature)
        wait_meter(browser, feature, before)
        click(browser, By.ID, f"track-{feature}")
        wait_meter(browser, feature, before + quantity)
        assert consumed(api, customer, feature) == before + quantity
        success = (
            f'[data-testid="track-control"][data-feature-key="{feature}"] '
            '[data-testid="track-success"]'
        )
        wait_for(functools.partial(visible, browser, success))

    # Ten quick clicks count ten: each is its own event with its own idempotency key.
    before = consumed(api, "e2e_track", "api_calls")
    for _ in range(10):
        click(browser, By.ID, "track-api_calls")
    wait_meter(browser, "api_calls", before + 10, timeout=15)
    wait_for(lambda: no_pending_tracks(browser), timeout=10)
    assert consumed(api, customer, "api_calls") == before + 10
    wait_meter(browser, "api_calls", before + 10)  # and it stays there


def test_feature_gate_shows_the_fallback_or_the_content(
    demo: AppHarness, browser: WebDriver
) -> None:
    sso = '[data-testid="sso-settings"]'
    prompt = '[data-feature-key="sso"] [data-testid="upgrade-prompt"]'

    sign_in(browser, demo, "demo_free")
    go(browser, "security")
    wait_for(lambda: visible(browser, prompt), timeout=10)
    assert not browser.find_elements(By.CSS_SELECTOR, sso)
    assert visible(browser, '[data-testid="support-fallback"]')

    click(browser, By.CSS_SELECTOR, '[data-testid="sign-out"]')
    sign_in(browser, demo, "demo_enterprise")
    go(browser, "security")
    wait_for(lambda: visible(browser, sso), timeout=10)
    assert not browser.find_elements(By.CSS_SELECTOR, prompt)
    assert visible(browser, '[data-testid="priority-support"]')


def test_dashboard_survives_a_billing_server_outage(
    demo: AppHarness, browser: WebDriver, billing: BillingServer, api: BillingClient
) -> None:
    sign_in(browser, demo, "demo_pro")
    shown = consumed(api, "demo_pro", "api_calls")
    wait_meter(browser, "api_calls", shown)
    error = '[data-testid="usage-error"]'
    assert not visible(browser, error)

    billing.stop()
    try:
        wait_for(lambda: visible(browser, error), timeout=refresh_deadline())
        assert "temporarily unavailable" in text_of(browser, error)
        # The last good data stays on screen.
        assert meter_value(browser, "api_calls") == shown
        assert visible(browser, '[data-testid="usage-retry"]')
    finally:
        billing.start()  # same port, same database
    # Recovers by itself on the next refresh: no click, no reload.
    wait_for(lambda: not visible(browser, error), timeout=refresh_deadline())
    wait_meter(browser, "api_calls", shown)


def test_a_hard_limit_disables_the_button_and_the_server_refuses_more(
    demo: AppHarness, browser: WebDriver, api: BillingClient
) -> None:
    customer = "e2e_seats"  # free plan: 3 seats, hard limit; 2 used
    sign_in(browser, demo, customer)
    go(browser, "playground")
    wait_meter(browser, "seats", 2)
    # The button renders with the entitlements, which may land after the meter.
    wait_for(lambda: track_button(browser, "seats").is_enabled(), timeout=10)

    click(browser, By.ID, "track-seats")
    wait_meter(browser, "seats", 3)
    wait_for(lambda: not track_button(browser, "seats").is_enabled(), timeout=10)
    assert visible(browser, '[data-testid="track-blocked"]')
    seats = '[data-testid="usage-meter"][data-feature-key="seats"]'
    level = fresh(lambda: browser.find_element(By.CSS_SELECTOR, seats).get_attribute("data-level"))
    assert level == "over"

    with pytest.raises(QuotaExceededError):
        api.track_usage(customer_id=customer, feature_key="seats", quantity=1)
    assert consumed(api, customer, "seats") == 3


def test_filtered_dashboards_share_one_page_and_unlimited_reads_as_such(
    demo: AppHarness, browser: WebDriver
) -> None:
    sign_in(browser, demo, "demo_enterprise")
    groups = {
        "consumption": {"api_calls", "ai_tokens", "report_exports"},
        "capacity": {"storage_gb", "seats"},
        "other": set(),
    }

    def keys_in(group: str) -> set[str]:
        meters = browser.find_elements(
            By.CSS_SELECTOR, f'[data-group="{group}"] [data-testid="usage-meter"]'
        )
        return {m.get_attribute("data-feature-key") or "" for m in meters}

    wait_for(
        lambda: all(keys_in(g) == want for g, want in groups.items()),
        timeout=10,
        message=lambda: str({g: keys_in(g) for g in groups}),
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, '[data-testid="usage-meter"]')) == 5

    unlimited = '[data-testid="usage-meter"][data-feature-key="api_calls"]'
    assert "Unlimited" in text_of(browser, unlimited)
    level = fresh(
        lambda: browser.find_element(By.CSS_SELECTOR, unlimited).get_attribute("data-level")
    )
    assert level == "unlimited"
    assert fresh(lambda: meter_attribute(browser, "api_calls", "aria-valuemax")) is None


def test_upgrade_nudge_shows_at_80_percent_and_stays_dismissed(
    demo: AppHarness, browser: WebDriver
) -> None:
    nudge = '[data-testid="upgrade-nudge"][data-feature-key="api_calls"]'
    sign_in(browser, demo, "demo_free")  # api_calls: 850 of 1,000
    wait_for(lambda: visible(browser, nudge), timeout=10)
    assert "85 %" in text_of(browser, nudge)
    click(browser, By.CSS_SELECTOR, f'{nudge} [data-testid="nudge-dismiss"]')
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, nudge), timeout=10)
    go(browser, "playground")
    wait_meter(browser, "api_calls", 850)
    go(browser, "dashboard")
    wait_meter(browser, "api_calls", 850)
    assert not browser.find_elements(By.CSS_SELECTOR, nudge)


def test_the_toast_nudge_floats_in_the_corner_and_shares_the_dismissal(
    demo: AppHarness, browser: WebDriver
) -> None:
    """The playground shows the nudge as a toast (upgrade_nudge(style="toast")): fixed to the
    window's bottom-right corner, over the page, not in its flow. Dismissing it dismisses the
    dashboard's banner too (one dismissal per feature, whatever the form)."""
    toast = '[data-testid="upgrade-toasts"] [data-feature-key="api_calls"]'
    sign_in(browser, demo, "demo_free")  # api_calls: 850 of 1,000
    go(browser, "playground")
    wait_for(lambda: visible(browser, toast), timeout=10)
    assert "85 %" in text_of(browser, toast)
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="upgrade-nudges"]')
    box = browser.execute_script(
        "const s = document.querySelector('[data-testid=\"upgrade-toasts\"]');"
        " const r = s.getBoundingClientRect();"
        " return [getComputedStyle(s).position, innerWidth - r.right, innerHeight - r.bottom];"
    )
    assert box[0] == "fixed" and 0 < box[1] < 40 and 0 < box[2] < 40, box
    click(browser, By.CSS_SELECTOR, f'{toast} [data-testid="nudge-dismiss"]')
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, toast), timeout=10)
    go(browser, "dashboard")
    wait_meter(browser, "api_calls", 850)
    assert not browser.find_elements(
        By.CSS_SELECTOR, '[data-testid="upgrade-nudge"][data-feature-key="api_calls"]'
    )


def test_the_demo_serves_its_favicon_and_logo_from_assets(
    demo: AppHarness, browser: WebDriver
) -> None:
    """The top-level assets/ folder is the demo's static files: the page links the favicon,
    and the top bar's logo loads (an <img> that failed to load has naturalWidth 0)."""
    sign_in(browser, demo, "demo_pro")
    icon = browser.find_element(By.CSS_SELECTOR, 'link[rel="icon"]').get_attribute("href")
    assert icon is not None and icon.endswith("/favicon.svg")
    served = httpx.get(icon, timeout=10)
    assert (
        served.status_code == 200 and served.content == (REPO / "assets/favicon.svg").read_bytes()
    )
    logo = '[data-testid="logo"]'
    wait_for(
        lambda: browser.execute_script(
            "const i = document.querySelector(arguments[0]);"
            " return i && i.complete && i.naturalWidth;",
            logo,
        ),
        timeout=10,
        message="the logo did not load",
    )
    src = browser.find_element(By.CSS_SELECTOR, logo).get_attribute("src") or ""
    assert src.endswith("/logo.svg")


def test_a_signed_out_visitor_sees_one_calm_line_on_the_dashboard(
    demo: AppHarness, browser: WebDriver
) -> None:
    """Opened without signing in, the dashboard says "Sign in to see your usage." once and
    nothing else about billing: no meter, chart, plan, error, "Loading…" or "Updated at"."""
    assert demo.frontend_url is not None
    browser.get(demo.frontend_url.rstrip("/") + "/dashboard")
    body = lambda: browser.find_element(By.TAG_NAME, "body").text  # noqa: E731
    wait_for(lambda: "Sign in to see your usage." in body(), timeout=30, message=body)
    text = body()
    assert text.count("Sign in to see your usage.") == 1, text
    for absent in ("Loading", "Updated at", "not on your plan", "No usage", "Your plan"):
        assert absent not in text, f"{absent!r} shown signed out: {text}"
    for testid in ("usage-meter", "usage-chart", "entitlements-list", "usage-error"):
        assert not browser.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]'), testid
    assert "/dashboard" in browser.current_url
