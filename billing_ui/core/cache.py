"""A small query cache with single-flight fetches, in the manner of TanStack Query.

Why it exists: every open tab of a customer polls its usage every 30 seconds. Without a shared
cache, 1,000 tabs of 10 customers make 1,000 upstream requests per interval; with it they make
at most 10. A query is identified by its key (a tuple such as ``("usage-metrics", customer)``);
identical keys share one in-flight request and one cache entry; ``stale_time`` decides when data
is fetched again; a successful mutation invalidates the keys it affects (by prefix).

Framework-agnostic and in-process (one event loop). Scale-out across workers would put the
entries in Redis behind the same four methods: :meth:`fetch`, :meth:`peek`, :meth:`set_data`,
:meth:`invalidate`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Key = tuple[Hashable, ...]


@dataclass(frozen=True, slots=True)
class CacheEntry(Generic[T]):
    """Data and when it was fetched (``updated_at``: wall clock, for display)."""

    data: T
    updated_at: float
    fetched_at: float  # monotonic, for staleness


@dataclass(slots=True)
class CacheStats:
    """Counters for tests and benchmarks: how often the upstream was really called."""

    fetches: int = 0
    hits: int = 0
    joined: int = 0


@dataclass(slots=True)
class _Slot:
    entry: CacheEntry[Any] | None = None
    inflight: asyncio.Future[Any] | None = None
    generation: int = 0
    stale: bool = False
    failed: bool = False
    """The last fetch failed: the entry, however young, is not served as fresh (an outage
    shows at once on every tab, not an interval later)."""


@dataclass
class QueryCache:
    """Cache keyed by query key; see the module docstring."""

    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    stats: CacheStats = field(default_factory=CacheStats)
    _slots: dict[Key, _Slot] = field(default_factory=dict, repr=False)

    async def fetch(
        self,
        key: Key,
        fetcher: Callable[[], Awaitable[T]],
        *,
        stale_time: float,
    ) -> CacheEntry[T]:
        """Fresh data for ``key``: cached if younger than ``stale_time`` and not invalidated,
        else one upstream call shared by every concurrent caller. An error reaches every
        waiting caller and leaves the previous entry in place (the UI keeps the last good data).
        """
        slot = self._slots.setdefault(key, _Slot())
        entry = slot.entry
        fresh = entry is not None and self.clock() - entry.fetched_at < stale_time
        if entry is not None and fresh and not slot.stale and not slot.failed:
            self.stats.hits += 1
            return entry
        if slot.inflight is None:
            self.stats.fetches += 1
            slot.inflight = asyncio.ensure_future(self._run_fetch(slot, fetcher, slot.generation))
            # Mark the outcome retrieved even if every caller was cancelled meanwhile.
            slot.inflight.add_done_callback(lambda t: t.cancelled() or t.exception())
        else:
            self.stats.joined += 1
        # The fetch runs as its own task: a caller that is cancelled (its tab closed) does not
        # cancel the request the other callers are waiting on.
        return await asyncio.shield(slot.inflight)

    async def _run_fetch(
        self, slot: _Slot, fetcher: Callable[[], Awaitable[T]], generation: int
    ) -> CacheEntry[T]:
        task = asyncio.current_task()
        try:
            data = await fetcher()
        except BaseException:
            slot.failed = True
            raise
        finally:
            if slot.inflight is task:
                slot.inflight = None
        entry = CacheEntry(data=data, updated_at=self.wall_clock(), fetched_at=self.clock())
        slot.failed = False
        if slot.generation == generation:
            # Not invalidated while in flight: this is the freshest data there is.
            slot.entry, slot.stale = entry, False
        return entry

    def peek(self, key: Key) -> CacheEntry[Any] | None:
        """The cached entry, fresh or not, without fetching."""
        slot = self._slots.get(key)
        return slot.entry if slot else None

    def set_data(self, key: Key, update: Callable[[Any], Any]) -> None:
        """Apply an optimistic update to cached data (``update(old) -> new``); the entry stays
        stale, so the next fetch still asks the upstream."""
        slot = self._slots.get(key)
        if slot and slot.entry is not None:
            slot.entry = CacheEntry(
                data=update(slot.entry.data),
                updated_at=self.wall_clock(),
                fetched_at=slot.entry.fetched_at,
            )

    def invalidate(self, prefix: Key) -> int:
        """Mark every key starting with ``prefix`` stale, and detach fetches in flight for
        them (their result may predate the change). Returns how many keys matched."""
        matched = 0
        for key, slot in self._slots.items():
            if key[: len(prefix)] == prefix:
                slot.stale = True
                slot.generation += 1
                slot.inflight = None
                matched += 1
        return matched

    def size(self, prefix: Key = ()) -> int:
        """How many keys starting with ``prefix`` the cache holds (its memory, for tests and
        benchmarks)."""
        return sum(1 for key in self._slots if key[: len(prefix)] == prefix)

    def clear(self) -> None:
        self._slots.clear()
