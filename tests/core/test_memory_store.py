"""What only the in-process store promises: a bounded LRU, garbage collection of keys nobody
reads (``gc_time``), a prefix index, and single-flight across event loops in other threads.

Real event loops in real threads; the upstream is a coroutine gated on a ``threading.Event``
the test holds (no sleeps)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from billing_ui.core.cache import MemoryQueryStore, QueryStore
from billing_ui.core.errors import InvalidInputError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_it_is_a_query_store() -> None:
    assert isinstance(MemoryQueryStore(), QueryStore)


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"max_entries": 0}, "max_entries"), ({"gc_time": 0}, "gc_time")]
)
def test_bad_limits_are_refused_by_name(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidInputError, match=field):
        MemoryQueryStore(**kwargs)  # type: ignore[arg-type]


async def one(value: int = 1) -> int:
    return value


async def test_the_least_recently_used_key_goes_past_max_entries() -> None:
    store = MemoryQueryStore(max_entries=3)
    for c in ("a", "b", "c"):
        await store.fetch(("m", c), one, stale_time=30)
    await store.peek(("m", "a"))  # a is now the most recently used
    await store.fetch(("m", "d"), one, stale_time=30)
    assert await store.size() == 3
    assert await store.peek(("m", "b")) is None
    assert all([await store.peek(("m", c)) for c in ("a", "c", "d")])
    assert store.stats.evicted == 1
    assert await store.invalidate(("m", "b")) == 0, "the index forgot the evicted key too"


async def test_a_key_unread_for_gc_time_is_collected_a_read_one_stays() -> None:
    clock = Clock()
    store = MemoryQueryStore(gc_time=300, clock=clock)
    await store.fetch(("m", "gone"), one, stale_time=30)
    await store.fetch(("m", "polled"), one, stale_time=30)
    for _ in range(4):  # a tab polling every 100 s keeps its key observed
        clock.now += 100
        await store.fetch(("m", "polled"), one, stale_time=30)
    assert await store.peek(("m", "gone")) is None
    assert await store.peek(("m", "polled")) is not None
    assert len(store) == 1


async def test_a_key_with_a_fetch_in_flight_is_never_evicted() -> None:
    store = MemoryQueryStore(max_entries=1)
    gate = asyncio.Event()

    async def slow() -> int:
        await gate.wait()
        return 7

    waiting = asyncio.create_task(store.fetch(("m", "slow"), slow, stale_time=30))
    await asyncio.sleep(0)  # a scheduling point: the fetch has started
    await store.fetch(("m", "other"), one, stale_time=30)
    gate.set()
    assert (await waiting).data == 7
    assert store.stats.fetches == 2


async def test_invalidation_reaches_exactly_the_keys_under_the_prefix() -> None:
    store = MemoryQueryStore()
    keys = [("m", "c1"), ("f", "c1", "a"), ("f", "c1", "b"), ("f", "c10", "a"), ("f", "c2", "a")]
    for key in keys:
        await store.fetch(key, one, stale_time=30)
    assert await store.invalidate(("f", "c1")) == 2  # not c10: parts, not string prefixes
    assert await store.size(("f",)) == 4
    assert await store.invalidate(()) == 5


def test_single_flight_holds_across_event_loops_in_other_threads() -> None:
    store = MemoryQueryStore()
    release, started = threading.Event(), threading.Event()
    calls: list[str] = []

    async def upstream() -> str:
        calls.append(threading.current_thread().name)
        started.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait)
        return "answer"

    results: dict[str, object] = {}

    def worker(name: str) -> None:
        async def go() -> None:
            entry = await store.fetch(("m", "c1"), upstream, stale_time=30)
            results[name] = entry.data

        asyncio.run(go())

    first = threading.Thread(target=worker, args=("first",), name="first")
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=worker, args=("second",), name="second")
    second.start()
    deadline = threading.Event()
    for _ in range(1000):  # wait until the second loop has joined the flight
        if store.stats.joined == 1:
            break
        deadline.wait(0.01)
    assert store.stats.joined == 1
    release.set()
    first.join(10)
    second.join(10)
    assert results == {"first": "answer", "second": "answer"}
    assert calls == ["first"]


def test_a_flight_whose_loop_has_stopped_is_not_joined() -> None:
    """A fetch left pending by a loop that is gone (a closed test loop, a worker thread that
    ended) never answers: the next caller, on another loop, fetches again instead of hanging."""
    store = MemoryQueryStore()
    never = threading.Event()

    async def hangs() -> int:
        await asyncio.get_running_loop().run_in_executor(None, never.wait, 5)
        return 0

    loop = asyncio.new_event_loop()
    loop.run_until_complete(_start(store, hangs))  # starts the fetch, returns without waiting
    loop.close()
    never.set()

    async def again() -> int:
        return (await store.fetch(("m", "c1"), one, stale_time=30)).data

    assert asyncio.run(again()) == 1
    assert store.stats.fetches == 2 and store.stats.joined == 0


async def _start(store: MemoryQueryStore, fetcher: object) -> None:
    task = asyncio.ensure_future(store.fetch(("m", "c1"), fetcher, stale_time=30))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    task.cancel()
