"""All SQL of the local server, once for both adapters, over a four-method :class:`Tx`.

The statements stick to what SQLite and PostgreSQL both accept (``ON CONFLICT … DO UPDATE …
WHERE``, ``INSERT … AS alias``, row comparisons), written with ``?`` placeholders; the
PostgreSQL adapter rewrites them to ``%s`` once. An adapter supplies connections and
transactions (and the one dialect-specific thing, :meth:`Tx.lock_customers`); what the
statements mean, and so the guarantees, are the same on both.

Why the write path looks the way it does:

* **Idempotency by constraint, not by look-then-insert.** A key is claimed with ``INSERT …
  ON CONFLICT … DO UPDATE … WHERE recorded_at <= cutoff``: it affects one row when the key is
  new or older than 24 h, none when it is a replay.
* **The limit is read under the writer's lock.** The customers of a batch are locked first
  (PostgreSQL: their rows, in id order so two batches never deadlock; SQLite: the whole file
  is already locked), so the aggregate read next is the committed truth and stays so until
  this transaction commits. Running totals are then kept in memory for the batch.
* **Few statements.** Aggregates, hourly buckets and event rows are written with one
  ``executemany`` each at the end of the transaction: a batch of 1,000 events to a few
  customers costs ~1,000 short statements, not ~5,000.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final, Protocol

from billing_ui.server.store import (
    MAX_CONSUMED_MICROS,
    Customer,
    HourBucket,
    PeriodKey,
    Subscription,
    TrackItem,
    TrackOutcome,
    TrackStatus,
)


class Tx(Protocol):
    """One connection inside one transaction (or one read), as the queries below need it."""

    def one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Execute; the number of rows changed."""

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def lock_customers(self, pks: Sequence[int]) -> None:
        """Hold these customers' write lock until the transaction ends (sorted ids)."""


CLAIM_KEY: Final = """
INSERT INTO idempotency_keys
    (customer_id, idempotency_key, feature_key, quantity_micros, recorded_at_us)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (customer_id, idempotency_key) DO UPDATE SET
    feature_key = excluded.feature_key,
    quantity_micros = excluded.quantity_micros,
    recorded_at_us = excluded.recorded_at_us
WHERE idempotency_keys.recorded_at_us <= ?
"""
ADD_TO_AGGREGATE: Final = """
INSERT INTO usage_aggregates AS a
    (customer_id, feature_key, period_start_us, period_end_us, consumed_micros, event_count,
     updated_at_us)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (customer_id, feature_key, period_start_us, period_end_us) DO UPDATE SET
    consumed_micros = a.consumed_micros + excluded.consumed_micros,
    event_count = a.event_count + excluded.event_count,
    updated_at_us = excluded.updated_at_us
"""
ADD_TO_HOUR: Final = """
INSERT INTO usage_hourly AS h
    (customer_id, feature_key, hour_start_us, quantity_micros, event_count)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (customer_id, feature_key, hour_start_us) DO UPDATE SET
    quantity_micros = h.quantity_micros + excluded.quantity_micros,
    event_count = h.event_count + excluded.event_count
"""
INSERT_EVENT: Final = """
INSERT INTO usage_events
    (customer_id, feature_key, quantity_micros, recorded_at_us, idempotency_key, metadata)
VALUES (?, ?, ?, ?, ?, ?)
"""
CONSUMED: Final = """
SELECT consumed_micros FROM usage_aggregates
WHERE customer_id = ? AND feature_key = ? AND period_start_us = ? AND period_end_us = ?
"""
HOURLY: Final = """
SELECT hour_start_us, quantity_micros FROM usage_hourly
WHERE customer_id = ? AND feature_key = ? AND hour_start_us >= ? AND hour_start_us < ?
ORDER BY hour_start_us
"""
CUSTOMER: Final = """
SELECT c.id, c.created_at_us, s.product_key, s.status, s.granted_at_us
FROM customers c LEFT JOIN subscriptions s ON s.customer_id = c.id
WHERE c.external_id = ?
ORDER BY s.position
"""
_UPSERT_SUBSCRIPTION: Final = """
INSERT INTO subscriptions AS s (customer_id, product_key, status, position, granted_at_us)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (customer_id, product_key) DO UPDATE SET
    status = excluded.status,
    position = excluded.position,
    granted_at_us = CASE WHEN s.status = excluded.status
                    THEN s.granted_at_us ELSE excluded.granted_at_us END
"""


# --- customers --------------------------------------------------------------------------
def upsert_customer(
    tx: Tx, customer_id: str, products: Sequence[str], status: str, now_us: int
) -> Customer:
    tx.run(
        "INSERT INTO customers (external_id, created_at_us) VALUES (?, ?) "
        "ON CONFLICT (external_id) DO NOTHING",
        (customer_id, now_us),
    )
    found = tx.one("SELECT id FROM customers WHERE external_id = ?", (customer_id,))
    assert found is not None
    pk = found[0]
    if products:
        marks = ", ".join("?" * len(products))
        tx.run(
            f"DELETE FROM subscriptions WHERE customer_id = ? AND product_key NOT IN ({marks})",
            (pk, *products),
        )
    else:
        tx.run("DELETE FROM subscriptions WHERE customer_id = ?", (pk,))
    tx.many(
        _UPSERT_SUBSCRIPTION,
        [(pk, product, status, i, now_us) for i, product in enumerate(products)],
    )
    customer = get_customer(tx, customer_id)
    assert customer is not None
    return customer


def get_customer(tx: Tx, customer_id: str) -> Customer | None:
    rows = tx.all(CUSTOMER, (customer_id,))
    if not rows:
        return None
    subs = tuple(Subscription(r[2], r[3], r[4]) for r in rows if r[2] is not None)
    return Customer(rows[0][0], customer_id, rows[0][1], subs)


# --- reads ------------------------------------------------------------------------------
def consumed(tx: Tx, customer_pk: int, periods: Sequence[PeriodKey]) -> dict[str, int]:
    """One primary-key lookup per feature; never touches raw events."""
    out: dict[str, int] = {}
    for p in periods:
        row = tx.one(CONSUMED, (customer_pk, p.feature_key, p.start_us, p.end_us))
        out[p.feature_key] = row[0] if row else 0
    return out


def hourly(
    tx: Tx, customer_pk: int, feature_key: str, start_us: int, end_us: int
) -> list[HourBucket]:
    rows = tx.all(HOURLY, (customer_pk, feature_key, start_us, end_us))
    return [HourBucket(r[0], r[1]) for r in rows]


# --- expiry and tokens ------------------------------------------------------------------
def prune_idempotency_keys(tx: Tx, cutoff_us: int) -> int:
    return tx.run("DELETE FROM idempotency_keys WHERE recorded_at_us <= ?", (cutoff_us,))


def revoke_token(tx: Tx, jti: str, now_us: int, forget_before_us: int) -> None:
    tx.run(
        "INSERT INTO revoked_tokens (jti, revoked_at_us) VALUES (?, ?) "
        "ON CONFLICT (jti) DO NOTHING",
        (jti, now_us),
    )
    tx.run("DELETE FROM revoked_tokens WHERE revoked_at_us < ?", (forget_before_us,))


def is_revoked(tx: Tx, jti: str) -> bool:
    return tx.one("SELECT 1 FROM revoked_tokens WHERE jti = ?", (jti,)) is not None


# --- the write path of track_many -------------------------------------------------------
def track_many(
    tx: Tx, items: Sequence[TrackItem], now_us: int, key_cutoff_us: int
) -> list[TrackOutcome]:
    """Record ``items`` inside the caller's write transaction (see the module docstring)."""
    if not items:
        return []
    tx.lock_customers(sorted({item.customer_pk for item in items}))
    tally = _Tally(tx, now_us)
    outcomes = [_track_one(tx, tally, item, now_us, key_cutoff_us) for item in items]
    tally.flush()
    return outcomes


_AggKey = tuple[int, str, int, int]  # customer, feature, period start, period end


class _Tally:
    """What one write transaction adds: running totals per aggregate (read from the database
    once, then kept in memory while the transaction holds the customers' lock), and the rows
    to write when the items are done."""

    def __init__(self, tx: Tx, now_us: int) -> None:
        self._tx = tx
        self._now_us = now_us
        self._running: dict[_AggKey, int] = {}
        self._agg_delta: dict[_AggKey, list[int]] = {}
        self._hour_delta: dict[tuple[int, str, int], list[int]] = {}
        self._events: list[tuple[int, str, int, int, str | None, str | None]] = []

    def consumed(self, agg: _AggKey) -> int:
        if agg not in self._running:
            row = self._tx.one(CONSUMED, agg)
            self._running[agg] = row[0] if row else 0
        return self._running[agg]

    def add(self, agg: _AggKey, item: TrackItem) -> int:
        q = item.quantity_micros
        self._running[agg] = total = self.consumed(agg) + q
        delta = self._agg_delta.setdefault(agg, [0, 0])
        delta[0] += q
        delta[1] += 1
        hour = self._hour_delta.setdefault((agg[0], agg[1], item.hour_start_us), [0, 0])
        hour[0] += q
        hour[1] += 1
        meta = None if item.metadata is None else json.dumps(item.metadata, separators=(",", ":"))
        self._events.append((agg[0], agg[1], q, self._now_us, item.idempotency_key, meta))
        return total

    def flush(self) -> None:
        if not self._events:
            return
        self._tx.many(
            ADD_TO_AGGREGATE,
            [(*agg, q, n, self._now_us) for agg, (q, n) in self._agg_delta.items()],
        )
        self._tx.many(ADD_TO_HOUR, [(*hour, q, n) for hour, (q, n) in self._hour_delta.items()])
        self._tx.many(INSERT_EVENT, self._events)


def _track_one(tx: Tx, tally: _Tally, item: TrackItem, now_us: int, cutoff_us: int) -> TrackOutcome:
    p = item.period
    agg: _AggKey = (item.customer_pk, p.feature_key, p.start_us, p.end_us)
    key = item.idempotency_key
    if key is not None:
        claimed = tx.run(
            CLAIM_KEY,
            (item.customer_pk, key, p.feature_key, item.quantity_micros, now_us, cutoff_us),
        )
        if not claimed:
            return _replay(tx, tally, agg, item)
    consumed = tally.consumed(agg)
    ceiling = MAX_CONSUMED_MICROS
    if item.hard_limit_micros is not None:
        ceiling = min(ceiling, item.hard_limit_micros)
    if consumed + item.quantity_micros > ceiling:
        if key is not None:  # undo our claim: the key may be used again
            tx.run(
                "DELETE FROM idempotency_keys WHERE customer_id = ? AND idempotency_key = ?",
                (item.customer_pk, key),
            )
        return TrackOutcome(
            TrackStatus.QUOTA_EXCEEDED, p.feature_key, item.quantity_micros, now_us, consumed
        )
    total = tally.add(agg, item)
    return TrackOutcome(TrackStatus.RECORDED, p.feature_key, item.quantity_micros, now_us, total)


def _replay(tx: Tx, tally: _Tally, agg: _AggKey, item: TrackItem) -> TrackOutcome:
    row = tx.one(
        "SELECT feature_key, quantity_micros, recorded_at_us FROM idempotency_keys "
        "WHERE customer_id = ? AND idempotency_key = ?",
        (item.customer_pk, item.idempotency_key),
    )
    assert row is not None  # the claim conflicted with it, under the customer's lock
    feature_key, quantity, recorded_at = row
    same = feature_key == item.period.feature_key and quantity == item.quantity_micros
    status = TrackStatus.REPLAYED if same else TrackStatus.KEY_REUSED
    return TrackOutcome(status, feature_key, quantity, recorded_at, tally.consumed(agg))
