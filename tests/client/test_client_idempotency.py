"""One idempotency key, one count: replays, concurrency, keys per customer.
(Retries that replay a key after a lost response: test_client_faults.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from billing_ui.core import AsyncBillingClient, BillingClient, TrackUsageResult
from billing_ui.server.testing import RunningServer

from .conftest import Api

NewCustomer = Callable[..., str]


async def test_same_key_twice_counts_once_and_the_second_is_a_duplicate(
    api: Api, customer: NewCustomer, server: RunningServer
) -> None:
    cid = customer("pro")
    first = await api.track_usage(
        customer_id=cid, feature_key="api_calls", quantity=5, idempotency_key="evt-1"
    )
    again = await api.track_usage(
        customer_id=cid, feature_key="api_calls", quantity=5, idempotency_key="evt-1"
    )
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.recorded_at == first.recorded_at  # the original event, not a new one
    assert again.idempotency_key == first.idempotency_key == "evt-1"
    assert again.usage is not None and again.usage.consumed_units == 5
    assert server.count_events(cid) == 1


async def test_calls_without_a_key_are_distinct_events(
    api: Api, customer: NewCustomer, server: RunningServer
) -> None:
    cid = customer("pro")
    one = await api.track_usage(customer_id=cid, feature_key="api_calls", quantity=1)
    two = await api.track_usage(customer_id=cid, feature_key="api_calls", quantity=1)
    assert one.idempotency_key != two.idempotency_key
    assert server.count_events(cid) == 2


async def test_keys_are_scoped_to_the_customer(
    api: Api, customer: NewCustomer, server: RunningServer
) -> None:
    alice, bob = customer("pro"), customer("pro")
    for cid in (alice, bob):
        result = await api.track_usage(
            customer_id=cid, feature_key="api_calls", quantity=1, idempotency_key="shared"
        )
        assert not result.duplicate
    assert server.count_events(alice) == server.count_events(bob) == 1


async def test_twenty_concurrent_async_tracks_with_one_key_count_once(
    server: RunningServer, customer: NewCustomer
) -> None:
    cid = customer("pro")
    async with AsyncBillingClient(base_url=server.base_url) as client:
        results = await asyncio.gather(
            *(
                client.track_usage(
                    customer_id=cid, feature_key="api_calls", quantity=2, idempotency_key="burst"
                )
                for _ in range(20)
            )
        )
    assert server.count_events(cid) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert {r.recorded_at for r in results} == {results[0].recorded_at}
    assert all(r.usage is not None and r.usage.consumed_units == 2 for r in results)


def test_twenty_concurrent_threads_with_one_key_count_once(
    server: RunningServer, customer: NewCustomer
) -> None:
    cid = customer("pro")

    def one(client: BillingClient) -> TrackUsageResult:
        return client.track_usage(
            customer_id=cid, feature_key="api_calls", quantity=2, idempotency_key="burst"
        )

    with BillingClient(base_url=server.base_url) as client, ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: one(client), range(20)))
    assert server.count_events(cid) == 1
    assert sum(not r.duplicate for r in results) == 1
