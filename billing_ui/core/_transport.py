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

The gate narrows the window but cannot close it: between the pool handing a request a fresh
connection and the request starting to use it, httpcore still passes a few awaits, and a
cancellation landing on one of them leaves that connection ``NEW`` and held by nobody (a
cancellation after exactly the right number of loop turns does it every time; in a flood of
cancellations, about one outage in thirty). So when a send through the gate ends in any
exception, :func:`reap_stuck_connections` drops from the pool every connection that is neither
idle nor held by a request in it: such a connection can never serve again. That check costs
nothing on the success path.

The sync client needs no gate: a thread cannot be cancelled while it waits in the pool.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from typing import Any

import httpx

from billing_ui.core import _constants as C
from billing_ui.core.bulkhead import Bulkhead, BulkheadFull

__all__ = ["SendGate", "gate_for", "pool_size", "reap_stuck_connections", "send_gated"]

log = logging.getLogger("billing_ui.core")


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
        except BaseException:
            stuck = reap_stuck_connections(http)
            if stuck:
                log.info("dropped %d stuck billing connection(s) (httpcore#1093)", len(stuck))
                for connection in stuck:
                    with contextlib.suppress(Exception):
                        await connection.aclose()
            raise
        finally:
            self.release()


def reap_stuck_connections(http: httpx.AsyncClient) -> list[Any]:
    """Remove from ``http``'s pool the connections that are neither idle nor held by a request
    in the pool, and return them (to be closed by the caller).

    Such a connection is what httpcore#1093 leaves behind (see the module docstring): ``NEW``
    or ``CONNECTING`` with its request gone, never idle, never expired, never handed out again.
    Every connection in use is held by its request (``AsyncPoolRequest.connection``) until its
    response is closed, and the check runs without an await, so a connection another request
    is still opening is never taken. A client with another transport has nothing to reap.
    """
    pool = getattr(getattr(http, "_transport", None), "_pool", None)
    connections = getattr(pool, "_connections", None)
    requests = getattr(pool, "_requests", None)
    if not isinstance(connections, list) or not isinstance(requests, list):
        return []
    held = {id(r.connection) for r in requests if getattr(r, "connection", None) is not None}
    stuck = [c for c in connections if id(c) not in held and not c.is_idle() and not c.is_closed()]
    for connection in stuck:
        connections.remove(connection)
    return stuck


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
