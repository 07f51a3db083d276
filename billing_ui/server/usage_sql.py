"""All SQL of the local server, once for both adapters, over a small :class:`Tx`.

The statements stick to what SQLite and PostgreSQL both accept (``ON CONFLICT … DO UPDATE …
WHERE``, ``INSERT … AS alias``, row comparisons), written with ``?`` placeholders; the
PostgreSQL adapter rewrites them to ``%s`` once. An adapter supplies connections and
transactions (and the dialect-specific parts: :meth:`Tx.lock_customers`, and how
:meth:`Tx.claim_keys` batches its statements); what the statements mean, and so the
guarantees, are the same on both.

Why the write path looks the way it does:

* **Idempotency by constraint, not by look-then-insert.** A key is claimed with ``INSERT …
  ON CONFLICT … DO UPDATE … WHERE recorded_at <= cutoff``: it affects one row when the key is
  new or older than 24 h, none when it is a replay.
* **The limit is read under the writer's lock.** The customers of a batch are locked first
  (PostgreSQL: their rows, in id order so two batches never deadlock; SQLite: the whole file
  is already locked), so the aggregate read next is the committed truth and stays so until
  this transaction commits. Running totals are then kept in memory for the batch.
* **Few round trips.** A batch costs a fixed number of round trips to the database, not
  one per event: keys are claimed with one pipelined ``executemany``, the touched aggregates
  read with one query, and aggregates, hourly buckets and event rows written with one
  ``executemany`` each (PostgreSQL pipelines them; SQLite has no round trips to save).
  (Running the whole PostgreSQL transaction in pipeline mode as well showed no difference
  measurable on a loaded 2-CPU machine, so it stays simple.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final, Protocol, TypeVar

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

K = TypeVar("K")
_AggKey = tuple[int, str, int, int]  # customer, feature, period start, period end
_KeyId = tuple[int, str]  # customer, idempotency key


class Tx(Protocol):
    """One connection inside one transaction (or one read), as the queries below need it."""

    def one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None: ...

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Execute; the number of rows changed."""

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def claim_keys(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[bool]:
        """Run ``sql`` (an insert-or-update) once per row, in order; which rows it changed."""

    def lock_customers(self, pks: Sequence[int]) -> None:
        """Hold these customers' write lock until the transaction ends (sorted ids)."""

    def all_of(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
        """The rows of each of several independent reads, sent in one round trip where the
        database has round trips (PostgreSQL: one pipeline)."""


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
SELECT customer_id, feature_key, period_start_us, period_end_us, consumed_micros
FROM usage_aggregates
WHERE customer_id = ? AND feature_key = ? AND period_start_us = ? AND period_end_us = ?"""
"""One aggregate by its primary key; :func:`aggregates` sends many joined by ``UNION ALL``
(each branch stays a primary-key lookup on both databases, which a row-value ``IN`` list
is not on SQLite)."""
HOURLY: Final = """
SELECT hour_start_us, quantity_micros FROM usage_hourly
WHERE customer_id = ? AND feature_key = ? AND hour_start_us >= ? AND hour_start_us < ?
ORDER BY hour_start_us
"""
CUSTOMERS: Final = """
SELECT c.external_id, c.id, c.created_at_us, s.product_key, s.status, s.granted_at_us
FROM customers c LEFT JOIN subscriptions s ON s.customer_id = c.id
WHERE c.external_id IN ({marks})
ORDER BY c.external_id, s.position
"""
_CHUNK: Final = 200
"""Ids or keys per ``IN (...)`` list: far below SQLite's parameter limit."""
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
    return get_customers(tx, [customer_id]).get(customer_id)


def get_customers(tx: Tx, customer_ids: Sequence[str]) -> dict[str, Customer]:
    out: dict[str, Customer] = {}
    wanted = list(dict.fromkeys(customer_ids))
    for n in range(0, len(wanted), _CHUNK):
        chunk = wanted[n : n + _CHUNK]
        rows = tx.all(
            CUSTOMERS.format(marks=", ".join("?" * len(chunk))),
            chunk,
        )
        out.update(_customers_of(rows))
    return out


def _customers_of(rows: Sequence[tuple[Any, ...]]) -> dict[str, Customer]:
    """The customers in rows of :data:`CUSTOMERS`, by external id."""
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        grouped.setdefault(r[0], []).append(r)
    out: dict[str, Customer] = {}
    for cid, group in grouped.items():
        subs = tuple(Subscription(r[3], r[4], r[5]) for r in group if r[3] is not None)
        out[cid] = Customer(group[0][1], cid, group[0][2], subs)
    return out


# --- reads ------------------------------------------------------------------------------
def consumed(tx: Tx, customer_pk: int, periods: Sequence[PeriodKey]) -> dict[str, int]:
    """One query, a primary-key lookup per feature; never touches raw events."""
    wanted = [(customer_pk, p.feature_key, p.start_us, p.end_us) for p in periods]
    found = aggregates(tx, wanted)
    return {agg[1]: found.get(agg, 0) for agg in wanted}


def aggregates(tx: Tx, wanted: Sequence[_AggKey]) -> dict[_AggKey, int]:
    """``consumed_micros`` of each existing aggregate among ``wanted``, in one query per
    200 (one round trip, not one per aggregate)."""
    out: dict[_AggKey, int] = {}
    for n in range(0, len(wanted), _CHUNK):
        chunk = wanted[n : n + _CHUNK]
        rows = tx.all(" UNION ALL ".join([CONSUMED] * len(chunk)), [v for a in chunk for v in a])
        out.update({(r[0], r[1], r[2], r[3]): r[4] for r in rows})
    return out


CONSUMED_BY_EXTERNAL_ID: Final = """
SELECT feature_key, consumed_micros FROM usage_aggregates
WHERE customer_id = (SELECT id FROM customers WHERE external_id = ?)
  AND feature_key = ? AND period_start_us = ? AND period_end_us = ?"""


def customer_usage(
    tx: Tx, customer_id: str, periods: Sequence[PeriodKey]
) -> tuple[Customer | None, dict[str, int]]:
    """The customer and its usage in each of ``periods`` (0 where nothing was recorded), in
    one round trip: the aggregates are looked up by the customer's external id, so the two
    reads need not wait for each other. (A metrics read on PostgreSQL was two round trips
    and a pool checkout each; its p99 over HTTP missed 5 ms.)"""
    queries: list[tuple[str, Sequence[Any]]] = [(CUSTOMERS.format(marks="?"), (customer_id,))]
    if periods:
        args = [v for p in periods for v in (customer_id, p.feature_key, p.start_us, p.end_us)]
        queries.append((" UNION ALL ".join([CONSUMED_BY_EXTERNAL_ID] * len(periods)), args))
    results = tx.all_of(queries)
    customer = _customers_of(results[0]).get(customer_id)
    found: dict[str, int] = {r[0]: r[1] for r in results[1]} if periods else {}
    return customer, {p.feature_key: found.get(p.feature_key, 0) for p in periods}


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
    """Record ``items`` inside the caller's write transaction, each as if alone and in order.

    Four bulk steps, whatever the batch size: lock the customers; claim every key of the
    batch (its first occurrence) in bulk; read every touched aggregate; then decide each item
    in memory, in order, and write the results with :func:`write_usage` (one ``executemany``
    per table, the per-period and per-hour sums added once per aggregate, not per event).
    The in-memory pass gives the same answers as claiming each key just before its item: a
    later item with the same key replays the earlier one, or takes the key over if the
    earlier one was refused.

    The loop is written flat (locals, tuples, no method call per event): it runs once per
    event of every batch, and its Python is most of what a batch costs beyond the database.
    """
    if not items:
        return []
    tx.lock_customers(sorted({item.customer_pk for item in items}))
    keys = _Keys(tx, items, now_us, key_cutoff_us)
    touched = {(item.customer_pk, *item.period) for item in items}
    running: dict[_AggKey, int] = dict.fromkeys(touched, 0)
    running.update(aggregates(tx, sorted(touched)))
    agg_delta: dict[_AggKey, list[int]] = {}
    hour_delta: dict[tuple[int, str, int], list[int]] = {}
    events: list[tuple[int, str, int, int, str | None, str | None]] = []
    outcomes: list[TrackOutcome] = []
    recorded, quota_exceeded = TrackStatus.RECORDED, TrackStatus.QUOTA_EXCEEDED
    for pk, period, q, hour_us, idem, metadata, hard_limit in items:
        feature = period[0]
        agg = (pk, feature, period[1], period[2])
        consumed = running[agg]
        key = None
        if idem is not None:
            key = (pk, idem)
            replay = keys.replay_of(key)
            if replay is not None:
                feature_key, quantity, recorded_at = replay
                same = feature_key == feature and quantity == q
                status = TrackStatus.REPLAYED if same else TrackStatus.KEY_REUSED
                outcomes.append(TrackOutcome(status, feature_key, quantity, recorded_at, consumed))
                continue
        ceiling = (
            MAX_CONSUMED_MICROS if hard_limit is None else min(hard_limit, MAX_CONSUMED_MICROS)
        )
        if consumed + q > ceiling:  # nothing counted; the key stays free
            outcomes.append(TrackOutcome(quota_exceeded, feature, q, now_us, consumed))
            continue
        if key is not None:
            keys.record(key, feature, q)
        running[agg] = consumed = consumed + q
        _add(agg_delta, agg, q)
        _add(hour_delta, (pk, feature, hour_us), q)
        meta = None if metadata is None else json.dumps(metadata, separators=(",", ":"))
        events.append((pk, feature, q, now_us, idem, meta))
        outcomes.append(TrackOutcome(recorded, feature, q, now_us, consumed))
    keys.flush()
    write_usage(
        tx,
        [(*agg, q, n, now_us) for agg, (q, n) in agg_delta.items()],
        [(*hour, q, n) for hour, (q, n) in hour_delta.items()],
        events,
    )
    return outcomes


def _add(sums: dict[K, list[int]], key: K, quantity: int) -> None:
    """One more event of ``quantity`` in ``sums[key]`` (``[quantity, events]``)."""
    found = sums.get(key)
    if found is None:
        sums[key] = [quantity, 1]
    else:
        found[0] += quantity
        found[1] += 1


def write_usage(
    tx: Tx,
    aggregate_rows: Sequence[Sequence[Any]],
    hour_rows: Sequence[Sequence[Any]],
    event_rows: Sequence[Sequence[Any]],
) -> None:
    """Add to the period aggregates and hourly buckets (one row per aggregate or hour: the
    batch's sums) and insert the event rows; one ``executemany`` each. The write half of
    :func:`track_many`, and what ``bench/db_ceiling.py`` times as the database's own
    ceiling."""
    if event_rows:
        tx.many(ADD_TO_AGGREGATE, aggregate_rows)
        tx.many(ADD_TO_HOUR, hour_rows)
        tx.many(INSERT_EVENT, event_rows)


def claim_keys(tx: Tx, rows: Sequence[tuple[int, str, str, int, int, int]]) -> list[bool]:
    """Claim idempotency keys, rows of ``(customer, key, feature, quantity, now, cutoff)``:
    which rows were claimed (new, or older than the cutoff) rather than replays. One statement
    per row, because each row's answer is needed (PostgreSQL pipelines them in one round
    trip)."""
    return tx.claim_keys(CLAIM_KEY, rows) if rows else []


class _Keys:
    """The idempotency keys of one batch. Each key's first occurrence is claimed in bulk
    (the unique constraint decides, also against other processes: the customer is locked);
    the pass over the items then only consults memory, and :meth:`flush` undoes claims whose
    items were refused and rewrites a claim taken over by a later item of the batch."""

    def __init__(self, tx: Tx, items: Sequence[TrackItem], now_us: int, cutoff_us: int) -> None:
        self._tx = tx
        self._now_us = now_us
        first: dict[_KeyId, TrackItem] = {}
        for item in items:
            if item.idempotency_key is not None:
                first.setdefault((item.customer_pk, item.idempotency_key), item)
        rows = [
            (k[0], k[1], i.period.feature_key, i.quantity_micros, now_us, cutoff_us)
            for k, i in first.items()
        ]
        claimed = claim_keys(tx, rows)
        self._ours: dict[_KeyId, tuple[str, int]] = {
            k: (i.period.feature_key, i.quantity_micros)
            for (k, i), won in zip(first.items(), claimed, strict=True)
            if won
        }
        self._stored: dict[_KeyId, tuple[str, int, int]] = {}
        """Keys that replay: rows from before the batch, or recorded earlier in it."""

    def replay_of(self, key: _KeyId) -> tuple[str, int, int] | None:
        """(feature, quantity, recorded_at) if ``key`` is taken; ``None`` if it is ours."""
        if key in self._stored:
            return self._stored[key]
        if key in self._ours:
            return None
        row = self._tx.one(
            "SELECT feature_key, quantity_micros, recorded_at_us FROM idempotency_keys "
            "WHERE customer_id = ? AND idempotency_key = ?",
            key,
        )
        assert row is not None  # the claim conflicted with it, under the customer's lock
        self._stored[key] = (row[0], row[1], row[2])
        return self._stored[key]

    def record(self, key: _KeyId, feature_key: str, quantity_micros: int) -> None:
        self._stored[key] = (feature_key, quantity_micros, self._now_us)

    def flush(self) -> None:
        unused = [k for k in self._ours if k not in self._stored]
        taken_over = [
            (self._stored[k][0], self._stored[k][1], *k)
            for k, claim in self._ours.items()
            if k in self._stored and self._stored[k][:2] != claim
        ]
        if unused:
            self._tx.many(
                "DELETE FROM idempotency_keys WHERE customer_id = ? AND idempotency_key = ?",
                unused,
            )
        if taken_over:
            self._tx.many(
                "UPDATE idempotency_keys SET feature_key = ?, quantity_micros = ? "
                "WHERE customer_id = ? AND idempotency_key = ?",
                taken_over,
            )
