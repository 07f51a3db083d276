"""The outbox in a local SQLite file: the default :class:`~billing_ui.core.outbox.OutboxStore`.

WAL with ``synchronous=FULL``: a track the outbox accepted is on disk when ``add`` returns,
so it survives the app process being killed (``kill -9``) and the machine losing power. Several
processes may share the file (WAL lets readers and one writer work together; ``BEGIN
IMMEDIATE`` and a busy timeout serialise the writers), and a claim is one ``UPDATE …
RETURNING`` statement, so two workers never claim the same entry while its lease runs.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from billing_ui.core.outbox import OutboxFullError, OutboxStats, QueuedTrack, Settlement

__all__ = ["SQLiteOutboxStore"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY,
    idempotency_key TEXT    NOT NULL UNIQUE,
    customer_id     TEXT    NOT NULL,
    feature_key     TEXT    NOT NULL,
    quantity        REAL    NOT NULL,
    metadata        TEXT,
    created_at      REAL    NOT NULL,
    available_at    REAL    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (failed, available_at, id);
CREATE INDEX IF NOT EXISTS outbox_customer ON outbox (customer_id, feature_key);
CREATE TABLE IF NOT EXISTS outbox_counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO outbox_counters VALUES ('delivered', 0), ('failed', 0);
INSERT OR IGNORE INTO outbox_counters
    SELECT 'pending', count(*) FROM outbox WHERE failed = 0;
"""
# ``pending`` is kept in the same transactions as the rows it counts (a file made before it
# existed gets it counted once, above), so the size check of each add reads one row instead
# of counting the outbox.

_COLUMNS = QueuedTrack.COLUMNS


class SQLiteOutboxStore:
    """An outbox in the SQLite file at ``path`` (created if missing). Thread-safe."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._lock:
            self._db.executescript(_SCHEMA)  # idempotent; executescript commits by itself

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add(self, entries: Sequence[QueuedTrack], max_size: int) -> int:
        with self._transaction() as db:
            new = [
                e
                for e in entries
                if db.execute(
                    "SELECT 1 FROM outbox WHERE idempotency_key = ?", (e.idempotency_key,)
                ).fetchone()
                is None
            ]  # a known key is the same event again: ignored, even when the outbox is full
            (depth,) = db.execute(
                "SELECT value FROM outbox_counters WHERE name = 'pending'"
            ).fetchone()
            if new and depth + len(new) > max_size:
                raise OutboxFullError(max_size)
            added = 0
            for e in new:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO outbox (idempotency_key, customer_id, feature_key, "
                    "quantity, metadata, created_at, available_at, last_error) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.idempotency_key,
                        e.customer_id,
                        e.feature_key,
                        e.quantity,
                        e.metadata_json(),
                        e.created_at,
                        e.created_at,
                        e.last_error,
                    ),
                )
                added += cursor.rowcount
            _bump(db, "pending", added)
            return added

    def claim(self, limit: int, now: float, lease_s: float) -> list[QueuedTrack]:
        with self._transaction() as db:
            rows = db.execute(
                "UPDATE outbox SET available_at = ?, attempts = attempts + 1, last_error = '' "
                "WHERE id IN "
                "(SELECT id FROM outbox WHERE failed = 0 AND available_at <= ? "
                f"ORDER BY id LIMIT ?) RETURNING id, {_COLUMNS}",
                (now + lease_s, now, limit),
            ).fetchall()
        rows.sort(key=lambda row: row[0])
        return [QueuedTrack.from_row(row[1:]) for row in rows]

    def settle(self, settlement: Settlement) -> None:
        with self._transaction() as db:
            # Rows another worker settled meanwhile (its lease ran out) are not counted twice.
            gone = db.executemany(
                "DELETE FROM outbox WHERE idempotency_key = ? AND failed = 0",
                [(key,) for key in settlement.delivered],
            ).rowcount
            failed = db.executemany(
                "UPDATE outbox SET failed = 1, last_error = ? "
                "WHERE idempotency_key = ? AND failed = 0",
                [(reason, key) for key, reason in settlement.failed],
            ).rowcount
            db.executemany(
                "UPDATE outbox SET available_at = ?, last_error = ? WHERE idempotency_key = ?",
                [(at, reason, key) for key, at, reason in settlement.retry],
            )
            _bump(db, "delivered", len(settlement.delivered))
            _bump(db, "failed", len(settlement.failed))
            _bump(db, "pending", -(max(gone, 0) + max(failed, 0)))

    def wake(self, now: float) -> int:
        with self._transaction() as db:
            return db.execute(
                "UPDATE outbox SET available_at = ? "
                "WHERE failed = 0 AND available_at > ? AND last_error <> ''",
                (now, now),
            ).rowcount

    def stats(self, now: float, max_age_s: float) -> OutboxStats:
        with self._lock:
            depth, oldest, overdue = self._db.execute(
                "SELECT count(*), min(created_at), "
                "coalesce(sum(created_at < ?), 0) FROM outbox WHERE failed = 0",
                (now - max_age_s,),
            ).fetchone()
            (failed,) = self._db.execute("SELECT count(*) FROM outbox WHERE failed = 1").fetchone()
            counters = dict(self._db.execute("SELECT name, value FROM outbox_counters").fetchall())
        return OutboxStats(
            depth=depth,
            oldest_age_s=max(0.0, now - oldest) if oldest is not None else 0.0,
            overdue=overdue,
            failed=failed,
            delivered=counters["delivered"],
            failed_total=counters["failed"],
        )

    def pending_by_feature(self, customer_id: str) -> dict[str, float]:
        with self._lock:
            rows = self._db.execute(
                "SELECT feature_key, sum(quantity) FROM outbox "
                "WHERE customer_id = ? AND failed = 0 GROUP BY feature_key",
                (customer_id,),
            ).fetchall()
        return {key: float(total) for key, total in rows}

    def failures(self, limit: int = 100) -> list[QueuedTrack]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE failed = 1 ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [QueuedTrack.from_row(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _bump(db: sqlite3.Connection, name: str, by: int) -> None:
    if by:
        db.execute("UPDATE outbox_counters SET value = value + ? WHERE name = ?", (by, name))
