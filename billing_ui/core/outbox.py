"""A durable outbox for tracks: usage that could not reach the billing API is kept, not lost.

A track that fails for a reason that may pass later (no answer, a timeout, a 5xx, a 429 after
the client's own retries, or this app's own pool being busy) is written to a durable store
with its idempotency key, and delivered later in batches with backoff. The key is fixed before
the first attempt and kept in the outbox, so even when that first attempt did reach the API
(its answer was lost), the billing side counts the event exactly once.

What the outbox never takes:

* final refusals — quota exceeded, invalid input, a wrong key, an unknown customer: sending
  them again cannot succeed (:func:`is_retryable_failure`);
* *fail-closed* features (by default ``seats``): their hard limit can only be checked by the
  billing API, so a seat must be refused when the API cannot say yes. The app sets the rule
  per feature (``Outbox(fail_closed=...)``).

It is bounded: ``max_size`` pending entries, beyond which :class:`OutboxFullError` says so;
entries older than ``max_age`` are reported (:class:`OutboxStats.overdue`, a warning in the
log) and kept — nothing is ever dropped silently. Entries the API refuses on delivery for a
final reason are kept as *failed* (:meth:`OutboxStore.failures`), counted, never retried.

Delivery is safe with several workers on one store: :meth:`OutboxStore.claim` leases entries
(a worker that dies leaves them to be claimed again when the lease ends), and a redelivered
entry carries its original key. Stores: :class:`~billing_ui.core.outbox_sqlite.SQLiteOutboxStore`
(the default: a local file, WAL, ``synchronous=FULL``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from billing_ui.core import metrics
from billing_ui.core._retry import backoff_delay
from billing_ui.core.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    BillingError,
    InternalServerError,
    PoolExhaustedError,
    RateLimitError,
)
from billing_ui.core.models import TrackUsageResult

if TYPE_CHECKING:
    from billing_ui.core.client import AsyncBillingClient, BillingClient

__all__ = [
    "DeliveryReport",
    "Outbox",
    "OutboxFullError",
    "OutboxStats",
    "OutboxStore",
    "QueuedTrack",
    "Settlement",
    "is_retryable_failure",
]

log = logging.getLogger("billing_ui.outbox")

DEFAULT_MAX_SIZE = 100_000
DEFAULT_MAX_AGE_S = 3600.0
"""An hour: well inside the 24 hours for which the billing API remembers an idempotency key —
past that, a redelivery of an event whose first answer was lost could count twice."""
DEFAULT_LEASE_S = 60.0
DEFAULT_FAIL_CLOSED = frozenset({"seats"})
MIN_BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0


def is_retryable_failure(exc: BaseException) -> bool:
    """Whether a failed track may pass later, so that it belongs in the outbox: no answer or a
    timeout, a 408, a 429, a 5xx (all after the client's own retries), or the app's own pool
    busy. Everything else is final: quota exceeded, invalid input, authentication, an unknown
    customer or feature."""
    if isinstance(exc, APIConnectionError | PoolExhaustedError | RateLimitError):
        return True
    if isinstance(exc, InternalServerError):
        return True
    return isinstance(exc, APIStatusError) and exc.status_code == 408


class OutboxFullError(BillingError):
    """The outbox holds ``max_size`` pending tracks: this one was not stored. The billing API
    has been unreachable for long enough that the app must stop (or slow down) tracking."""

    def __init__(self, max_size: int) -> None:
        super().__init__(
            f"The track outbox is full ({max_size} pending tracks): the billing API has been "
            "unreachable for a while. Check it, or raise Outbox(max_size=...)."
        )
        self.max_size = max_size


@dataclass(frozen=True, slots=True)
class QueuedTrack:
    """One track in the outbox. ``idempotency_key`` is the one its first attempt used."""

    idempotency_key: str
    customer_id: str
    feature_key: str
    quantity: float
    metadata: Mapping[str, Any] | None = None
    created_at: float = 0.0
    attempts: int = 0
    last_error: str = ""

    COLUMNS: ClassVar[str] = (
        "idempotency_key, customer_id, feature_key, quantity, metadata, created_at, attempts, "
        "last_error"
    )
    """The columns :meth:`from_row` reads, in order (the stores' SELECT lists)."""

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> QueuedTrack:
        """An entry from a store's row; ``metadata`` as JSON text or already decoded."""
        key, customer, feature, quantity, metadata, created, attempts, error = row
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        return cls(
            key,
            customer,
            feature,
            float(quantity),
            metadata,
            created_at=float(created),
            attempts=int(attempts),
            last_error=error,
        )

    def event(self) -> dict[str, Any]:
        """The event as a batch takes it (a plain dict: the batch validates it once)."""
        return {"customer_id": self.customer_id, **self.track_arguments()}

    def track_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``client.track_usage`` after the customer."""
        return {
            "feature_key": self.feature_key,
            "quantity": self.quantity,
            "metadata": self.metadata,
            "idempotency_key": self.idempotency_key,
        }

    def metadata_json(self) -> str | None:
        return None if self.metadata is None else json.dumps(self.metadata, sort_keys=True)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What an operator graphs: ``depth`` pending tracks, the oldest one's age in seconds,
    ``overdue`` pending tracks older than ``max_age``, ``failed`` tracks the API refused for
    good (kept), and the lifetime counts ``delivered`` and ``failed_total``."""

    depth: int
    oldest_age_s: float
    overdue: int
    failed: int
    delivered: int
    failed_total: int


@dataclass(slots=True)
class Settlement:
    """What happened to claimed entries (by idempotency key): delivered, refused for good
    (with the reason), or to be tried again at a time (with the reason)."""

    delivered: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    retry: list[tuple[str, float, str]] = field(default_factory=list)


class OutboxStore(Protocol):
    """Where the outbox keeps its entries (SQLite file by default; PostgreSQL when the app is
    scaled out). Every method is one transaction."""

    def add(self, entries: Sequence[QueuedTrack], max_size: int) -> int:
        """Store entries whose key is new (a known key is ignored: the same event); raises
        :class:`OutboxFullError` when the pending ones would exceed ``max_size``. Returns how
        many were added."""
        ...

    def claim(self, limit: int, now: float, lease_s: float) -> list[QueuedTrack]:
        """Up to ``limit`` pending entries due at ``now``, oldest first, leased to the caller
        until ``now + lease_s`` (no other claim returns them before then)."""
        ...

    def settle(self, settlement: Settlement) -> None: ...

    def wake(self, now: float) -> int:
        """Make every entry that waits out a backoff due at ``now`` (not the ones leased to a
        worker: a claim clears ``last_error``, a retry sets it). Returns how many."""
        ...

    def stats(self, now: float, max_age_s: float) -> OutboxStats: ...

    def pending_by_feature(self, customer_id: str) -> dict[str, float]:
        """The quantity waiting (not refused) per feature of one customer."""
        ...

    def failures(self, limit: int = 100) -> list[QueuedTrack]:
        """Entries the API refused for good, oldest first (``last_error`` says why)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """One delivery pass: how many entries were claimed, delivered, refused for good, and put
    back for later (with the last error)."""

    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    retried: int = 0
    error: str = ""


class Outbox:
    """The policy (what is queued), the bounds, and delivery over an :class:`OutboxStore`.

    ``fail_closed``: features never queued (a collection of keys, or a predicate over the key).
    ``batches``: send ``/v1/usage/track-batch`` (a local-server extension); set ``False`` for a
    backend without it — the outbox also falls back by itself when the batch endpoint is
    missing (404/405/501).
    """

    def __init__(
        self,
        store: OutboxStore,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        lease_s: float = DEFAULT_LEASE_S,
        fail_closed: Collection[str] | Callable[[str], bool] = DEFAULT_FAIL_CLOSED,
        batches: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.store = store
        self.max_size = max_size
        self.max_age_s = max_age_s
        self.lease_s = lease_s
        self._fail_closed = fail_closed
        self.batches = batches
        self.clock = clock
        self._last_overdue_warning = 0.0
        self._delivered_listeners: list[Callable[[frozenset[str]], None]] = []
        self.backing_off = False
        """Whether the last delivery pass put entries back for later (the API was failing):
        until something shows the API answers again (:meth:`probe`, :meth:`resume`), they
        wait out their own backoff, up to ``MAX_BACKOFF_S``."""

    def on_delivered(self, listener: Callable[[frozenset[str]], None]) -> None:
        """Call ``listener(customer ids)`` after each delivery pass that delivered tracks of
        theirs (in the delivering thread): how cached usage is dropped so pages converge to
        the server's numbers."""
        self._delivered_listeners.append(listener)

    # -- the policy
    def fails_closed(self, feature_key: str) -> bool:
        """Whether ``feature_key`` is refused, not queued, when the API cannot be reached."""
        rule = self._fail_closed
        return rule(feature_key) if callable(rule) else feature_key in rule

    def should_queue(self, feature_key: str, exc: BaseException) -> bool:
        return is_retryable_failure(exc) and not self.fails_closed(feature_key)

    # -- writing
    def put(
        self,
        customer_id: str,
        feature_key: str,
        quantity: float,
        *,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str,
        error: str = "",
    ) -> QueuedTrack:
        """Store one (already validated) track durably; raises :class:`OutboxFullError`."""
        entry = QueuedTrack(
            idempotency_key,
            customer_id,
            feature_key,
            quantity,
            metadata,
            created_at=self.clock(),
            last_error=error,
        )
        self.store.add([entry], self.max_size)
        metrics.current().tracks.labels("queued").inc()
        return entry

    def track_or_queue(
        self,
        client: BillingClient,
        customer_id: str,
        feature_key: str,
        quantity: float,
        *,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TrackUsageResult | QueuedTrack:
        """Track now; if that fails for a retryable reason (and the feature does not fail
        closed), queue it with the same key and return the :class:`QueuedTrack`. Final
        failures are raised."""
        entry = QueuedTrack(
            idempotency_key or str(uuid.uuid4()), customer_id, feature_key, quantity, metadata
        )
        try:
            return client.track_usage(customer_id, **entry.track_arguments())
        except APIError as exc:
            return self._queue_or_raise(entry, exc)

    async def atrack_or_queue(
        self,
        client: AsyncBillingClient,
        customer_id: str,
        feature_key: str,
        quantity: float,
        *,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TrackUsageResult | QueuedTrack:
        """:meth:`track_or_queue` with an async client (the store write runs in a thread)."""
        import asyncio

        entry = QueuedTrack(
            idempotency_key or str(uuid.uuid4()), customer_id, feature_key, quantity, metadata
        )
        try:
            return await client.track_usage(customer_id, **entry.track_arguments())
        except APIError as exc:
            return await asyncio.to_thread(self._queue_or_raise, entry, exc)

    def _queue_or_raise(self, entry: QueuedTrack, exc: APIError) -> QueuedTrack:
        if not self.should_queue(entry.feature_key, exc):
            raise exc
        return self.put(
            entry.customer_id,
            entry.feature_key,
            entry.quantity,
            metadata=entry.metadata,
            idempotency_key=entry.idempotency_key,
            error=_reason(exc),
        )

    # -- reading
    def stats(self) -> OutboxStats:
        return self.store.stats(self.clock(), self.max_age_s)

    def pending_for(self, customer_id: str) -> dict[str, float]:
        """What ``customer_id`` has waiting, per feature: the meters add it, marked pending."""
        return self.store.pending_by_feature(customer_id)

    # -- delivery
    def deliver(self, client: BillingClient, limit: int = 100) -> DeliveryReport:
        """Claim up to ``limit`` due entries and send them (one batch request, or one request
        each against a backend without batches). Delivered entries leave the outbox; refused
        ones are kept as failed; the rest are put back with backoff."""
        now = self.clock()
        entries = self.store.claim(limit, now, self.lease_s)
        if not entries:
            return DeliveryReport()
        settlement = (
            self._send_batch(client, entries) if self.batches else None
        ) or self._send_each(client, entries)
        self.store.settle(settlement)
        self.backing_off = bool(settlement.retry)
        if settlement.delivered and not settlement.retry:
            # The API answers again: the backlog goes now, not at each entry's own retry time
            # (after a long outage the backoffs reach minutes; the drain took the outage's
            # length again).
            self.store.wake(now)
        self._announce(entries, settlement)
        self._warn_if_overdue(now)
        error = settlement.retry[0][2] if settlement.retry else ""
        return DeliveryReport(
            claimed=len(entries),
            delivered=len(settlement.delivered),
            failed=len(settlement.failed),
            retried=len(settlement.retry),
            error=error,
        )

    def resume(self) -> int:
        """The API answers again (a probe, or a call of the app's that went through): make the
        entries that back off due now, so the next pass sends them. Returns how many."""
        self.backing_off = False
        return self.store.wake(self.clock())

    def probe(self, client: BillingClient) -> bool:
        """Ask the API whether it answers (``GET /health``, cheap, no body); when it does, even
        with a refusal (a backend without that endpoint answers 404), :meth:`resume`. Whether
        it answered. Without this, with no new tracks arriving, the first delivery after an
        outage waited for the oldest entry's own backoff (up to ``MAX_BACKOFF_S``)."""
        try:
            client.health()
        except APIError as exc:
            if is_retryable_failure(exc):
                return False  # still down
        self.resume()
        return True

    def _announce(self, entries: list[QueuedTrack], settlement: Settlement) -> None:
        if not settlement.delivered or not self._delivered_listeners:
            return
        delivered = set(settlement.delivered)
        customers = frozenset(e.customer_id for e in entries if e.idempotency_key in delivered)
        for listener in self._delivered_listeners:
            try:
                listener(customers)
            except Exception:  # a listener's failure must not undo a delivery
                log.exception("an outbox delivery listener failed")

    def _send_batch(self, client: BillingClient, entries: list[QueuedTrack]) -> Settlement | None:
        """One batch request; ``None`` when the backend has no batch endpoint (then the
        outbox sends one by one from now on)."""
        try:
            items = client.track_usage_batch([e.event() for e in entries])
        except NotImplementedError:
            self.batches = False
            return None
        except APIStatusError as exc:
            if exc.status_code in (404, 405, 501):
                log.info("no batch endpoint (%s): sending queued tracks one by one", exc)
                self.batches = False
                return None
            return self._later(entries, exc)
        except APIError as exc:
            return self._later(entries, exc)
        out = Settlement()
        answered = {item.index: item for item in items}
        for index, entry in enumerate(entries):
            item = answered.get(index)
            if item is None:
                out.retry.append(self._retry(entry, "no answer for this event in the batch"))
            elif item.error is not None:
                out.failed.append(
                    (entry.idempotency_key, f"{item.error.code}: {item.error.message}")
                )
            else:
                out.delivered.append(entry.idempotency_key)
        return out

    def _send_each(self, client: BillingClient, entries: list[QueuedTrack]) -> Settlement:
        out = Settlement()
        for position, entry in enumerate(entries):
            try:
                client.track_usage(entry.customer_id, **entry.track_arguments())
            except APIError as exc:
                if is_retryable_failure(exc):
                    # The API is struggling: the rest wait too, without a request each.
                    later = self._later(entries[position:], exc)
                    out.retry.extend(later.retry)
                    return out
                out.failed.append((entry.idempotency_key, _reason(exc)))
            else:
                out.delivered.append(entry.idempotency_key)
        return out

    def _later(self, entries: Sequence[QueuedTrack], exc: BaseException) -> Settlement:
        """Every entry back with backoff. A non-retryable failure of the whole request (a
        wrong secret key, say) also keeps them: the events are valid, the set-up is not."""
        if not is_retryable_failure(exc):
            log.error("queued tracks could not be sent, kept for later: %s", exc)
        reason = _reason(exc)
        return Settlement(retry=[self._retry(e, reason) for e in entries])

    def _retry(self, entry: QueuedTrack, reason: str) -> tuple[str, float, str]:
        # ``attempts`` already counts this delivery (the claim added it).
        delay = backoff_delay(entry.attempts - 1, initial=MIN_BACKOFF_S, maximum=MAX_BACKOFF_S)
        return entry.idempotency_key, self.clock() + delay, reason

    def _warn_if_overdue(self, now: float) -> None:
        if now - self._last_overdue_warning < 60:
            return
        stats = self.store.stats(now, self.max_age_s)
        if stats.overdue:
            self._last_overdue_warning = now
            log.warning(
                "%d queued tracks are older than %.0f s (oldest %.0f s); they are kept and "
                "retried — check the billing API",
                stats.overdue,
                self.max_age_s,
                stats.oldest_age_s,
            )


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
