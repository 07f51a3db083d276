"""The demo's durable outbox in real headless chromium, with the billing API's track endpoints
down (the fault proxy closes every connection to them) and then back.

Two tabs of one customer. Tracks clicked in tab A while the API cannot take them are kept in
the demo's outbox file: the button says "Queued, will be sent (N waiting)", both tabs' meters
move at once (A) or at their next refresh (B) and say "+N pending". When the API is back the
tracker's worker delivers them, every tab drops the mark and shows the server's own count, and
the billing database holds each track once. The backend's opt-in ``/metrics`` (scraped over
HTTP) counts the queued tracks, the outbox depth and both polling tabs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from reflex.testing import AppHarness
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from billing_ui.core import BillingClient
from billing_ui.server.testing import RunningServer, create_customer, running_server
from tests.faults import FaultProxy, close
from tests.outbox.helpers import billed

from .browser import chromium, click, wait_for
from .demo import PAGE_TIMEOUT, go, meter_value, running_demo, sign_in, text_of, visible

CUSTOMER = "e2e_outbox"
FEATURE = "api_calls"
PENDING = f'[data-testid="usage-meter"][data-feature-key="{FEATURE}"] [data-testid="meter-pending"]'
QUEUED = f'[data-testid="track-control"][data-feature-key="{FEATURE}"] [data-testid="track-queued"]'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    db = tmp_path_factory.mktemp("outbox-billing") / "billing.db"
    with running_server(db_path=db) as srv:
        create_customer(srv, ["pro"], customer_id=CUSTOMER)
        yield srv


def scrape(harness: AppHarness) -> dict[str, float]:
    """The backend's ``/metrics``, unlabelled samples and ``name{result}`` ones."""
    assert harness.backend is not None
    port = harness.backend.servers[0].sockets[0].getsockname()[1]
    response = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            suffix = f"{{{s.labels['result']}}}" if "result" in s.labels else ""
            if not s.labels or suffix:
                out[s.name + suffix] = s.value
    return out


def server_count(server: RunningServer) -> float:
    with BillingClient(base_url=server.base_url, api_key=server.api_key) as api:
        metrics = api.get_usage_metrics(customer_id=CUSTOMER)
    return next(m.consumed for m in metrics if m.feature_key == FEATURE)


def test_queued_tracks_show_pending_in_every_tab_and_converge_when_the_api_is_back(
    server: RunningServer, browser: WebDriver
) -> None:
    with (
        FaultProxy(server.base_url) as proxy,
        running_demo(
            proxy.url,
            server.api_key,
            [CUSTOMER],
            extra_env={"BILLING_UI_METRICS_PATH": "/metrics"},
        ) as demo,
        chromium() as other,
    ):
        for tab in (browser, other):
            sign_in(tab, demo, CUSTOMER)
            go(tab, "playground")
        before = server_count(server)
        for tab in (browser, other):
            wait_for(lambda t=tab: meter_value(t, FEATURE) == before, timeout=PAGE_TIMEOUT)
        start = scrape(demo)

        proxy.on("/v1/usage/track", *[close()] * 10_000)  # the track endpoints are down
        proxy.on("/v1/usage/track-batch", *[close()] * 10_000)
        for n in (1, 2, 3):
            click(browser, By.ID, f"track-{FEATURE}")
            wait_for(
                lambda n=n: (
                    visible(browser, QUEUED)
                    and text_of(browser, QUEUED) == f"Queued, will be sent ({n} waiting)"
                ),
                timeout=30,
                message=f"no 'Queued … waiting' after click {n}",
            )
        for tab in (browser, other):  # A at once, B at its next refresh
            wait_for(lambda t=tab: meter_value(t, FEATURE) == before + 3, timeout=15)
            wait_for(
                lambda t=tab: visible(t, PENDING) and text_of(t, PENDING) == "+3 pending",
                timeout=15,
            )
        assert server_count(server) == before  # nothing reached the billing API
        down = scrape(demo)
        assert (
            down["billing_ui_tracks_total{queued}"]
            - start.get("billing_ui_tracks_total{queued}", 0)
            == 3
        )
        assert down["billing_ui_outbox_depth"] == 3
        assert down["billing_ui_polling_tabs"] >= 2

        proxy.clear()  # back: the tracker's worker delivers (after its backoff)
        wait_for(lambda: server_count(server) == before + 3, timeout=60, interval=0.5)
        for tab in (browser, other):
            wait_for(lambda t=tab: not visible(t, PENDING), timeout=15)
            wait_for(lambda t=tab: meter_value(t, FEATURE) == before + 3, timeout=15)
        drained = scrape(demo)
        assert drained["billing_ui_outbox_depth"] == 0
        assert (
            drained["billing_ui_outbox_delivered_total"]
            - down.get("billing_ui_outbox_delivered_total", 0)
            == 3
        )
    assert before == 0  # a new customer
    assert billed(Path(server.database), CUSTOMER) == (3, 3)  # each track once
