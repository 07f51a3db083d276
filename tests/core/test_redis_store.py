"""What the Redis store adds: one fetch and one truth across workers.

Each "worker" is its own :class:`RedisQueryStore` with its own connections and listener, on a
real Redis (the session's throwaway ``redis-server``), as two backend processes would be.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from billing_ui.core.cache import QueryStore
from billing_ui.core.models import UsageMetric, UsageSnapshot
from billing_ui.core.queries import METRICS, QUERY_TYPES, apply_usage
from billing_ui.core.redis_cache import RedisQueryStore

START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)


def metric(consumed: float) -> UsageMetric:
    return UsageMetric(
        feature_key="api_calls",
        consumed=consumed,
        limit=100,
        remaining=100 - consumed,
        percentage_used=consumed,
        period_start=START,
        period_end=END,
        resets_in_days=1,
    )


Workers = Callable[..., list[RedisQueryStore]]


@pytest.fixture
async def workers(redis_url: str) -> AsyncIterator[Workers]:
    made: list[RedisQueryStore] = []
    namespace = f"w{uuid.uuid4().hex[:12]}"

    def factory(n: int = 2, **kwargs: object) -> list[RedisQueryStore]:
        stores = [
            RedisQueryStore(redis_url, namespace=namespace, types=QUERY_TYPES, **kwargs)  # type: ignore[arg-type]
            for _ in range(n)
        ]
        made.extend(stores)
        return stores

    yield factory
    for store in made:
        await store.aclose()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_it_is_a_query_store(redis_url: str) -> None:
    assert isinstance(RedisQueryStore(redis_url), QueryStore)


async def test_many_callers_on_two_workers_make_one_fetch_woken_by_pubsub(
    workers: Workers,
) -> None:
    a, b = workers(2, lease=30)
    calls, gate = 0, asyncio.Event()

    async def upstream() -> list[UsageMetric]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return [metric(5)]

    key = (METRICS, "c1")
    callers = [
        asyncio.create_task(store.fetch(key, upstream, stale_time=30))
        for store in (a, b)
        for _ in range(20)
    ]
    await until(lambda: a.stats.joined + b.stats.joined == 39)
    released = time.monotonic()
    gate.set()
    results = await asyncio.gather(*callers)
    woken_in = time.monotonic() - released
    assert calls == 1
    assert {r.data[0].consumed for r in results} == {5}
    assert all(isinstance(r.data[0], UsageMetric) for r in results), "read back as models"
    # Waiters woken by the published answer, not by their 30 s lease running out.
    assert woken_in < 5, f"waiters took {woken_in:.2f} s"


async def test_an_invalidation_on_one_worker_is_seen_by_the_other(workers: Workers) -> None:
    a, b = workers(2)
    n = 0

    async def upstream() -> list[UsageMetric]:
        nonlocal n
        n += 1
        return [metric(n)]

    key = (METRICS, "c1")
    await a.fetch(key, upstream, stale_time=30)
    assert (await b.fetch(key, upstream, stale_time=30)).data[0].consumed == 1  # shared entry
    assert await b.invalidate((METRICS, "c1")) == 1
    assert (await a.fetch(key, upstream, stale_time=30)).data[0].consumed == 2
    assert n == 2


async def test_late_answers_never_move_a_meter_backwards_across_workers(
    workers: Workers,
) -> None:
    """Tracks answered out of order on two workers, and a fetch that began before them: the
    stored meter ends at the highest usage, whatever order the writes land in."""
    a, b = workers(2)
    key = (METRICS, "c1")

    async def ten() -> list[UsageMetric]:
        return [metric(10)]

    await a.fetch(key, ten, stale_time=30)
    gate = asyncio.Event()

    async def slow_old_answer() -> list[UsageMetric]:
        await gate.wait()
        return [metric(10)]  # what the upstream said before the tracks below

    await a.invalidate(key)
    old_fetch = asyncio.create_task(a.fetch(key, slow_old_answer, stale_time=30))
    await until(lambda: a.stats.fetches == 2)

    def track(consumed: float) -> Callable[[list[UsageMetric]], list[UsageMetric]]:
        snapshot = UsageSnapshot(consumed_units=consumed, period_start=START)
        return lambda metrics: [apply_usage(m, snapshot) for m in metrics]

    # 30 tracks' answers, from both workers at once, in shuffled order.
    answers = [11 + (i * 7) % 30 for i in range(30)]
    await asyncio.gather(
        *((a if i % 2 else b).set_data(key, track(consumed)) for i, consumed in enumerate(answers))
    )
    await b.invalidate(key)  # what a track does after patching
    gate.set()
    await old_fetch
    for store in (a, b):
        entry = await store.peek(key)
        assert entry is not None and entry.data[0].consumed == max(answers)


async def test_entries_carry_a_ttl(workers: Workers, redis_url: str) -> None:
    (a,) = workers(1, ttl=60)

    async def one() -> list[UsageMetric]:
        return [metric(1)]

    await a.fetch((METRICS, "c1"), one, stale_time=30)
    r = aioredis.Redis.from_url(redis_url)
    try:
        ttl_ms = await r.pttl(a._name("e", (METRICS, "c1")))
    finally:
        await r.aclose()
    assert 0 < ttl_ms <= 60_000


async def test_a_dead_fetchers_lock_runs_out_and_the_next_caller_fetches(
    workers: Workers, redis_url: str
) -> None:
    """A worker that died holding the lock is simulated by taking the lock by hand (a crash
    mid-fetch cannot be produced on demand): its lease expires, then a caller fetches."""
    (a,) = workers(1, lease=0.5)
    key = (METRICS, "c1")
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.set(a._name("lock", key), "dead-worker", px=500)
    finally:
        await r.aclose()

    async def one() -> list[UsageMetric]:
        return [metric(1)]

    started = time.monotonic()
    entry = await asyncio.wait_for(a.fetch(key, one, stale_time=30), timeout=10)
    assert entry.data[0].consumed == 1
    assert a.stats.fetches == 1 and a.stats.joined == 1
    assert time.monotonic() - started < 5


def test_bad_settings_are_refused_by_name(redis_url: str) -> None:
    from billing_ui.core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="lease"):
        RedisQueryStore(redis_url, lease=0)


async def test_a_write_on_one_worker_is_heard_on_the_other(workers: Workers) -> None:
    a, b = workers(2)
    heard: asyncio.Queue[tuple[object, ...]] = asyncio.Queue()
    await b.on_change(heard.put_nowait)

    async def one() -> list[UsageMetric]:
        return [metric(1)]

    await a.fetch((METRICS, "c1"), one, stale_time=30)
    assert await asyncio.wait_for(heard.get(), 5) == (METRICS, "c1")
    snapshot = UsageSnapshot(consumed_units=3, period_start=START)
    await a.set_data((METRICS, "c1"), lambda ms: [apply_usage(m, snapshot) for m in ms])
    assert await asyncio.wait_for(heard.get(), 5) == (METRICS, "c1")
    entry = await b.peek((METRICS, "c1"))
    assert entry is not None and entry.data[0].consumed == 3
