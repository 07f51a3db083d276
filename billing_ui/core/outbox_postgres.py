"""The outbox in a PostgreSQL table, for an app scaled out over several machines: an outbox
on one worker's disk is lost with that machine, a table is not, and every worker drains it.

Claims take due rows with ``FOR UPDATE SKIP LOCKED`` and lease them (``available_at`` moves
past the lease) in one ``UPDATE … RETURNING``: concurrent workers never block on each other's
rows and never claim the same row while its lease runs; a worker that dies leaves its rows to
be claimed again when the lease ends. Needs the ``postgres`` extra (psycopg 3, the driver the
local server uses too); core imports this module only when asked for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from billing_ui.core.outbox import OutboxFullError, OutboxStats, QueuedTrack, Settlement
from billing_ui.core.postgres_pool import open_pool

__all__ = ["PostgresOutboxStore"]

_COLUMNS = QueuedTrack.COLUMNS


class PostgresOutboxStore:
    """An outbox in the table ``table`` (created if missing, with ``<table>_counters``) of the
    database at ``url``. Thread-safe: each call takes a connection from a pool of at most
    ``max_connections`` (psycopg_pool), so a track being queued does not wait behind a
    delivery's claim or a stats read; one store per process."""

    def __init__(
        self,
        url: str,
        *,
        table: str = "billing_outbox",
        max_connections: int = 4,
        wait_timeout_s: float = 10.0,
    ) -> None:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"table must be letters, digits and underscores: {table!r}")
        self._pool = open_pool(
            url,
            name="billing_ui_outbox",
            max_size=max_connections,
            wait_timeout_s=wait_timeout_s,
            open_timeout_s=wait_timeout_s,
        )
        self._t = sql.Identifier(table)
        self._counters = sql.Identifier(table + "_counters")
        self._index = sql.Identifier(table + "_due")
        self._lock_id = sql.Literal(table)
        with self._transaction() as db:
            # Two workers starting together must not both create the table.
            db.execute(self._q("SELECT pg_advisory_xact_lock(hashtext({lock}))"))
            db.execute(
                self._q(
                    "CREATE TABLE IF NOT EXISTS {t} ("
                    " id BIGSERIAL PRIMARY KEY,"
                    " idempotency_key TEXT NOT NULL UNIQUE,"
                    " customer_id TEXT NOT NULL,"
                    " feature_key TEXT NOT NULL,"
                    " quantity DOUBLE PRECISION NOT NULL,"
                    " metadata JSONB,"
                    " created_at DOUBLE PRECISION NOT NULL,"
                    " available_at DOUBLE PRECISION NOT NULL,"
                    " attempts INTEGER NOT NULL DEFAULT 0,"
                    " failed BOOLEAN NOT NULL DEFAULT false,"
                    " last_error TEXT NOT NULL DEFAULT '')"
                )
            )
            db.execute(self._q("CREATE INDEX IF NOT EXISTS {i} ON {t} (failed, available_at, id)"))
            db.execute(
                self._q(
                    "CREATE TABLE IF NOT EXISTS {c} (name TEXT PRIMARY KEY, value BIGINT NOT NULL)"
                )
            )
            db.execute(
                self._q(
                    "INSERT INTO {c} VALUES ('delivered', 0), ('failed', 0) ON CONFLICT DO NOTHING"
                )
            )

    def _q(self, template: str) -> sql.Composed:
        """A statement with ``{t}`` (the table), ``{c}`` (its counters), ``{i}`` (its index)
        and ``{lock}`` (its advisory lock's name) filled in as identifiers."""
        return sql.SQL(template).format(
            t=self._t, c=self._counters, i=self._index, lock=self._lock_id
        )

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        with self._pool.connection() as db, db.transaction():
            yield db

    def add(self, entries: Sequence[QueuedTrack], max_size: int) -> int:
        with self._transaction() as db:
            # Serialise adds so that the size check holds across workers.
            db.execute(self._q("SELECT pg_advisory_xact_lock(hashtext({lock}))"))
            keys = [e.idempotency_key for e in entries]
            known = {
                row[0]
                for row in db.execute(
                    self._q("SELECT idempotency_key FROM {t} WHERE idempotency_key = ANY(%s)"),
                    (keys,),
                )
            }
            new = [e for e in entries if e.idempotency_key not in known]
            row = db.execute(self._q("SELECT count(*) FROM {t} WHERE NOT failed")).fetchone()
            depth = int(row[0]) if row else 0
            if new and depth + len(new) > max_size:
                raise OutboxFullError(max_size)
            with db.cursor() as cursor:
                cursor.executemany(
                    self._q(
                        "INSERT INTO {t} (idempotency_key, customer_id, feature_key, quantity, "
                        "metadata, created_at, available_at, last_error) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (idempotency_key) DO NOTHING"
                    ),
                    [
                        (
                            e.idempotency_key,
                            e.customer_id,
                            e.feature_key,
                            e.quantity,
                            None if e.metadata is None else Jsonb(dict(e.metadata)),
                            e.created_at,
                            e.created_at,
                            e.last_error,
                        )
                        for e in new
                    ],
                )
            return len(new)

    def claim(self, limit: int, now: float, lease_s: float) -> list[QueuedTrack]:
        with self._transaction() as db:
            rows = db.execute(
                self._q(
                    "UPDATE {t} SET available_at = %s, attempts = attempts + 1, last_error = '' "
                    "WHERE id IN "
                    "(SELECT id FROM {t} WHERE NOT failed AND available_at <= %s "
                    "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) "
                    "RETURNING id, " + _COLUMNS
                ),
                (now + lease_s, now, limit),
            ).fetchall()
        rows.sort(key=lambda row: row[0])
        return [QueuedTrack.from_row(row[1:]) for row in rows]

    def settle(self, settlement: Settlement) -> None:
        with self._transaction() as db, db.cursor() as cursor:
            if settlement.delivered:
                cursor.execute(
                    self._q("DELETE FROM {t} WHERE idempotency_key = ANY(%s)"),
                    (settlement.delivered,),
                )
            cursor.executemany(
                self._q("UPDATE {t} SET failed = true, last_error = %s WHERE idempotency_key = %s"),
                [(reason, key) for key, reason in settlement.failed],
            )
            cursor.executemany(
                self._q(
                    "UPDATE {t} SET available_at = %s, last_error = %s WHERE idempotency_key = %s"
                ),
                [(at, reason, key) for key, at, reason in settlement.retry],
            )
            for name, count in (
                ("delivered", len(settlement.delivered)),
                ("failed", len(settlement.failed)),
            ):
                if count:
                    cursor.execute(
                        self._q("UPDATE {c} SET value = value + %s WHERE name = %s"),
                        (count, name),
                    )

    def wake(self, now: float) -> int:
        with self._transaction() as db:
            return db.execute(
                self._q(
                    "UPDATE {t} SET available_at = %s "
                    "WHERE NOT failed AND available_at > %s AND last_error <> ''"
                ),
                (now, now),
            ).rowcount

    def stats(self, now: float, max_age_s: float) -> OutboxStats:
        with self._transaction() as db:
            row = db.execute(
                self._q(
                    "SELECT count(*) FILTER (WHERE NOT failed), "
                    "min(created_at) FILTER (WHERE NOT failed), "
                    "count(*) FILTER (WHERE NOT failed AND created_at < %s), "
                    "count(*) FILTER (WHERE failed) FROM {t}"
                ),
                (now - max_age_s,),
            ).fetchone()
            counters = dict(db.execute(self._q("SELECT name, value FROM {c}")))
        assert row is not None
        depth, oldest, overdue, failed = row
        return OutboxStats(
            depth=int(depth),
            oldest_age_s=max(0.0, now - oldest) if oldest is not None else 0.0,
            overdue=int(overdue),
            failed=int(failed),
            delivered=int(counters["delivered"]),
            failed_total=int(counters["failed"]),
        )

    def pending_by_feature(self, customer_id: str) -> dict[str, float]:
        with self._transaction() as db:
            rows = db.execute(
                self._q(
                    "SELECT feature_key, sum(quantity) FROM {t} "
                    "WHERE customer_id = %s AND NOT failed GROUP BY feature_key"
                ),
                (customer_id,),
            ).fetchall()
        return {key: float(total) for key, total in rows}

    def failures(self, limit: int = 100) -> list[QueuedTrack]:
        with self._transaction() as db:
            rows = db.execute(
                self._q("SELECT " + _COLUMNS + " FROM {t} WHERE failed ORDER BY id LIMIT %s"),
                (limit,),
            ).fetchall()
        return [QueuedTrack.from_row(row) for row in rows]

    def close(self) -> None:
        self._pool.close()
