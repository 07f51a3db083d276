"""A bulkhead: at most ``limit`` callers inside, at most ``max_waiting`` waiting for a slot.

In front of the httpx pool (:class:`billing_ui.core._transport.SendGate`), so that no request
ever waits inside httpcore and a flood queues in a line of known length. Waiting is bounded in
length (``max_waiting``: beyond it a caller is refused at once — backpressure, not an
ever-growing queue) and in time (``timeout``). ``asyncio.Semaphore`` underneath: a caller
cancelled while it waits leaves nothing behind.

(Measured and rejected: the same bulkhead in front of the Reflex track handler, 16 at a time.
It serialised each tab's tracks, so every track refetched on its own instead of once per
burst: 1,599 of 4,000 tracks acknowledged within 300 s instead of all 4,000 in 21 s.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["Bulkhead", "BulkheadFull", "FairGate"]


class BulkheadFull(Exception):
    """No slot: the waiting line was full, or no slot came free in time."""


class Bulkhead:
    def __init__(self, limit: int, *, max_waiting: int) -> None:
        if limit < 1 or max_waiting < 0:
            raise ValueError("a bulkhead needs limit >= 1 and max_waiting >= 0")
        self.limit = limit
        self.max_waiting = max_waiting
        self._slots = asyncio.Semaphore(limit)
        self._inside = 0
        self._waiting = 0

    @property
    def in_flight(self) -> int:
        """Callers inside now."""
        return self._inside

    @property
    def waiting(self) -> int:
        """Callers waiting for a slot now."""
        return self._waiting

    @asynccontextmanager
    async def slot(self, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold a slot for the block (see :meth:`acquire`)."""
        await self.acquire(timeout)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, timeout: float | None = None) -> None:
        """Take a slot; :class:`BulkheadFull` when none is free within ``timeout`` seconds
        (``None``: as long as it takes), or at once when ``max_waiting`` callers already wait.
        Give it back with :meth:`release`."""
        if not self._slots.locked():
            await self._slots.acquire()  # a free slot: returns without suspending
        else:
            if self._waiting >= self.max_waiting:
                raise BulkheadFull(f"{self._waiting} callers already wait for one of {self.limit}")
            self._waiting += 1
            try:
                async with asyncio.timeout(timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise BulkheadFull(
                    f"no slot of {self.limit} came free within {timeout} s"
                ) from None
            finally:
                self._waiting -= 1
        self._inside += 1

    def release(self) -> None:
        self._inside -= 1
        self._slots.release()


class FairGate:
    """At most ``limit`` holders at once; the waiters are admitted round-robin by ``key`` (a
    browser tab), so a tab that sent twenty calls at once waits its turn behind a tab that sent
    one, instead of holding twenty slots first. The caller bounds each key's line (see
    :meth:`waiting_for`). A waiter cancelled while it waits leaves
    nothing behind; one cancelled just after being admitted hands its slot on."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a gate needs limit >= 1")
        self.limit = limit
        self.inside = 0
        self._lines: dict[str, deque[asyncio.Future[None]]] = {}

    @property
    def waiting(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def waiting_for(self, key: str) -> int:
        """Callers of ``key`` waiting now."""
        return len(self._lines.get(key, ()))

    def enter(self, key: str) -> asyncio.Future[None] | None:
        """A slot now (None: the caller holds it), or the caller's place in ``key``'s line: a
        future that is done once the slot is the caller's (give it back with
        :meth:`release`). Nothing waits here, so a caller can leave its work in the line as
        data, to be started when admitted, instead of a suspended task per waiter."""
        if self.inside < self.limit and not self._lines:
            self.inside += 1
            return None
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lines.setdefault(key, deque()).append(admitted)
        return admitted

    async def acquire(self, key: str) -> None:
        admitted = self.enter(key)
        if admitted is None:
            return
        try:
            await admitted
        except asyncio.CancelledError:
            if admitted.done() and not admitted.cancelled():
                self.release()  # admitted, then cancelled: the slot goes to the next one
            else:
                line = self._lines.get(key)
                if line is not None and admitted in line:
                    line.remove(admitted)
                    if not line:
                        del self._lines[key]
            raise

    def release(self) -> None:
        """Give the slot to the first waiter of the next key in turn, or free it."""
        while self._lines:
            key = next(iter(self._lines))
            line = self._lines.pop(key)
            admitted = line.popleft()
            if line:
                self._lines[key] = line  # to the back of the rotation
            if not admitted.done():
                admitted.set_result(None)  # the slot passes on: ``inside`` is unchanged
                return
        self.inside -= 1
