"""The port between the billing service and its database: what goes in, what comes out, and
the :class:`UsageStore` protocol that every adapter implements.

Two adapters implement it: :class:`~billing_ui.server.sqlite_store.SqliteStore` (the embedded
default: one file, no server) and :class:`~billing_ui.server.postgres_store.PostgresStore` (one
PostgreSQL database shared by any number of server processes). The service
(``service.py``) talks to this protocol only; routes and auth talk to the service only.

The guarantees every adapter gives, also between processes sharing one database:

* **Atomic idempotency.** A key is claimed by a unique constraint in the write transaction,
  never by look-then-insert; a replay within 24 h counts nothing.
* **Hard limits inside the write.** The period's usage is read and the limit checked in the
  transaction that adds the event, with concurrent writers of the same customer serialised
  (SQLite: one writer per file; PostgreSQL: a row lock on the customer), so concurrent tracks
  cannot pass a hard limit together.
* **Aggregates in the same transaction.** Each event updates its per-period aggregate and
  per-hour bucket in the transaction that inserts it; reads never scan raw events.
* **Exact quantities.** Integer millionths and integer microseconds (BIGINT) everywhere; an
  aggregate never passes :data:`MAX_CONSUMED_MICROS`, so no input can overflow a BIGINT.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple, Protocol, TypeVar

MAX_CONSUMED_MICROS: Final = 2**62
"""An aggregate never grows past this (4.6 trillion units): refused, never an overflow."""

POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")


class StoreError(RuntimeError):
    """The database could not be opened or is not a billing_ui database."""


class StoreBusyError(StoreError):
    """The database could not take the write in time (another process held the lock, or the
    server was unreachable); nothing was written, and the request can be retried."""


# --- what goes in and comes out ---------------------------------------------------------
class Subscription(NamedTuple):
    """(Named tuples, not frozen dataclasses: a batch reads its customers afresh, 100 of them
    for 1,000 events, and a frozen dataclass costs a Python ``__init__`` per object and a
    Python ``__hash__`` per entitlement-cache lookup.)"""

    product_key: str
    status: str
    granted_at_us: int


class Customer(NamedTuple):
    pk: int
    customer_id: str
    created_at_us: int
    subscriptions: tuple[Subscription, ...]


class PeriodKey(NamedTuple):
    """Which aggregate: a feature's period ``[start_us, end_us)``."""

    feature_key: str
    start_us: int
    end_us: int


AggregateKey = tuple[int, str, int, int]
"""Which period aggregate: ``(customer_pk, feature_key, period_start_us, period_end_us)``."""


class TrackStatus(enum.Enum):
    RECORDED = "recorded"
    REPLAYED = "replayed"
    """The key was seen within 24 h with the same feature and quantity: nothing counted."""
    KEY_REUSED = "key_reused"
    """The key was seen within 24 h for a different feature or quantity: nothing counted."""
    QUOTA_EXCEEDED = "quota_exceeded"
    """The hard limit (or the storage ceiling) would be passed: nothing counted."""


# The per-event types of the write path are plain tuples, read by unpacking: a batch makes
# thousands of them, and building a named tuple costs about ten times a plain one (a frozen
# dataclass more still), which over a batch of 1,000 was more than a tenth of the server's
# CPU beyond the database's own work (bench/db_ceiling.py).
TrackItem = tuple[AggregateKey, int, int, str | None, dict[str, Any] | None, int | None]
"""One usage event, checked and resolved by the caller (the billing service):
``(aggregate, quantity_micros, hour_start_us, idempotency_key, metadata, hard_limit_micros)``.
The aggregate tuple is shared by every event of one customer and feature in a request;
``hard_limit_micros`` refuses the event if the period's usage would pass it (``None``:
record overage)."""

TrackOutcome = tuple[TrackStatus, str, int, int, int]
"""What became of one :data:`TrackItem`: ``(status, feature_key, quantity_micros,
recorded_at_us, consumed_micros)`` — the stored event's feature, quantity and instant (the
original event's on a replay; ``now`` otherwise), and the period's usage after this item
(unchanged unless ``RECORDED``)."""


class PlainBatch(NamedTuple):
    """A batch whose events the caller expects to be all recorded (:meth:`UsageStore.track_plain`),
    column-wise: the batch's distinct aggregates (in the order of their first event) with
    each one's ceiling (its hard limit or :data:`MAX_CONSUMED_MICROS`), then each event's
    aggregate as an index into them, its quantity and its idempotency key (one per event,
    none twice, every quantity positive); the hour, the instant and the keys' expiry cutoff.

    (Events point at their aggregate by index, not by the aggregate's tuple: a batch of 1,000
    events to 100 customers would hash a four-field tuple per event at each step.)"""

    aggregates: Sequence[AggregateKey]
    ceilings: Sequence[int]
    of_event: Sequence[int]
    quantities: Sequence[int]
    keys: Sequence[str]
    hour_us: int
    now_us: int
    key_cutoff_us: int


PlainOutcome = list[int]
"""A plain batch recorded: each aggregate's usage before it, by index (each event's usage
after it is this plus the running sum of its aggregate's quantities in the batch)."""

T = TypeVar("T")


class UsageRead(NamedTuple):
    """What a metrics read needs, read together (:meth:`UsageStore.customer_usage`)."""

    customer: Customer | None
    """``None`` if unknown."""
    consumed: dict[str, int]
    """Usage per feature in the periods asked (0 where nothing was recorded)."""
    revoked: bool
    """Whether the session token id given was revoked (``False`` when none was given)."""


@dataclass(frozen=True, slots=True)
class HourBucket:
    hour_start_us: int
    quantity_micros: int


# --- the port ---------------------------------------------------------------------------
class UsageStore(Protocol):
    """What the billing service needs from a database. Thread-safe; one per process."""

    location: str
    """Where the data is (a file path, or a URL without its password): for logs and tests."""

    inline_reads: bool
    """Whether a read is cheap enough to run on the event loop (a local file) rather than in
    the thread pool (a network round trip): see :mod:`billing_ui.server.reads`."""

    def close(self) -> None:
        """Release every connection (idempotent)."""

    def ping(self) -> None:
        """Raise if the database cannot answer a query (for /health)."""

    def upsert_customer(
        self, customer_id: str, products: Sequence[str], status: str, now_us: int
    ) -> Customer:
        """Create the customer if new, and make ``products`` (in this order) its exact set of
        subscriptions, all with ``status``. A subscription keeps its ``granted_at`` unless
        its status changes."""

    def get_customer(self, customer_id: str) -> Customer | None: ...

    def get_customers(self, customer_ids: Sequence[str]) -> dict[str, Customer]:
        """The customers that exist among ``customer_ids``, by id, in one query (a batch of
        1,000 events to 100 customers must not cost 100 round trips)."""

    def track_many(
        self, items: Sequence[TrackItem], now_us: int, key_cutoff_us: int
    ) -> list[TrackOutcome]:
        """Record usage events in one transaction, each independently: a refused item changes
        nothing, and the others still count. A key recorded at or before ``key_cutoff_us``
        has expired and is claimed afresh (the 24-hour window)."""

    def track_plain(self, batch: PlainBatch, answer: Callable[[PlainOutcome], T]) -> T | None:
        """Record ``batch`` as :func:`~billing_ui.server.usage_sql.track_plain` does, in one
        transaction, and return ``answer`` of its outcome once the transaction committed;
        ``None``, having written nothing, when it is not plain (the caller then takes
        :meth:`track_many`). An adapter may run ``answer`` while the commit is under way
        (SQLite: while COMMIT waits for the disk), never return it before the commit."""

    def track_now(
        self, items: Sequence[TrackItem], now_us: int, key_cutoff_us: int
    ) -> list[TrackOutcome] | None:
        """:meth:`track_many` if the write can start at once, with no wait on another writer
        or on the network; else ``None``, having done nothing (for callers on an event
        loop, which must not wait)."""

    def consumed(self, customer_pk: int, periods: Sequence[PeriodKey]) -> dict[str, int]:
        """Usage per feature in the given periods (0 where nothing was recorded)."""

    def customer_usage(
        self, customer_id: str, periods: Sequence[PeriodKey], revoked_jti: str | None = None
    ) -> UsageRead:
        """The customer, its usage per feature in ``periods``, and whether the session token
        ``revoked_jti`` was revoked, read together in one round trip (a metrics read: the
        reads' hot path)."""

    async def customer_usage_async(
        self, customer_id: str, periods: Sequence[PeriodKey], revoked_jti: str | None = None
    ) -> UsageRead:
        """:meth:`customer_usage` for a coroutine on the server's event loop, without
        stalling it and without a hop to a worker thread and back (SQLite: inline, a local
        read; PostgreSQL: an ``asyncio`` connection of its own pool)."""

    async def close_async(self) -> None:
        """Release what the running event loop holds (its connections, if any), before the
        loop ends; a later async read on another loop opens its own."""

    def hourly(
        self, customer_pk: int, feature_key: str, start_us: int, end_us: int
    ) -> list[HourBucket]:
        """Usage per hour in ``[start_us, end_us)``, hours with usage only, in order."""

    def prune_idempotency_keys(self, cutoff_us: int) -> int:
        """Forget keys recorded at or before ``cutoff_us``; returns how many."""

    def revoke_token(self, jti: str, now_us: int, forget_before_us: int) -> None:
        """Remember a revoked token id; forget revocations older than any token could live."""

    def is_revoked(self, jti: str) -> bool: ...


def is_postgres_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def open_store(location: str | Path, *, migrate: bool = True) -> UsageStore:
    """The adapter for ``location``: a ``postgresql://`` URL opens PostgreSQL (needs the
    ``postgres`` extra), anything else is a SQLite file (created if missing).
    ``migrate=False``: the database is known to be set up already (a ``--workers`` worker,
    forked after its parent opened it), so opening takes no write lock."""
    if is_postgres_url(location):
        from billing_ui.server.postgres_store import PostgresStore

        return PostgresStore(str(location), migrate=migrate)
    from billing_ui.server.sqlite_store import SqliteStore

    return SqliteStore(location, migrate=migrate)
