"""Operability of billing_ui.asgi in a real FastAPI app on loopback, in front of the real local
billing server through the fault proxy:

* the app's opt-in ``/metrics`` (scraped over HTTP, parsed with prometheus_client's parser)
  moves by exactly what real tracks, retries, an outage, the outbox and cached reads did;
* once the outbox drains, cached usage is dropped through the query store, so with a Redis
  store a second worker (its own router and store client) reads the server's numbers at once,
  not after its refresh interval.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from billing_ui.asgi import billing_routes, prometheus_metrics
from billing_ui.core import AsyncBillingClient, BillingClient, metrics
from billing_ui.core.metrics import BillingMetrics
from billing_ui.core.queries import QUERY_TYPES, BillingQueries
from billing_ui.core.tracker import AsyncUsageTracker, UsageTracker
from billing_ui.server.testing import RunningServer, create_customer, serve_asgi
from tests.asgi.test_asgi_routes import TRACKABLE, browser, signed_in
from tests.faults import FaultProxy, close, respond
from tests.outbox.helpers import wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def fresh_metrics() -> Iterator[BillingMetrics]:
    """A registry of this test's own (what ``billing_ui.install`` does per runtime)."""
    before = metrics.current()
    try:
        yield metrics.use(BillingMetrics())
    finally:
        metrics.use(before)


def router_app(
    tracker: AsyncUsageTracker | None, *, client: Any = None, queries: Any = None
) -> FastAPI:
    """A FastAPI app with the router at /billing; reads cached for an hour."""
    app = FastAPI()
    app.mount(
        "/billing",
        billing_routes(
            resolve_customer=signed_in,
            trackable=TRACKABLE,
            client=client,
            queries=queries,
            tracker=tracker,
            refresh_interval=3600,
        ),
    )
    return app


def test_metrics_move_with_tracks_retries_the_outbox_and_the_cache(
    billing_server: RunningServer, tmp_path: Path, fresh_metrics: BillingMetrics
) -> None:
    customer = create_customer(billing_server, ["pro"])
    with FaultProxy(billing_server.base_url) as proxy:
        sync = UsageTracker(
            BillingClient(base_url=proxy.url, max_retries=1, timeout=2.0, retry_initial_delay=0.01),
            outbox_path=tmp_path / "outbox.db",
            flush_interval=0.1,
        )
        client = AsyncBillingClient(base_url=billing_server.base_url, max_retries=0)
        app = router_app(AsyncUsageTracker(sync), client=lambda: client)
        app.add_route("/metrics", prometheus_metrics)
        with serve_asgi(app, name="asgi-ops") as url, browser(url, customer) as page:
            start = scrape(url)
            proxy.on("/v1/usage/track", respond(503))  # one retry, then recorded
            assert page.post("/billing/track", json={"feature_key": "api_calls"}).status_code == 200
            proxy.on("/v1/usage/track", *[close()] * 10_000)  # down
            proxy.on("/v1/usage/track-batch", *[close()] * 10_000)
            for _ in range(2):
                queued = page.post("/billing/track", json={"feature_key": "api_calls"})
                assert queued.status_code == 202
            for _ in range(3):  # one fetch, then the cache
                assert page.get("/billing/metrics").status_code == 200
            down = scrape(url)
            proxy.clear()  # back
            wait_until(lambda: sync.stats().depth == 0, timeout=30, what="the outbox drains")
            drained = scrape(url)
        sync.shutdown()
        sync.client.close()

    def moved(a: Samples, b: Samples, name: str, **labels: str) -> float:
        return value(b, name, **labels) - value(a, name, **labels)

    assert moved(start, down, "billing_ui_tracks_total", result="recorded") == 1
    assert moved(start, down, "billing_ui_tracks_total", result="queued") == 2
    assert moved(start, down, "billing_ui_tracks_total", result="failed") >= 2  # + batches
    assert moved(start, down, "billing_ui_upstream_retries_total", operation="track_usage") == 3
    hist = "billing_ui_upstream_request_seconds_count"
    assert moved(start, down, hist, operation="track_usage", outcome="2xx") == 1
    assert moved(start, down, hist, operation="track_usage", outcome="error") == 2
    assert value(down, "billing_ui_outbox_depth") == 2
    assert value(down, "billing_ui_outbox_oldest_age_seconds") > 0
    assert moved(start, down, "billing_ui_cache_fetches_total") == 1
    assert moved(start, down, "billing_ui_cache_hits_total") == 2
    assert value(drained, "billing_ui_outbox_depth") == 0
    assert moved(down, drained, "billing_ui_outbox_delivered_total") == 2
    assert moved(down, drained, "billing_ui_tracks_total", result="recorded") == 2
    assert moved(down, drained, hist, operation="track_usage_batch", outcome="2xx") >= 1


def test_a_drain_drops_cached_usage_on_every_worker_through_redis(
    billing_server: RunningServer, tmp_path: Path, redis_url: str
) -> None:
    """Two workers (each its own router, client and Redis store connection, one namespace):
    worker A queues tracks while the API is down; worker B has the customer's usage cached
    for an hour. When A's outbox drains, B's next read shows the server's numbers."""
    from billing_ui.core.redis_cache import RedisQueryStore

    customer = create_customer(billing_server, ["pro"])
    namespace = f"ops_{uuid.uuid4().hex[:8]}"

    def worker(tracker: AsyncUsageTracker | None) -> FastAPI:
        client = AsyncBillingClient(base_url=billing_server.base_url, max_retries=0)
        store = RedisQueryStore(redis_url, namespace=namespace, types=QUERY_TYPES)
        return router_app(tracker, queries=BillingQueries(lambda: client, store))

    def used(page: httpx.Client) -> float:
        (meter,) = [
            m
            for m in page.get("/billing/metrics").json()["metrics"]
            if m["feature_key"] == "api_calls"
        ]
        return float(meter["consumed"])

    with FaultProxy(billing_server.base_url) as proxy:
        sync = UsageTracker(
            BillingClient(base_url=proxy.url, max_retries=0, timeout=2.0),
            outbox_path=tmp_path / "outbox.db",
            flush_interval=0.1,
        )
        with (
            serve_asgi(worker(AsyncUsageTracker(sync)), name="worker-a") as url_a,
            serve_asgi(worker(None), name="worker-b") as url_b,
            browser(url_a, customer) as tab_a,
            browser(url_b, customer) as tab_b,
        ):
            before = used(tab_b)  # cached in Redis for an hour
            proxy.on("/v1/usage/track", *[close()] * 10_000)
            proxy.on("/v1/usage/track-batch", *[close()] * 10_000)
            for _ in range(3):
                assert (
                    tab_a.post("/billing/track", json={"feature_key": "api_calls"}).status_code
                    == 202
                )
            assert used(tab_b) == before  # still the cached answer
            proxy.clear()
            wait_until(lambda: sync.stats().depth == 0, timeout=30, what="the outbox drains")
            wait_until(
                lambda: used(tab_b) == before + 3,
                timeout=10,
                what="worker B reads the server's numbers after A's drain",
            )
        sync.shutdown()
        sync.client.close()
