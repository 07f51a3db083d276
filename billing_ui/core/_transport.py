"""The async client's way into httpx: a gate that keeps every wait out of httpcore's pool.

Why: httpcore 1.0.9 (encode/httpcore#1093, open). A request cancelled while it waits in
``AsyncConnectionPool`` for a free connection can be cancelled right after the pool handed it a
*new* connection; the request leaves, the connection stays, in ``CONNECTING`` state, forever:
never idle, never closed, never reused. Reflex cancels a tab's background tasks when it
disconnects, and timeouts cancel too, so a burst or a short outage delivers exactly those
cancellations. Once every slot is stuck, every call waits for the pool timeout and fails until
the process restarts (``tests/client/test_pool_poisoning.py``; options measured by
``bench/pool_recovery.py``).

The cure here does not depend on httpcore's fix: :class:`SendGate` admits at most as many
requests into the ``httpx.AsyncClient`` as its pool has connections. A request inside the pool
then always finds a free connection, or room for a new one, and is given it on the spot — it
never waits inside httpcore, so no cancellation can land there. The waiting happens on the
gate's ``asyncio.Semaphore`` instead, which cancellation leaves intact. The gate is also the
bulkhead in front of the billing API: a bounded number of waiters (``max_waiting``), each for
at most the request's pool timeout; beyond that a call fails at once with ``httpx.PoolTimeout``
(the client turns it into :class:`~billing_ui.core.errors.PoolExhaustedError`) instead of
queueing without bound while the API is slower than the browsers.

The sync client needs no gate: a thread cannot be cancelled while it waits in the pool.
"""

from __future__ import annotations

import weakref

import httpx

from billing_ui.core import _constants as C
from billing_ui.core.bulkhead import Bulkhead, BulkheadFull

__all__ = ["SendGate", "gate_for", "pool_size", "send_gated"]


def pool_size(http: httpx.AsyncClient) -> int:
    """How many connections ``http``'s pool may open (``Limits.max_connections``).

    Read from httpx's own transport; a client with another transport (or no limit) gets the
    library's default, which is then the most requests the gate lets through at once.
    """
    pool = getattr(getattr(http, "_transport", None), "_pool", None)
    size = getattr(pool, "_max_connections", None)
    return size if isinstance(size, int) and size > 0 else C.DEFAULT_MAX_CONNECTIONS


class SendGate(Bulkhead):
    """At most ``limit`` requests inside httpx at once; at most ``max_waiting`` waiting, each
    for at most the request's pool timeout.

    ``limit`` must not exceed the pool's ``max_connections`` (:func:`pool_size`), or requests
    would wait inside httpcore again.
    """

    def __init__(self, limit: int, *, max_waiting: int = C.DEFAULT_MAX_WAITING) -> None:
        super().__init__(limit, max_waiting=max_waiting)

    async def send(self, http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        """``http.send(request)`` once a slot is free. Raises ``httpx.PoolTimeout`` when none
        frees up within the request's pool timeout, or at once when ``max_waiting`` callers
        already wait."""
        timeout = request.extensions.get("timeout", {}).get("pool")
        try:
            await self.acquire(timeout)
        except BulkheadFull as exc:
            raise httpx.PoolTimeout(f"no free billing connection: {exc}", request=request) from None
        try:
            return await http.send(request)
        finally:
            self.release()


_GATES: weakref.WeakKeyDictionary[httpx.AsyncClient, SendGate] = weakref.WeakKeyDictionary()


def gate_for(http: httpx.AsyncClient) -> SendGate:
    """The gate of ``http``'s pool: one per ``httpx.AsyncClient``, shared by every billing
    client that sends through it (copies made by ``with_options``, or clients given the same
    ``http_client``), so together they never exceed the pool."""
    gate = _GATES.get(http)
    if gate is None:
        gate = _GATES[http] = SendGate(pool_size(http))
    return gate


async def send_gated(http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send ``request`` through ``http`` behind its pool's gate."""
    return await gate_for(http).send(http, request)
