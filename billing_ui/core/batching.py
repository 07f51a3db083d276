"""Concurrent tracks of many callers (many tabs) sent as one batch request.

When the billing API is slower than the browsers, tracks pile up. Sent one request each, a
flood of N tracks costs N round trips through a bounded pool; sent as batches, it costs a few
(the local server records 1,000 events per ``/v1/usage/track-batch`` request in one
transaction). :class:`TrackBatcher` has the ``track_usage`` signature of the async client and
sends *opportunistically*: a track goes out at once, alone, through the ordinary
``/v1/usage/track`` while fewer than ``max_in_flight`` sends are running — so at low load
nothing changes, not even the endpoint — and tracks that arrive while that many are running
wait and leave together in the next batch (up to the backend's ``max_batch_size``).

Every event keeps its own idempotency key, so a retried batch never counts an event twice. A
refused event of a batch (a quota, an unknown customer) is sent once more on its own, with the
same key: nothing was recorded for it, and its caller then gets exactly the error the ordinary
endpoint gives. A backend without the batch endpoint (a hosted BillingOS answers 404/405)
turns batching off for good after the first try; those events are sent one by one.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from billing_ui.core import _constants as C
from billing_ui.core._base_client import own_replay, track_request
from billing_ui.core.client import AsyncBillingClient
from billing_ui.core.errors import APIStatusError, PoolExhaustedError
from billing_ui.core.models import TrackUsageRequest, TrackUsageResult

__all__ = ["TrackBatcher", "batcher_for"]

DEFAULT_MAX_IN_FLIGHT = 4
DEFAULT_MAX_WAITING = 10 * C.MAX_BATCH_SIZE
"""Tracks that may wait for the next batch; beyond, a track fails at once (the bulkhead)."""
log = logging.getLogger("billing_ui.core")


@dataclass(eq=False)
class _Pending:
    request: TrackUsageRequest
    generated_key: bool
    done: asyncio.Future[TrackUsageResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class TrackBatcher:
    """``track_usage`` for many concurrent callers over one :class:`AsyncBillingClient`."""

    def __init__(
        self,
        client: AsyncBillingClient,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_waiting: int = DEFAULT_MAX_WAITING,
    ) -> None:
        if max_in_flight < 1 or max_waiting < 0:
            raise ValueError("max_in_flight must be >= 1 and max_waiting >= 0")
        self.client = client
        self.max_in_flight = max_in_flight
        self.max_waiting = max_waiting
        self.batching = True
        """False once the backend turned out to have no batch endpoint."""
        self.requests_sent = 0
        self.batches_sent = 0
        self._waiting: list[_Pending] = []
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def track_usage(
        self,
        *,
        customer_id: str,
        feature_key: str,
        quantity: float,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TrackUsageResult:
        """As :meth:`AsyncBillingClient.track_usage` (same validation, errors and result)."""
        if not self.batching:
            return await self.client.track_usage(
                customer_id=customer_id,
                feature_key=feature_key,
                quantity=quantity,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
        request, generated = track_request(
            customer_id, feature_key, quantity, metadata, idempotency_key
        )
        if len(self._waiting) >= self.max_waiting:
            raise PoolExhaustedError(request_sent=False)
        pending = _Pending(request, generated)
        self._waiting.append(pending)
        self._dispatch()
        try:
            return await asyncio.shield(pending.done)
        except asyncio.CancelledError:
            if pending in self._waiting:  # not sent yet: it never will be
                self._waiting.remove(pending)
            raise

    def _dispatch(self) -> None:
        while self._waiting and self._in_flight < self.max_in_flight:
            size = self.client.backend.max_batch_size if self.batching else 1
            group, self._waiting = self._waiting[:size], self._waiting[size:]
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._send(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, group: list[_Pending]) -> None:
        try:
            if len(group) == 1:
                await self._send_alone(group[0])
            else:
                await self._send_batch(group)
        finally:
            self._in_flight -= 1
            self._dispatch()

    async def _send_alone(self, pending: _Pending) -> None:
        request = pending.request
        self.requests_sent += 1
        try:
            result = await self.client.track_usage(
                customer_id=request.customer_id,
                feature_key=request.feature_key,
                quantity=request.quantity,
                metadata=request.metadata,
                idempotency_key=request.idempotency_key,
            )
        except Exception as exc:
            _settle(pending, exc)
        else:
            _settle(pending, own_replay(result, pending.generated_key))

    async def _send_batch(self, group: list[_Pending]) -> None:
        self.requests_sent += 1
        self.batches_sent += 1
        try:
            items = await self.client.track_usage_batch([p.request for p in group])
        except APIStatusError as exc:
            if exc.status_code in (404, 405):
                log.info("the billing API has no batch endpoint: tracks go one by one")
                self.batching = False
                await asyncio.gather(*(self._send_alone(p) for p in group))
                return
            for pending in group:
                _settle(pending, exc)
            return
        except Exception as exc:
            for pending in group:
                _settle(pending, exc)
            return
        refused = []
        for item in items:
            pending = group[item.index]
            if item.result is not None:
                _settle(pending, own_replay(item.result, pending.generated_key))
            else:
                refused.append(pending)
        # nothing was recorded for a refused event: once more alone, for its exact error
        await asyncio.gather(*(self._send_alone(p) for p in refused))


def _settle(pending: _Pending, outcome: TrackUsageResult | BaseException) -> None:
    if pending.done.done():
        return
    if isinstance(outcome, BaseException):
        pending.done.set_exception(outcome)
        pending.done.exception()  # retrieved: a caller that left raises no "never retrieved"
    else:
        pending.done.set_result(outcome)


_BATCHERS: weakref.WeakKeyDictionary[AsyncBillingClient, TrackBatcher] = weakref.WeakKeyDictionary()


def batcher_for(client: AsyncBillingClient) -> TrackBatcher:
    """The one batcher of ``client`` (its tracks must share one waiting line)."""
    batcher = _BATCHERS.get(client)
    if batcher is None:
        batcher = _BATCHERS[client] = TrackBatcher(client)
    return batcher
