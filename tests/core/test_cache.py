"""The query store's contract, on both stores (in memory and in a real Redis): identical keys
share one fetch, freshness, invalidation, errors.

The fetchers here are plain coroutines that count their calls and wait on events the test
controls, so concurrency is exercised for real (no mocks, no sleeps)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from billing_ui.core.cache import MemoryQueryStore, QueryStore


class Upstream:
    """A stand-in for the billing API that counts calls and releases them on demand."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None

    async def __call__(self) -> int:
        self.calls += 1
        n = self.calls
        self.entered.set()
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return n


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``condition`` with a deadline (callers reach a Redis store over the network)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


Make = Callable[..., QueryStore]


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """A factory of stores of one kind: ``make(clock=...)``. Each Redis store gets a fresh
    namespace on the session's throwaway server, and is closed after the test."""
    made: list[QueryStore] = []
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    namespace = f"t{uuid.uuid4().hex[:12]}"

    def factory(**kwargs: Any) -> QueryStore:
        store: QueryStore
        if url is None:
            store = MemoryQueryStore(**kwargs)
        else:
            from billing_ui.core.redis_cache import RedisQueryStore

            store = RedisQueryStore(url, namespace=namespace, **kwargs)
        made.append(store)
        return store

    yield factory
    for store in made:
        await store.aclose()


async def test_concurrent_identical_queries_share_one_fetch(make: Make) -> None:
    cache, up = make(), Upstream()
    up.gate.clear()
    waiters = [asyncio.create_task(cache.fetch(("m", "c1"), up, stale_time=30)) for _ in range(50)]
    await until(lambda: cache.stats.joined == 49)  # every caller is waiting on the one fetch
    up.gate.set()
    results = await asyncio.gather(*waiters)
    assert up.calls == 1
    assert {r.data for r in results} == {1}
    assert cache.stats.fetches == 1 and cache.stats.joined == 49


async def test_fresh_data_is_served_from_cache_until_stale(make: Make) -> None:
    clock = Clock()
    cache, up = make(clock=clock), Upstream()
    assert (await cache.fetch(("m", "c1"), up, stale_time=30)).data == 1
    clock.now += 29
    assert (await cache.fetch(("m", "c1"), up, stale_time=30)).data == 1
    clock.now += 2
    assert (await cache.fetch(("m", "c1"), up, stale_time=30)).data == 2
    assert up.calls == 2


async def test_keys_are_independent(make: Make) -> None:
    cache, up = make(), Upstream()
    await cache.fetch(("m", "c1"), up, stale_time=30)
    await cache.fetch(("m", "c2"), up, stale_time=30)
    assert up.calls == 2


async def test_invalidate_by_prefix_forces_the_next_fetch(make: Make) -> None:
    cache, up = make(), Upstream()
    await cache.fetch(("m", "c1", "a"), up, stale_time=30)
    await cache.fetch(("m", "c1", "b"), up, stale_time=30)
    await cache.fetch(("m", "c2", "a"), up, stale_time=30)
    assert await cache.invalidate(("m", "c1")) == 2
    await cache.fetch(("m", "c2", "a"), up, stale_time=30)
    assert up.calls == 3  # c2 untouched
    assert (await cache.fetch(("m", "c1", "a"), up, stale_time=30)).data == 4


async def test_a_fetch_in_flight_during_invalidation_does_not_count_as_fresh(make: Make) -> None:
    cache, up = make(), Upstream()
    up.gate.clear()
    old = asyncio.create_task(cache.fetch(("m", "c1"), up, stale_time=30))
    await up.entered.wait()
    await cache.invalidate(("m",))
    up.gate.set()
    assert (await old).data == 1
    assert (await cache.fetch(("m", "c1"), up, stale_time=30)).data == 2


async def test_an_answer_invalidated_in_flight_gives_way_to_what_the_store_holds(
    make: Make,
) -> None:
    """A track patches newer usage in and invalidates while a fetch is in flight: the fetcher
    and its waiters get the store's (patched) entry, not the older answer, so a poll tick needs
    no second read to catch the patch (issue 10: that read was one round trip per tick)."""
    cache, up = make(), Upstream()
    await cache.fetch(("m", "c1"), up, stale_time=30)  # 1 stored
    await cache.invalidate(("m", "c1"))
    up.gate.clear()
    up.entered.clear()
    leader = asyncio.create_task(cache.fetch(("m", "c1"), up, stale_time=30))
    await up.entered.wait()
    joined = asyncio.create_task(cache.fetch(("m", "c1"), up, stale_time=30))
    await until(lambda: cache.stats.joined == 1)
    await cache.set_data(("m", "c1"), lambda n: n + 100)  # the track's usage: 101
    await cache.invalidate(("m", "c1"))
    up.gate.set()  # the fetch answers 2: older than the patch
    assert [(await leader).data, (await joined).data] == [101, 101]
    assert up.calls == 2


async def test_an_entry_made_by_set_data_is_under_its_prefixes(make: Make) -> None:
    """An entry that ``set_data`` creates (usage samples) is found by prefix like a fetched one
    (the Redis store indexed it under an index that invalidation no longer read)."""
    cache = make()
    await cache.set_data(("s", "c1"), lambda n: n + 1, create=lambda: 0)
    assert await cache.size(("s",)) == 1
    assert await cache.invalidate(("s", "c1")) == 1


async def test_errors_reach_every_waiter_and_keep_the_last_good_data(make: Make) -> None:
    cache, up = make(), Upstream()
    await cache.fetch(("m", "c1"), up, stale_time=0)
    up.fail = RuntimeError("upstream down")
    up.gate.clear()
    waiters = [asyncio.create_task(cache.fetch(("m", "c1"), up, stale_time=0)) for _ in range(3)]
    await until(lambda: cache.stats.joined == 2)
    up.gate.set()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    # The caller whose fetch failed gets the error itself; with Redis the others (on any
    # worker) get it as a RemoteFetchError naming it.
    assert all(isinstance(o, Exception) and "upstream down" in str(o) for o in outcomes)
    assert up.calls == 2
    entry = await cache.peek(("m", "c1"))
    assert entry is not None and entry.data == 1


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(make: Make) -> None:
    cache, up = make(), Upstream()
    up.gate.clear()
    first = asyncio.create_task(cache.fetch(("m", "c1"), up, stale_time=30))
    second = asyncio.create_task(cache.fetch(("m", "c1"), up, stale_time=30))
    await until(lambda: cache.stats.joined == 1)
    first.cancel()
    up.gate.set()
    assert (await second).data == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_set_data_patches_but_keeps_the_entry_due_for_refetch(make: Make) -> None:
    cache, up = make(), Upstream()
    await cache.fetch(("m", "c1"), up, stale_time=30)
    await cache.invalidate(("m", "c1"))
    await cache.set_data(("m", "c1"), lambda old: old + 100)
    entry = await cache.peek(("m", "c1"))
    assert entry is not None and entry.data == 101
    assert (await cache.fetch(("m", "c1"), up, stale_time=30)).data == 2


def test_a_late_track_answer_does_not_move_the_meter_backwards() -> None:
    from datetime import UTC, datetime

    from billing_ui.core.models import UsageMetric, UsageSnapshot
    from billing_ui.core.queries import apply_usage

    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    metric = UsageMetric(
        feature_key="api_calls",
        consumed=10,
        limit=100,
        remaining=90,
        percentage_used=10,
        period_start=start,
        period_end=end,
        resets_in_days=1,
    )
    newer = apply_usage(metric, UsageSnapshot(consumed_units=12, period_start=start))
    assert (newer.consumed, newer.remaining, newer.percentage_used) == (12, 88, 12)
    late = apply_usage(newer, UsageSnapshot(consumed_units=11, period_start=start))
    assert late.consumed == 12
    reset = apply_usage(newer, UsageSnapshot(consumed_units=1, period_start=end))
    assert reset.consumed == 1


async def test_listeners_hear_every_write_and_stop_when_told(make: Make) -> None:
    cache, up = make(), Upstream()
    heard: asyncio.Queue[tuple[object, ...]] = asyncio.Queue()
    stop = await cache.on_change(heard.put_nowait)
    await cache.fetch(("m", "c1"), up, stale_time=30)
    assert await asyncio.wait_for(heard.get(), 5) == ("m", "c1")
    await cache.set_data(("m", "c1"), lambda old: old + 1)
    assert await asyncio.wait_for(heard.get(), 5) == ("m", "c1")
    stop()
    await cache.set_data(("m", "c1"), lambda old: old + 1)
    await cache.fetch(("m", "c2"), up, stale_time=30)  # a write after it, to wait on
    stop_other = await cache.on_change(heard.put_nowait)
    await cache.set_data(("m", "c2"), lambda old: old)
    assert await asyncio.wait_for(heard.get(), 5) == ("m", "c2"), "nothing from after stop()"
    stop_other()


async def test_an_answer_dropped_by_invalidation_is_not_announced(make: Make) -> None:
    cache, up = make(), Upstream()
    heard: asyncio.Queue[tuple[object, ...]] = asyncio.Queue()
    await cache.on_change(heard.put_nowait)
    up.gate.clear()
    old = asyncio.create_task(cache.fetch(("m", "c1"), up, stale_time=30))
    await up.entered.wait()
    await cache.invalidate(("m",))
    up.gate.set()
    await old
    await cache.fetch(("m", "marker"), up, stale_time=30)  # announced in order after it
    assert await asyncio.wait_for(heard.get(), 5) == ("m", "marker")


async def test_a_refetch_that_brings_the_same_data_is_not_announced(make: Make) -> None:
    """Every tab of a customer follows its key: a refetch per interval that finds nothing new
    must not cost each of them a state round trip (issue 10)."""
    cache, up = make(), Upstream()
    heard: asyncio.Queue[tuple[object, ...]] = asyncio.Queue()
    await cache.on_change(heard.put_nowait)
    same = lambda: asyncio.sleep(0, 7)  # noqa: E731
    await cache.fetch(("m", "same"), same, stale_time=30)
    assert await asyncio.wait_for(heard.get(), 5) == ("m", "same"), "a first fetch is news"
    await cache.invalidate(("m", "same"))
    await cache.fetch(("m", "same"), same, stale_time=30)
    await cache.fetch(("m", "marker"), up, stale_time=30)  # announced in order after it
    assert await asyncio.wait_for(heard.get(), 5) == ("m", "marker")
    await cache.invalidate(("m", "same"))
    await cache.fetch(("m", "same"), lambda: asyncio.sleep(0, 8), stale_time=30)
    assert await asyncio.wait_for(heard.get(), 5) == ("m", "same"), "new data is news"
