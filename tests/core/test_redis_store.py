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
from typing import Any

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


async def test_waiters_of_a_failed_fetch_on_another_worker_get_its_kind(workers: Workers) -> None:
    """A real client against a closed loopback port (the API unreachable) fails on worker a;
    worker b's caller, waiting on that fetch, gets a RemoteFetchError that carries the kind,
    so its tab shows the neutral outage sentence, not "Something went wrong"."""
    import socket

    from billing_ui.core import AsyncBillingClient
    from billing_ui.core.errors import RemoteFetchError
    from billing_ui.core.problems import USER_MESSAGE, classify
    from billing_ui.states._runtime import message_for

    with socket.socket() as probe:  # a free port nobody listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    a, b = workers(2, lease=30)
    entered, gate = asyncio.Event(), asyncio.Event()

    async def unreachable() -> list[UsageMetric]:
        entered.set()
        await gate.wait()
        async with AsyncBillingClient(base_url=dead, api_key="sk_test_x", max_retries=0) as c:
            return await c.get_usage_metrics("c1")

    async def never() -> list[UsageMetric]:
        raise AssertionError("b must wait for a's fetch, not fetch itself")

    leader = asyncio.create_task(a.fetch((METRICS, "c1"), unreachable, stale_time=30))
    await entered.wait()
    waiter = asyncio.create_task(b.fetch((METRICS, "c1"), never, stale_time=30))
    await until(lambda: b.stats.joined == 1)
    gate.set()
    with pytest.raises(Exception) as own:
        await leader
    with pytest.raises(RemoteFetchError) as remote:
        await waiter
    assert classify(own.value) == "unreachable"
    assert remote.value.problem == "unreachable" and classify(remote.value) == "unreachable"
    assert message_for(remote.value) == message_for(own.value) == USER_MESSAGE


def test_a_remote_answer_keeps_the_sentence_its_worker_would_show() -> None:
    from billing_ui.core.errors import RemoteFetchError
    from billing_ui.core.problems import BUSY_MESSAGE, classify
    from billing_ui.states._runtime import message_for

    overloaded = RemoteFetchError("PoolExhaustedError: busy", problem="overloaded")
    assert message_for(overloaded) == BUSY_MESSAGE
    answered = RemoteFetchError(
        "NotFoundError: 404", status_code=404, api_message="Customer not found: c1"
    )
    assert classify(answered) is None
    assert message_for(answered) == "The billing service answered: Customer not found: c1"
    assert classify(RemoteFetchError("x", problem="made-up")) is None


async def test_expired_keys_do_not_accumulate_in_the_prefix_indexes(
    workers: Workers, redis_url: str
) -> None:
    """50 customers come and their entries expire (TTL 0.3 s); the next fetch trims the indexes
    of every key and of every metrics key down to the live ones. An entry whose TTL a later
    write extended past its index score stays indexed (re-scored), so invalidation still
    reaches it."""
    from billing_ui.core.redis_cache import _INDEX

    (a,) = workers(1, ttl=0.3)

    async def one() -> list[UsageMetric]:
        return [metric(1)]

    for n in range(50):
        await a.fetch((METRICS, f"gone{n}"), one, stale_time=30)
    await a.fetch((METRICS, "kept"), one, stale_time=30)
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        kept = a._name("e", (METRICS, "kept"))
        await r.pexpire(kept, 60_000)  # what a later write of the entry does to its TTL
        indexes = [a._name(_INDEX, ()), a._name(_INDEX, (METRICS,))]
        deadline = time.monotonic() + 10
        while await r.exists(a._name("e", (METRICS, "gone49"))):  # all 50 expired
            assert time.monotonic() < deadline, "entries did not expire"
            await asyncio.sleep(0.05)
        now_ms = (await r.time())[0] * 1000
        await a.fetch((METRICS, "new"), one, stale_time=30)
        assert [await r.zcard(ix) for ix in indexes] == [2, 2]
        score = await r.zscore(indexes[1], kept)
        assert score is not None and score > now_ms + 30_000  # re-scored by its real TTL
    finally:
        await r.aclose()
    assert await a.invalidate((METRICS,)) == 2


async def test_an_answer_is_not_written_back_to_an_entry_that_expired_meanwhile(
    workers: Workers, redis_url: str
) -> None:
    """A fetch slower than the TTL: its answer must not recreate the entry as a hash with no
    TTL (which would never go)."""
    (a,) = workers(1, ttl=0.2)
    name = a._name("e", (METRICS, "slow"))
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)

    async def slow() -> list[UsageMetric]:
        deadline = time.monotonic() + 10
        while await r.exists(name):
            assert time.monotonic() < deadline, "entry did not expire"
            await asyncio.sleep(0.05)
        return [metric(1)]

    try:
        entry = await a.fetch((METRICS, "slow"), slow, stale_time=30)
        assert entry.data[0].consumed == 1  # the caller still gets its answer
        assert await r.exists(name) == 0
    finally:
        await r.aclose()


async def test_a_fetch_costs_three_round_trips_and_a_read_one(
    workers: Workers, redis_url: str
) -> None:
    """Issue 10's tick cost, in round trips to Redis (MONITOR shows each command a client
    sent; those a script runs are marked ``lua``): a fetcher reads, claims, then stores, tells
    the listeners and the waiters and releases its lock in one script; a read of a fresh
    entry is one script, and once this process holds the data, it is not sent again."""
    (store,) = workers(1)
    answer = [metric(3)]

    async def upstream() -> list[UsageMetric]:
        return answer

    await store.fetch((METRICS, "warm"), upstream, stale_time=30)  # scripts loaded by SHA
    monitor_client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    sent: list[list[str]] = []
    async with monitor_client.monitor() as monitor:
        listening = asyncio.create_task(_sent_until_ping(monitor, store.namespace, sent))
        await asyncio.sleep(0.2)  # MONITOR is on before the calls below (the ping ends it)
        key = (METRICS, "c-trips")
        first = await store.fetch(key, upstream, stale_time=30)
        again = await store.fetch(key, upstream, stale_time=30)
        async with aioredis.Redis.from_url(redis_url) as pinger:
            await pinger.ping()
        await asyncio.wait_for(listening, 10)
    await monitor_client.aclose()
    # In order: the read, the claim, the store-and-tell (the fetch), then the read again.
    assert len(sent) == 4, sent
    assert all(command[0].upper() == "EVALSHA" for command in sent), sent
    read, claim, store_and_tell, read_again = (command[1] for command in sent)
    assert read == read_again and len({read, claim, store_and_tell}) == 3, sent
    assert first.data == again.data == answer
    assert again.data is first.data, "the data this process holds: not sent nor decoded again"


async def _sent_until_ping(monitor: object, namespace: str, sent: list[list[str]]) -> None:
    """The commands clients sent (not those scripts ran) that name ``namespace``, until a PING."""
    async for event in monitor.listen():  # type: ignore[attr-defined]
        words = event["command"].split()
        if words and words[0].upper() == "PING":
            return
        if event.get("client_type") != "lua" and namespace in event["command"]:
            sent.append(words)


async def _ride(store: RedisQueryStore, redis_url: str, key: tuple[str, ...], stale: float) -> Any:
    """A read ahead of ``key`` sent in another client's pipeline (as a poll tick's read of its
    tab sends it), entered: the caller exits it with ``__aexit__``."""
    other = aioredis.Redis.from_url(redis_url)  # bytes, as Reflex's state manager's client
    ahead_cm = store.reading_ahead(key, stale_time=stale, client=other)
    ahead = await ahead_cm.__aenter__()
    assert ahead is not None, "one Redis for both clients"
    pipe = other.pipeline(transaction=False)
    pipe.ping()
    ahead.add_to(pipe)
    _, reply = await pipe.execute(raise_on_error=False)
    ahead.answered(reply)
    await other.aclose()
    return ahead_cm, ahead


async def test_a_read_ahead_serves_the_fetch_of_its_key_once(
    workers: Workers, redis_url: str
) -> None:
    (store,) = workers(1)
    calls = 0

    async def upstream() -> list[UsageMetric]:
        nonlocal calls
        calls += 1
        return [metric(calls)]

    key = (METRICS, "c-ahead")
    await store.fetch(key, upstream, stale_time=30)  # the entry exists, fresh
    reads_before = await _evalshas(redis_url)
    block, ahead = await _ride(store, redis_url, key, 30)
    assert ahead.answer is not None and ahead.answer[0] == "same"
    entry = await store.fetch(key, upstream, stale_time=30)
    again = await store.fetch(key, upstream, stale_time=30)
    await block.__aexit__(None, None, None)
    # The ride's read (1) served the first fetch; the second asked Redis itself (1).
    assert await _evalshas(redis_url) - reads_before == 2
    assert entry.data[0].consumed == again.data[0].consumed == 1 and calls == 1

    # An invalidation inside the block: the read ahead said "fresh", no longer true.
    block, ahead = await _ride(store, redis_url, key, 30)
    await store.invalidate((METRICS, "c-ahead"))
    entry = await store.fetch(key, upstream, stale_time=30)
    await block.__aexit__(None, None, None)
    assert calls == 2 and entry.data[0].consumed == 2


async def test_an_unused_read_ahead_frees_its_lock_and_the_waiters_ask_again(
    workers: Workers, redis_url: str
) -> None:
    a, b = workers(2, lease=30)

    async def upstream() -> list[UsageMetric]:
        return [metric(7)]

    key = (METRICS, "c-ahead-lead")
    block, ahead = await _ride(a, redis_url, key, 30)
    assert ahead.answer == ["lead"], "no entry yet: the read took the lock"
    waiting = asyncio.create_task(b.fetch(key, upstream, stale_time=30))
    await until(lambda: b.stats.joined == 1)
    started = time.monotonic()
    await block.__aexit__(None, None, None)  # the tick ended without fetching this key
    entry = await asyncio.wait_for(waiting, 10)
    assert entry.data[0].consumed == 7
    assert time.monotonic() - started < 5, "woken to ask again, not by the 30 s lease"
    assert b.stats.fetches == 1


async def _evalshas(redis_url: str) -> int:
    async with aioredis.Redis.from_url(redis_url) as client:
        stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
