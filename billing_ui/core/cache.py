"""The query store: cached, single-flight fetches in the manner of TanStack Query.

Why it exists: every open tab of a customer polls its usage every 30 seconds. Without a shared
store, 1,000 tabs of 10 customers make 1,000 upstream requests per interval; with it they make
at most 10. A query is identified by its key (a tuple such as ``("usage-metrics", customer)``);
identical keys share one in-flight request and one entry; ``stale_time`` decides when data is
fetched again; a successful mutation invalidates the keys it affects (by prefix).

:class:`QueryStore` is the seam: :class:`MemoryQueryStore` (here) keeps the entries in this
process; :class:`billing_ui.core.redis_cache.RedisQueryStore` keeps them in Redis, shared by
every worker. The query layer (:mod:`billing_ui.core.queries`) only sees the protocol.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

log = logging.getLogger("billing_ui.cache")
T = TypeVar("T")
Key = tuple[Hashable, ...]
ChangeListener = Callable[[Key], None]
Update = Callable[[Any], Any]
"""``set_data``'s ``update(old) -> new``."""
Create = Callable[[], Any]
"""``set_data``'s ``create() -> old`` for a key with no entry."""


@dataclass(frozen=True, slots=True)
class CacheEntry(Generic[T]):
    """Data and when it was fetched (``updated_at``: wall clock, for display)."""

    data: T
    updated_at: float
    fetched_at: float  # the store's own clock (``QueryStore.clock``), for staleness


def updated_entry(
    entry: CacheEntry[Any] | None,
    update: Update,
    create: Create | None,
    *,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
) -> CacheEntry[Any] | None:
    """The entry ``QueryStore.set_data`` stores in place of ``entry`` (None: store nothing),
    the one rule for both stores: an update keeps the entry's fetch time (it was not fetched
    again); an entry made from ``create()`` counts as fetched now, so it is never stale."""
    if entry is not None:
        return CacheEntry(
            data=update(entry.data), updated_at=wall_clock(), fetched_at=entry.fetched_at
        )
    if create is None:
        return None
    return CacheEntry(data=update(create()), updated_at=wall_clock(), fetched_at=clock())


@dataclass(slots=True)
class CacheStats:
    """Counters for tests and benchmarks: how often the upstream was really called."""

    fetches: int = 0
    hits: int = 0
    joined: int = 0
    evicted: int = 0


@runtime_checkable
class QueryStore(Protocol):
    """What the query layer needs from a store of query results.

    Every method is a coroutine, so a store may live in another process (Redis). ``clock`` is
    the clock of ``CacheEntry.fetched_at``: a caller compares entries only with it.
    """

    stats: CacheStats

    @property
    def clock(self) -> Callable[[], float]:
        """The clock of ``CacheEntry.fetched_at``."""
        ...

    async def fetch(
        self, key: Key, fetcher: Callable[[], Awaitable[T]], *, stale_time: float
    ) -> CacheEntry[T]:
        """Fresh data for ``key``: the stored entry if younger than ``stale_time`` and not
        invalidated, else one upstream call shared by every concurrent caller. An error reaches
        every waiting caller and leaves the previous entry in place.

        An answer that is not stored, because the key was invalidated while it was in flight
        (a track patched newer usage in, then invalidated), is not returned either: the
        callers get the entry the store holds then (the answer only when the store holds
        none). So a caller never needs a second read to catch such a patch, and never shows
        older data than the store has."""
        ...

    async def peek(self, key: Key) -> CacheEntry[Any] | None:
        """The stored entry, fresh or not, without fetching."""
        ...

    async def set_data(self, key: Key, update: Update, *, create: Create | None = None) -> None:
        """Apply ``update(old) -> new`` to stored data (an optimistic update). ``update`` must
        be safe to run again on a newer value (a store may retry it on a concurrent write).
        Without an entry nothing happens, unless ``create`` is given: then the entry is made
        from ``update(create())``, atomically (data kept by the app, such as usage samples,
        not fetched: no upstream call is counted, and it is never stale)."""
        ...

    async def invalidate(self, prefix: Key) -> int:
        """Mark every key starting with ``prefix`` stale and detach fetches in flight for them
        (their answer may predate the change). Returns how many keys matched."""
        ...

    async def size(self, prefix: Key = ()) -> int:
        """How many keys starting with ``prefix`` the store holds."""
        ...

    async def clear(self) -> None:
        """Forget every entry."""
        ...

    async def aclose(self) -> None:
        """Release connections and background work (an app's shutdown)."""
        ...

    async def on_change(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener(key)`` whenever a key's data is written (a fetch stored that brought
        data other than the stored, an optimistic update), by this process or, for a shared
        store, by any worker; returns the
        function that stops it. Live views (every tab of a customer) follow the data this way
        instead of waiting for their own timer. Listeners run on the event loop that
        registered them and must not block."""
        ...


class Listeners:
    """The change listeners of one store, each called on the event loop that registered it
    (thread-safe: a store may be written from several loops)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, tuple[asyncio.AbstractEventLoop, ChangeListener]] = {}
        self._next = 0

    def add(self, listener: ChangeListener) -> Callable[[], None]:
        loop = asyncio.get_running_loop()
        with self._lock:
            handle, self._next = self._next, self._next + 1
            self._items[handle] = (loop, listener)

        def stop() -> None:
            with self._lock:
                self._items.pop(handle, None)

        return stop

    def notify(self, key: Key, *, only: asyncio.AbstractEventLoop | None = None) -> None:
        """Schedule every listener (``only`` those of one loop) with ``key``."""
        with self._lock:
            items = list(self._items.values())
        for loop, listener in items:
            if loop.is_closed() or (only is not None and loop is not only):
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            # A fresh context: a listener is no part of the code that wrote (its request's
            # context variables, a framework's per-event state, stay behind).
            if running is loop:
                loop.call_soon(_call, listener, key, context=contextvars.Context())
            else:
                loop.call_soon_threadsafe(_call, listener, key, context=contextvars.Context())


def _call(listener: ChangeListener, key: Key) -> None:
    try:
        listener(key)
    except Exception:
        log.exception("a query store change listener failed")


class _Flight:
    """One upstream fetch in progress. Its outcome is a thread-safe future, so callers on any
    event loop (a test's, a worker thread's) can wait on it; the fetch itself runs on the loop
    of the caller that started it."""

    __slots__ = ("done", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.done: concurrent.futures.Future[CacheEntry[Any]] = concurrent.futures.Future()

    def joinable(self) -> bool:
        """False when the loop running the fetch has stopped: its answer will never come, so
        a new caller starts its own fetch instead of waiting forever."""
        return self.done.done() or (self.loop.is_running() and not self.loop.is_closed())


@dataclass(slots=True)
class _Slot:
    key: Key
    entry: CacheEntry[Any] | None = None
    inflight: _Flight | None = None
    generation: int = 0
    stale: bool = False
    failed: bool = False
    """The last fetch failed: the entry, however young, is not served as fresh (an outage
    shows at once on every tab, not an interval later)."""
    used_at: float = 0.0


class _Node:
    __slots__ = ("children", "slot")

    def __init__(self) -> None:
        self.children: dict[Hashable, _Node] = {}
        self.slot: _Slot | None = None


class _PrefixIndex:
    """A trie over key tuples: the keys under a prefix in time proportional to how many there
    are, not to how many keys the store holds."""

    def __init__(self) -> None:
        self._root = _Node()

    def add(self, slot: _Slot) -> None:
        node = self._root
        for part in slot.key:
            node = node.children.setdefault(part, _Node())
        node.slot = slot

    def remove(self, key: Key) -> None:
        path = [self._root]
        for part in key:
            child = path[-1].children.get(part)
            if child is None:
                return
            path.append(child)
        path[-1].slot = None
        for depth in range(len(key), 0, -1):  # prune the branch that is now empty
            node = path[depth]
            if node.slot is not None or node.children:
                break
            del path[depth - 1].children[key[depth - 1]]

    def under(self, prefix: Key) -> Iterator[_Slot]:
        node: _Node | None = self._root
        for part in prefix:
            node = node.children.get(part) if node else None
        stack = [node] if node else []
        while stack:
            node = stack.pop()
            if node.slot is not None:
                yield node.slot
            stack.extend(node.children.values())

    def clear(self) -> None:
        self._root = _Node()


@dataclass
class MemoryQueryStore:
    """The in-process :class:`QueryStore`: an LRU of at most ``max_entries`` keys, where a key
    nobody has read for ``gc_time`` seconds is dropped (TanStack Query's garbage collection of
    unobserved queries: a closed tab's customer leaves memory, a polling tab's stays).

    Single-flight holds across event loops and threads: the in-flight fetch is shared through a
    thread-safe future, and one whose loop has stopped is not joined. Invalidation walks a
    prefix index, so it costs the keys it matches, not the keys held.
    """

    max_entries: int = 10_000
    gc_time: float = 300.0
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    stats: CacheStats = field(default_factory=CacheStats)
    _slots: OrderedDict[Key, _Slot] = field(default_factory=OrderedDict, repr=False)
    _index: _PrefixIndex = field(default_factory=_PrefixIndex, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    _listeners: Listeners = field(default_factory=lambda: Listeners(), repr=False)

    def __post_init__(self) -> None:
        from billing_ui.core.errors import InvalidInputError

        if isinstance(self.max_entries, bool) or not isinstance(self.max_entries, int):
            raise InvalidInputError.single("max_entries", "type", "must be a whole number")
        if self.max_entries < 1:
            raise InvalidInputError.single("max_entries", "ge", "must be at least 1")
        if not self.gc_time > 0:
            raise InvalidInputError.single("gc_time", "gt", "must be a number of seconds > 0")

    async def fetch(
        self, key: Key, fetcher: Callable[[], Awaitable[T]], *, stale_time: float
    ) -> CacheEntry[T]:
        loop = asyncio.get_running_loop()
        with self._lock:
            slot = self._touch(key, create=True)
            assert slot is not None
            entry = slot.entry
            fresh = entry is not None and self.clock() - entry.fetched_at < stale_time
            if entry is not None and fresh and not slot.stale and not slot.failed:
                self.stats.hits += 1
                return entry
            flight = slot.inflight
            start = flight is None or not flight.joinable()
            if start:
                self.stats.fetches += 1
                flight = slot.inflight = _Flight(loop)
            else:
                self.stats.joined += 1
            generation = slot.generation
            self._collect()
        assert flight is not None
        if start:
            # The fetch runs as its own task: a caller that is cancelled (its tab closed) does
            # not cancel the request the other callers are waiting on.
            task = loop.create_task(self._run_fetch(slot, flight, fetcher, generation))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        waiter = asyncio.wrap_future(flight.done)
        # Mark the outcome retrieved even if every caller was cancelled meanwhile.
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
        return await asyncio.shield(waiter)

    async def _run_fetch(
        self, slot: _Slot, flight: _Flight, fetcher: Callable[[], Awaitable[Any]], generation: int
    ) -> None:
        try:
            data = await fetcher()
        except asyncio.CancelledError:
            self._settle(slot, flight, failed=True)
            flight.done.cancel()
            raise
        except Exception as exc:
            self._settle(slot, flight, failed=True)
            flight.done.set_exception(exc)
            return
        entry = CacheEntry(data=data, updated_at=self.wall_clock(), fetched_at=self.clock())
        before = slot.entry
        stored = self._settle(slot, flight, failed=False, entry=entry, generation=generation)
        if stored and (before is None or before.data != data):
            # A refetch that brings the same data changes nothing a listener shows: announced,
            # it cost every open tab of the customer a state round trip per interval.
            self._listeners.notify(slot.key)
        flight.done.set_result(entry if stored else slot.entry or entry)  # see QueryStore.fetch

    def _settle(
        self,
        slot: _Slot,
        flight: _Flight,
        *,
        failed: bool,
        entry: CacheEntry[Any] | None = None,
        generation: int = -1,
    ) -> bool:
        """Record a fetch's outcome; True when its entry was stored."""
        with self._lock:
            if slot.inflight is flight:
                slot.inflight = None
            slot.failed = failed
            if entry is not None and slot.generation == generation:
                # Not invalidated while in flight: this is the freshest data there is.
                slot.entry, slot.stale = entry, False
                return True
            return False

    async def peek(self, key: Key) -> CacheEntry[Any] | None:
        with self._lock:
            slot = self._touch(key, create=False)
            return slot.entry if slot else None

    async def set_data(self, key: Key, update: Update, *, create: Create | None = None) -> None:
        with self._lock:
            slot = self._slots.get(key) if create is None else self._touch(key, create=True)
            if slot is None:
                return
            made = slot.entry is None
            entry = updated_entry(
                slot.entry, update, create, clock=self.clock, wall_clock=self.wall_clock
            )
            if entry is None:
                return
            slot.entry = entry
            if made:
                self._collect()
        self._listeners.notify(key)

    async def on_change(self, listener: ChangeListener) -> Callable[[], None]:
        return self._listeners.add(listener)

    async def invalidate(self, prefix: Key) -> int:
        with self._lock:
            matched = 0
            for slot in self._index.under(prefix):
                slot.stale = True
                slot.generation += 1
                slot.inflight = None
                matched += 1
            return matched

    async def size(self, prefix: Key = ()) -> int:
        with self._lock:
            return len(self._slots) if not prefix else sum(1 for _ in self._index.under(prefix))

    def __len__(self) -> int:
        return len(self._slots)

    async def clear(self) -> None:
        self.forget_all()

    def forget_all(self) -> None:
        """:meth:`clear` for code outside a coroutine (``configure()``): nothing here awaits."""
        with self._lock:
            self._slots.clear()
            self._index.clear()

    async def aclose(self) -> None:
        """Nothing to release but fetches still running on this loop (they are cancelled)."""
        loop = asyncio.get_running_loop()
        mine = [t for t in self._tasks if t.get_loop() is loop and not t.done()]
        for task in mine:
            task.cancel()
        await asyncio.gather(*mine, return_exceptions=True)

    def _touch(self, key: Key, *, create: bool) -> _Slot | None:
        """The key's slot, now the most recently used (created when ``create``)."""
        slot = self._slots.get(key)
        if slot is None:
            if not create:
                return None
            slot = self._slots[key] = _Slot(key)
            self._index.add(slot)
        else:
            self._slots.move_to_end(key)
        slot.used_at = self.clock()
        return slot

    def _collect(self) -> None:
        """Drop unobserved keys (unread for ``gc_time``), then the least recently used ones
        past ``max_entries``. Both walk from the old end, so each costs the keys it drops.
        A key with a fetch in flight is kept (its callers are waiting on it)."""
        horizon = self.clock() - self.gc_time
        skipped = 0
        while self._slots and skipped < len(self._slots):
            slot = next(iter(self._slots.values()))
            if slot.used_at > horizon and len(self._slots) <= self.max_entries:
                return
            if slot.inflight is not None:
                self._slots.move_to_end(slot.key)
                skipped += 1
                continue
            del self._slots[slot.key]
            self._index.remove(slot.key)
            self.stats.evicted += 1


QueryCache = MemoryQueryStore
"""The name of :class:`MemoryQueryStore` before the store had a seam."""
