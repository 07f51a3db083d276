"""The billing server frozen (SIGSTOP for 10 s, then SIGCONT) with the Reflex demo in the path,
in headless chromium: the demo's tracks time out and go to its durable outbox ("Queued, will
be sent (N waiting)"), the dashboard says "Billing is temporarily unavailable", and after SIGCONT
everything recovers by itself: the outbox delivers each track once (the billing database's file
holds exactly N new events, N new keys, although the server also works off the first attempts
it had received while frozen), the warning goes and the meter shows the server's number within
one refresh interval of the delivery.

Real processes: ``python -m billing_ui.server`` (seeded demo customers) frozen with real
signals, the demo under AppHarness, chromium. The demo's client gets a 1 s timeout and no
retries, and a 2 s refresh interval, so that the test stays short; the outbox is the
framework-neutral UsageTracker the demo's TrackUsageState is configured with."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from reflex.testing import AppHarness
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

import billing_ui
from billing_ui.core import AsyncBillingClient, BillingClient
from billing_ui.core.problems import USER_MESSAGE
from billing_ui.core.tracker import UsageTracker
from billing_ui.server.testing import ServerProcess, server_process
from tests.outbox.helpers import billed

from .browser import click, wait_for
from .demo import go, meter_value, running_demo, sign_in, text_of, visible, wait_meter

REFRESH_S = 2.0
FREEZE_S = 10.0
STEP_S = 30.0
"""Deadline of each step in the browser (a loaded CI machine renders slowly); the server stays
frozen until they are done, and at least FREEZE_S."""
TRACKS = 3
CUSTOMER = "demo_pro"
QUEUED = '[data-testid="track-queued"]'
ERROR = '[data-testid="usage-error"]'


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, AppHarness, Path]]:
    tmp = tmp_path_factory.mktemp("frozen")
    with (
        server_process(db_path=tmp / "billing.db") as server,
        running_demo(server.base_url, server.api_key, [CUSTOMER], REFRESH_S) as demo,
    ):
        yield server, demo, tmp


@pytest.fixture
def outbox_demo(stack: tuple[ServerProcess, AppHarness, Path]) -> Iterator[UsageTracker]:
    """The demo's states with a short client timeout and the durable outbox (restored after:
    the settings are the process's, shared with every other demo test)."""
    server, _demo, tmp = stack
    before = billing_ui.get_settings()
    sender = BillingClient(base_url=server.base_url, api_key=server.api_key, max_retries=0)
    tracker = UsageTracker(sender, outbox_path=tmp / "outbox.db", flush_interval=0.5)
    billing_ui.configure(
        client_factory=lambda: AsyncBillingClient(
            base_url=server.base_url, api_key=server.api_key, timeout=1.0, max_retries=0
        ),
        track_outbox=tracker,
    )
    try:
        yield tracker
    finally:
        billing_ui.configure(client_factory=before.client_factory, track_outbox=before.track_outbox)
        tracker.shutdown()
        sender.close()


def test_frozen_server_tracks_are_queued_delivered_once_and_the_page_recovers(
    stack: tuple[ServerProcess, AppHarness, Path],
    outbox_demo: UsageTracker,
    browser: WebDriver,
) -> None:
    server, demo, tmp = stack
    db = tmp / "billing.db"
    sign_in(browser, demo, CUSTOMER)
    go(browser, "playground")
    events_before, keys_before = billed(db, CUSTOMER)
    wait_for(lambda: meter_value(browser, "api_calls") > 0, timeout=20)
    shown = meter_value(browser, "api_calls")

    server.pause()
    frozen_at = time.monotonic()
    try:
        for n in range(1, TRACKS + 1):
            click(browser, By.ID, "track-api_calls")
            wait_for(
                lambda n=n: (
                    visible(browser, QUEUED)  # type: ignore[misc]
                    and f"({n} waiting)" in text_of(browser, QUEUED)
                ),
                timeout=STEP_S,
                message=lambda: browser.find_element(By.TAG_NAME, "body").text[:2000],
            )
        go(browser, "dashboard")  # the page's outage warning lives on the dashboard
        wait_for(
            lambda: visible(browser, ERROR),
            timeout=STEP_S,
            message=lambda: (
                "dashboard status "
                + str(
                    [
                        e.get_attribute("data-status")
                        for e in browser.find_elements(
                            By.CSS_SELECTOR, '[data-testid="usage-dashboard"]'
                        )
                    ]
                )
            ),
        )
        assert USER_MESSAGE in text_of(browser, ERROR)
        # It states only what it knows: the last number, or that plus the queued usage when
        # the meter shows pending usage ("+3 pending").
        assert meter_value(browser, "api_calls") in (shown, shown + TRACKS)
        assert outbox_demo.stats().depth == TRACKS
        time.sleep(max(0.0, frozen_at + FREEZE_S - time.monotonic()))  # at least FREEZE_S
    finally:
        server.resume()
    resumed = time.monotonic()

    wait_for(lambda: outbox_demo.stats().depth == 0, timeout=30, message="outbox not drained")
    drained = time.monotonic()
    wait_meter(browser, "api_calls", shown + TRACKS, timeout=REFRESH_S + 5)
    wait_for(lambda: not visible(browser, ERROR), timeout=REFRESH_S + 5)
    recovered = time.monotonic()

    events, keys = billed(db, CUSTOMER)
    assert (events - events_before, keys - keys_before) == (TRACKS, TRACKS)
    assert outbox_demo.stats().delivered == TRACKS
    print(
        f"frozen {resumed - frozen_at:.1f} s; drained {drained - resumed:.2f} s after SIGCONT; "
        f"page recovered {recovered - drained:.2f} s after the drain (interval {REFRESH_S} s)"
    )
