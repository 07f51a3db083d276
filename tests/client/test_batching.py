"""TrackBatcher against the real server, through the fault proxy (which counts the requests
and, in one test, answers the batch endpoint with the 404 a hosted BillingOS would give)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from faults import FaultProxy, respond

from billing_ui.core import (
    AsyncBillingClient,
    InvalidInputError,
    NotFoundError,
    PoolExhaustedError,
    QuotaExceededError,
)
from billing_ui.core.batching import TrackBatcher
from billing_ui.server.testing import RunningServer

TRACK, BATCH = "/v1/usage/track", "/v1/usage/track-batch"


@pytest.fixture
async def client(proxy: FaultProxy) -> AsyncIterator[AsyncBillingClient]:
    async with AsyncBillingClient(base_url=proxy.url, retry_initial_delay=0.01) as billing:
        yield billing


def consumed(server: RunningServer, customer: str) -> float:
    with server.client() as api:
        metrics = api.get("/v1/usage/metrics", params={"customer_id": customer}).json()
    return next(m["consumed"] for m in metrics["metrics"] if m["feature_key"] == "api_calls")


async def test_a_lone_track_uses_the_ordinary_endpoint(
    client: AsyncBillingClient, proxy: FaultProxy, customer: Callable[..., str]
) -> None:
    batcher = TrackBatcher(client)
    cid = customer("pro")
    result = await batcher.track_usage(customer_id=cid, feature_key="api_calls", quantity=2)
    assert result.success and not result.duplicate
    assert (len(proxy.seen(TRACK)), len(proxy.seen(BATCH))) == (1, 0)


async def test_a_burst_goes_out_in_a_few_batches_and_counts_each_track_once(
    client: AsyncBillingClient,
    proxy: FaultProxy,
    server: RunningServer,
    customer: Callable[..., str],
) -> None:
    batcher = TrackBatcher(client, max_in_flight=2)
    cid = customer("pro")
    results = await asyncio.gather(
        *(
            batcher.track_usage(customer_id=cid, feature_key="api_calls", quantity=1)
            for _ in range(300)
        )
    )
    assert all(r.success and not r.duplicate for r in results)
    assert consumed(server, cid) == 300
    requests = len(proxy.seen(TRACK)) + len(proxy.seen(BATCH))
    assert requests == batcher.requests_sent <= 4, requests  # 2 alone, then batches
    assert len({r.idempotency_key for r in results}) == 300


async def test_a_refused_event_gets_the_error_of_the_ordinary_endpoint(
    client: AsyncBillingClient,
    server: RunningServer,
    customer: Callable[..., str],
) -> None:
    batcher = TrackBatcher(client, max_in_flight=1)
    free, pro = customer("free"), customer("pro")
    calls = [
        batcher.track_usage(customer_id=pro, feature_key="api_calls", quantity=1),
        batcher.track_usage(customer_id=pro, feature_key="api_calls", quantity=1),
        batcher.track_usage(customer_id=free, feature_key="ai_tokens", quantity=20000),  # hard
        batcher.track_usage(customer_id=pro, feature_key="no_such_feature", quantity=1),
        batcher.track_usage(customer_id=pro, feature_key="api_calls", quantity=1),
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == [
        "TrackUsageResult",
        "TrackUsageResult",
        "QuotaExceededError",
        "NotFoundError",
        "TrackUsageResult",
    ]
    assert isinstance(outcomes[2], QuotaExceededError) and isinstance(outcomes[3], NotFoundError)
    assert batcher.batches_sent == 1
    assert consumed(server, pro) == 3


async def test_bad_input_is_refused_before_anything_is_sent(
    client: AsyncBillingClient, proxy: FaultProxy
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await TrackBatcher(client).track_usage(customer_id="c", feature_key="x", quantity=10**400)
    assert caught.value.field == "quantity"
    assert proxy.seen() == []


async def test_without_a_batch_endpoint_tracks_go_one_by_one(
    client: AsyncBillingClient,
    proxy: FaultProxy,
    server: RunningServer,
    customer: Callable[..., str],
) -> None:
    """A hosted BillingOS has no /track-batch (faked here with the proxy's 404)."""
    proxy.on(BATCH, respond(404))
    batcher = TrackBatcher(client, max_in_flight=1)
    cid = customer("pro")
    results = await asyncio.gather(
        *(
            batcher.track_usage(customer_id=cid, feature_key="api_calls", quantity=1)
            for _ in range(6)
        )
    )
    assert all(r.success for r in results) and consumed(server, cid) == 6
    assert not batcher.batching and len(proxy.seen(BATCH)) == 1


async def test_a_full_waiting_line_refuses_at_once(
    client: AsyncBillingClient, customer: Callable[..., str]
) -> None:
    batcher = TrackBatcher(client, max_in_flight=1, max_waiting=2)
    cid = customer("pro")
    calls = [
        batcher.track_usage(customer_id=cid, feature_key="api_calls", quantity=1)
        for _ in range(4)  # 1 sent, 2 waiting, 1 refused
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, PoolExhaustedError)]
    assert len(refused) == 1 and not refused[0].request_sent
