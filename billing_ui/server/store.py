"""All SQL of the local billing server, behind one small class.

Why it looks the way it does:

* **One writer, many readers.** SQLite in WAL mode lets readers run while one writer writes.
  Writes go through a single connection guarded by a lock (cheap hand-off between threads of
  this process) *and* run in ``BEGIN IMMEDIATE`` transactions (correct even when a second
  process opens the same file). Each thread reads through its own connection.
* **Reads never scan raw events.** Every event insert updates, in the same transaction, a
  per-(customer, feature, period) aggregate and a per-hour bucket. Metrics and checks are a
  few primary-key lookups however many events are stored; history reads hourly buckets.
* **Idempotency by constraint, not by look-then-insert.** A key is claimed with ``INSERT …
  ON CONFLICT … DO UPDATE … WHERE recorded_at <= cutoff``: it affects one row when the key is
  new or older than 24 h, none when it is a replay. The hard-limit check reads the aggregate
  inside the same write transaction, so concurrent tracks cannot pass a hard limit together.
  An aggregate never passes ``MAX_CONSUMED_MICROS`` (checked in the transaction, and by a
  CHECK constraint as a last line), so no input can overflow a BIGINT.
* **Exact quantities.** Quantities are integer millionths, instants integer microseconds since
  the epoch (BIGINT everywhere), so sums are exact and comparisons are integer comparisons.

The queries stick to what PostgreSQL also accepts (``ON CONFLICT``, no SQLite-only functions),
so a ``PostgresStore`` with the same methods can be added later; only the DDL is SQLite's own
(``WITHOUT ROWID`` keeps each keyed table in a single B-tree: one insert, not two).
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

SCHEMA_VERSION: Final = 1
MAX_CONSUMED_MICROS: Final = 2**62
"""An aggregate never grows past this (4.6 trillion units): refused, never an overflow."""

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS customers (
    id            INTEGER PRIMARY KEY,
    external_id   TEXT    NOT NULL UNIQUE,
    created_at_us BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    customer_id   INTEGER NOT NULL REFERENCES customers (id),
    product_key   TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    position      INTEGER NOT NULL,
    granted_at_us BIGINT  NOT NULL,
    PRIMARY KEY (customer_id, product_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_events (
    id              INTEGER PRIMARY KEY,
    customer_id     INTEGER NOT NULL REFERENCES customers (id),
    feature_key     TEXT    NOT NULL,
    quantity_micros BIGINT  NOT NULL CHECK (quantity_micros > 0),
    recorded_at_us  BIGINT  NOT NULL,
    idempotency_key TEXT,
    metadata        TEXT
);
CREATE TABLE IF NOT EXISTS usage_aggregates (
    customer_id     INTEGER NOT NULL REFERENCES customers (id),
    feature_key     TEXT    NOT NULL,
    period_start_us BIGINT  NOT NULL,
    period_end_us   BIGINT  NOT NULL,
    consumed_micros BIGINT  NOT NULL CHECK (consumed_micros BETWEEN 0 AND {MAX_CONSUMED_MICROS}),
    event_count     BIGINT  NOT NULL,
    updated_at_us   BIGINT  NOT NULL,
    PRIMARY KEY (customer_id, feature_key, period_start_us, period_end_us)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_hourly (
    customer_id     INTEGER NOT NULL REFERENCES customers (id),
    feature_key     TEXT    NOT NULL,
    hour_start_us   BIGINT  NOT NULL,
    quantity_micros BIGINT  NOT NULL CHECK (quantity_micros BETWEEN 0 AND {MAX_CONSUMED_MICROS}),
    event_count     BIGINT  NOT NULL,
    PRIMARY KEY (customer_id, feature_key, hour_start_us)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency_keys (
    customer_id     INTEGER NOT NULL REFERENCES customers (id),
    idempotency_key TEXT    NOT NULL,
    feature_key     TEXT    NOT NULL,
    quantity_micros BIGINT  NOT NULL,
    recorded_at_us  BIGINT  NOT NULL,
    PRIMARY KEY (customer_id, idempotency_key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti           TEXT   PRIMARY KEY,
    revoked_at_us BIGINT NOT NULL
);
"""

_CLAIM_KEY: Final = """
INSERT INTO idempotency_keys
    (customer_id, idempotency_key, feature_key, quantity_micros, recorded_at_us)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (customer_id, idempotency_key) DO UPDATE SET
    feature_key = excluded.feature_key,
    quantity_micros = excluded.quantity_micros,
    recorded_at_us = excluded.recorded_at_us
WHERE idempotency_keys.recorded_at_us <= ?
"""
_ADD_TO_AGGREGATE: Final = """
INSERT INTO usage_aggregates AS a
    (customer_id, feature_key, period_start_us, period_end_us, consumed_micros, event_count,
     updated_at_us)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (customer_id, feature_key, period_start_us, period_end_us) DO UPDATE SET
    consumed_micros = a.consumed_micros + excluded.consumed_micros,
    event_count = a.event_count + excluded.event_count,
    updated_at_us = excluded.updated_at_us
"""
_ADD_TO_HOUR: Final = """
INSERT INTO usage_hourly AS h
    (customer_id, feature_key, hour_start_us, quantity_micros, event_count)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (customer_id, feature_key, hour_start_us) DO UPDATE SET
    quantity_micros = h.quantity_micros + excluded.quantity_micros,
    event_count = h.event_count + excluded.event_count
"""
_INSERT_EVENT: Final = """
INSERT INTO usage_events
    (customer_id, feature_key, quantity_micros, recorded_at_us, idempotency_key, metadata)
VALUES (?, ?, ?, ?, ?, ?)
"""
_CONSUMED: Final = """
SELECT consumed_micros FROM usage_aggregates
WHERE customer_id = ? AND feature_key = ? AND period_start_us = ? AND period_end_us = ?
"""


class StoreError(RuntimeError):
    """The database could not be opened or is not a billing_ui database."""


class StoreBusyError(StoreError):
    """Another process held the write lock for longer than the busy timeout; nothing was
    written, and the request can be retried."""


# --- what goes in and comes out ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Subscription:
    product_key: str
    status: str
    granted_at_us: int


@dataclass(frozen=True, slots=True)
class Customer:
    pk: int
    customer_id: str
    created_at_us: int
    subscriptions: tuple[Subscription, ...]


@dataclass(frozen=True, slots=True)
class PeriodKey:
    """Which aggregate: a feature's period ``[start_us, end_us)``."""

    feature_key: str
    start_us: int
    end_us: int


@dataclass(frozen=True, slots=True)
class TrackItem:
    """One usage event, checked and resolved by the caller (the billing service)."""

    customer_pk: int
    period: PeriodKey
    quantity_micros: int
    hour_start_us: int
    idempotency_key: str | None = None
    metadata: dict[str, Any] | None = None
    hard_limit_micros: int | None = None
    """Refuse the event if the period's usage would pass this (``None``: record overage)."""


class TrackStatus(enum.Enum):
    RECORDED = "recorded"
    REPLAYED = "replayed"
    """The key was seen within 24 h with the same feature and quantity: nothing counted."""
    KEY_REUSED = "key_reused"
    """The key was seen within 24 h for a different feature or quantity: nothing counted."""
    QUOTA_EXCEEDED = "quota_exceeded"
    """The hard limit (or the storage ceiling) would be passed: nothing counted."""


@dataclass(frozen=True, slots=True)
class TrackOutcome:
    status: TrackStatus
    feature_key: str
    quantity_micros: int
    recorded_at_us: int
    """The original event's instant on a replay; ``now`` otherwise."""
    consumed_micros: int
    """The period's usage after this item (unchanged unless RECORDED)."""


@dataclass(frozen=True, slots=True)
class HourBucket:
    hour_start_us: int
    quantity_micros: int


# --- the store --------------------------------------------------------------------------
class Store:
    """The local server's database (SQLite). Thread-safe; one instance per process."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        try:
            self._writer = self._connect()
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._create_schema()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the billing database {self.path}: {exc}") from None

    # -- connections and transactions --
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_s,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # each connection is still used by one thread at a time
        )
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError("the store is closed")
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: serialised in-process by the lock, across processes by
        SQLite's RESERVED lock (BEGIN IMMEDIATE). Rolled back on any exception."""
        with self._write_lock:
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # "database is locked", after the timeout
                raise StoreBusyError(f"the billing database is busy: {exc}") from None
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _create_schema(self) -> None:
        with self._write() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {row[0]}, this server knows "
                    f"{SCHEMA_VERSION}; use another --db file"
                )

    def close(self) -> None:
        """Close every connection (idempotent). Checkpoints the WAL into the main file."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                for conn in self._readers:
                    conn.close()
                self._readers.clear()
            self._writer.close()

    def ping(self) -> None:
        """Raise if the database cannot answer a query (for /health)."""
        self._reader().execute("SELECT 1 FROM meta LIMIT 1").fetchall()

    # -- customers --
    def upsert_customer(
        self, customer_id: str, products: Sequence[str], status: str, now_us: int
    ) -> Customer:
        """Create the customer if new, and make ``products`` (in this order) its exact set of
        subscriptions, all with ``status``. A subscription keeps its ``granted_at`` unless its
        status changes."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO customers (external_id, created_at_us) VALUES (?, ?) "
                "ON CONFLICT (external_id) DO NOTHING",
                (customer_id, now_us),
            )
            (pk,) = conn.execute(
                "SELECT id FROM customers WHERE external_id = ?", (customer_id,)
            ).fetchone()
            marks = ", ".join("?" * len(products))
            if products:
                conn.execute(
                    "DELETE FROM subscriptions WHERE customer_id = ? "
                    f"AND product_key NOT IN ({marks})",
                    (pk, *products),
                )
            else:
                conn.execute("DELETE FROM subscriptions WHERE customer_id = ?", (pk,))
            conn.executemany(
                """
                INSERT INTO subscriptions AS s
                    (customer_id, product_key, status, position, granted_at_us)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (customer_id, product_key) DO UPDATE SET
                    status = excluded.status,
                    position = excluded.position,
                    granted_at_us = CASE WHEN s.status = excluded.status
                                    THEN s.granted_at_us ELSE excluded.granted_at_us END
                """,
                [(pk, product, status, i, now_us) for i, product in enumerate(products)],
            )
            return self._customer(conn, customer_id)  # type: ignore[return-value]

    def get_customer(self, customer_id: str) -> Customer | None:
        return self._customer(self._reader(), customer_id)

    @staticmethod
    def _customer(conn: sqlite3.Connection, customer_id: str) -> Customer | None:
        rows = conn.execute(
            """
            SELECT c.id, c.created_at_us, s.product_key, s.status, s.granted_at_us
            FROM customers c LEFT JOIN subscriptions s ON s.customer_id = c.id
            WHERE c.external_id = ?
            ORDER BY s.position
            """,
            (customer_id,),
        ).fetchall()
        if not rows:
            return None
        subs = tuple(Subscription(r[2], r[3], r[4]) for r in rows if r[2] is not None)
        return Customer(rows[0][0], customer_id, rows[0][1], subs)

    # -- usage --
    def track_many(
        self, items: Sequence[TrackItem], now_us: int, key_cutoff_us: int
    ) -> list[TrackOutcome]:
        """Record usage events in one transaction, each independently: a refused item
        changes nothing, and the others still count.

        ``key_cutoff_us``: an idempotency key recorded at or before this instant has expired
        and is claimed afresh (the 24-hour window).

        Each key is claimed by its own statement (the unique constraint decides replays, also
        between events of one batch); the limit checks use a running total of each touched
        aggregate, read once. Aggregates, hourly buckets and event rows are then written with
        one ``executemany`` each, still inside the transaction: a batch of 1,000 events to a
        few customers costs ~1,000 short statements, not ~5,000.
        """
        with self._write() as conn:
            tally = _Tally(conn, now_us)
            outcomes = [_track_one(conn, tally, item, now_us, key_cutoff_us) for item in items]
            tally.flush()
        return outcomes

    def consumed(self, customer_pk: int, periods: Sequence[PeriodKey]) -> dict[str, int]:
        """Usage per feature in the given periods (0 where nothing was recorded). One
        primary-key lookup per feature; never touches raw events."""
        conn = self._reader()
        out: dict[str, int] = {}
        for p in periods:
            row = conn.execute(_CONSUMED, (customer_pk, p.feature_key, p.start_us, p.end_us))
            out[p.feature_key] = (row.fetchone() or (0,))[0]
        return out

    def hourly(
        self, customer_pk: int, feature_key: str, start_us: int, end_us: int
    ) -> list[HourBucket]:
        """Usage per hour in ``[start_us, end_us)``, hours with usage only, in order."""
        rows = (
            self._reader()
            .execute(
                "SELECT hour_start_us, quantity_micros FROM usage_hourly "
                "WHERE customer_id = ? AND feature_key = ? AND hour_start_us >= ? "
                "AND hour_start_us < ? ORDER BY hour_start_us",
                (customer_pk, feature_key, start_us, end_us),
            )
            .fetchall()
        )
        return [HourBucket(r[0], r[1]) for r in rows]

    def prune_idempotency_keys(self, cutoff_us: int) -> int:
        """Forget keys recorded at or before ``cutoff_us`` (they no longer protect anything)."""
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM idempotency_keys WHERE recorded_at_us <= ?", (cutoff_us,)
            ).rowcount

    # -- session tokens --
    def revoke_token(self, jti: str, now_us: int, forget_before_us: int) -> None:
        """Remember a revoked token id; forget revocations older than any token could live."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO revoked_tokens (jti, revoked_at_us) VALUES (?, ?) "
                "ON CONFLICT (jti) DO NOTHING",
                (jti, now_us),
            )
            conn.execute("DELETE FROM revoked_tokens WHERE revoked_at_us < ?", (forget_before_us,))

    def is_revoked(self, jti: str) -> bool:
        row = self._reader().execute("SELECT 1 FROM revoked_tokens WHERE jti = ?", (jti,))
        return row.fetchone() is not None

    # -- for tests and benchmarks --
    def fingerprint(self) -> dict[str, int]:
        """Row counts and sums of every usage table: equal before and after a refused
        request, which is how tests prove that it changed nothing."""
        conn = self._reader()
        out: dict[str, int] = {}
        for table in ("customers", "subscriptions", "usage_events", "usage_aggregates",
                      "usage_hourly", "idempotency_keys", "revoked_tokens"):  # fmt: skip
            out[f"{table}.rows"] = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        for table, column in (("usage_events", "quantity_micros"),
                              ("usage_aggregates", "consumed_micros"),
                              ("usage_hourly", "quantity_micros")):  # fmt: skip
            total = conn.execute(f"SELECT COALESCE(SUM({column}), 0) FROM {table}").fetchone()[0]
            out[f"{table}.sum"] = total
        return out

    def count_events(self, customer_id: str | None = None, feature_key: str | None = None) -> int:
        """How many raw events are stored (optionally for one customer and feature)."""
        sql = "SELECT COUNT(*) FROM usage_events e JOIN customers c ON c.id = e.customer_id"
        where, args = [], []
        if customer_id is not None:
            where.append("c.external_id = ?")
            args.append(customer_id)
        if feature_key is not None:
            where.append("e.feature_key = ?")
            args.append(feature_key)
        if where:
            sql += " WHERE " + " AND ".join(where)
        count: int = self._reader().execute(sql, args).fetchone()[0]
        return count


# --- the write path of track_many -------------------------------------------------------
_AggKey = tuple[int, str, int, int]  # customer, feature, period start, period end


class _Tally:
    """What one write transaction adds: running totals per aggregate (read from the database
    once, then kept in memory while the transaction holds the write lock), and the rows to
    write when the items are done."""

    def __init__(self, conn: sqlite3.Connection, now_us: int) -> None:
        self._conn = conn
        self._now_us = now_us
        self._running: dict[_AggKey, int] = {}
        self._agg_delta: dict[_AggKey, list[int]] = {}
        self._hour_delta: dict[tuple[int, str, int], list[int]] = {}
        self._events: list[tuple[int, str, int, int, str | None, str | None]] = []

    def consumed(self, agg: _AggKey) -> int:
        if agg not in self._running:
            row = self._conn.execute(_CONSUMED, agg).fetchone()
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
        self._conn.executemany(
            _ADD_TO_AGGREGATE,
            [(*agg, q, n, self._now_us) for agg, (q, n) in self._agg_delta.items()],
        )
        self._conn.executemany(
            _ADD_TO_HOUR, [(*hour, q, n) for hour, (q, n) in self._hour_delta.items()]
        )
        self._conn.executemany(_INSERT_EVENT, self._events)


def _track_one(
    conn: sqlite3.Connection, tally: _Tally, item: TrackItem, now_us: int, cutoff_us: int
) -> TrackOutcome:
    p = item.period
    agg: _AggKey = (item.customer_pk, p.feature_key, p.start_us, p.end_us)
    key = item.idempotency_key
    if key is not None:
        claimed = conn.execute(
            _CLAIM_KEY,
            (item.customer_pk, key, p.feature_key, item.quantity_micros, now_us, cutoff_us),
        ).rowcount
        if not claimed:
            return _replay(conn, tally, agg, item)
    consumed = tally.consumed(agg)
    ceiling = MAX_CONSUMED_MICROS
    if item.hard_limit_micros is not None:
        ceiling = min(ceiling, item.hard_limit_micros)
    if consumed + item.quantity_micros > ceiling:
        if key is not None:  # undo our claim: the key may be used again
            conn.execute(
                "DELETE FROM idempotency_keys WHERE customer_id = ? AND idempotency_key = ?",
                (item.customer_pk, key),
            )
        return TrackOutcome(
            TrackStatus.QUOTA_EXCEEDED, p.feature_key, item.quantity_micros, now_us, consumed
        )
    total = tally.add(agg, item)
    return TrackOutcome(TrackStatus.RECORDED, p.feature_key, item.quantity_micros, now_us, total)


def _replay(conn: sqlite3.Connection, tally: _Tally, agg: _AggKey, item: TrackItem) -> TrackOutcome:
    feature_key, quantity, recorded_at = conn.execute(
        "SELECT feature_key, quantity_micros, recorded_at_us FROM idempotency_keys "
        "WHERE customer_id = ? AND idempotency_key = ?",
        (item.customer_pk, item.idempotency_key),
    ).fetchone()
    same = feature_key == item.period.feature_key and quantity == item.quantity_micros
    status = TrackStatus.REPLAYED if same else TrackStatus.KEY_REUSED
    return TrackOutcome(status, feature_key, quantity, recorded_at, tally.consumed(agg))
