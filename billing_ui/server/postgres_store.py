"""The PostgreSQL adapter of :class:`~billing_ui.server.store.UsageStore`, for several server
processes (``uvicorn --workers N``, or several hosts) on one database.

Driver: psycopg 3 with psycopg_pool. The port is synchronous (the service and SQLite are), and
psycopg's sync API serves it directly from FastAPI's thread pool, with server-side prepared
statements after a few uses and ``executemany`` sent as one pipeline (one round trip for a
batch's rows). asyncpg is faster per query but async only: it would make the port async for
both adapters (SQLite through a thread hop) for no gain in the write path, whose cost is the
row locks and the commit, not the driver (see docs/architecture.md). The one exception is
the metrics read from the event loop (:meth:`PostgresStore.customer_usage_async`): it runs on
psycopg's async pool of that loop (``postgres_async``), with no thread hop.

What makes the guarantees hold across processes:

* every write runs in one transaction (READ COMMITTED), so aggregates, hourly buckets, events
  and the idempotency key commit together or not at all;
* a batch first locks its customers' rows (``FOR NO KEY UPDATE``, in id order: no deadlock
  between two batches; ``NO KEY`` so inserting events, whose foreign key takes ``KEY SHARE``,
  is not blocked), so the aggregate it then reads is committed truth that no other process can
  change before this transaction commits: a hard limit is exact however many processes write;
* the unique key on ``(customer, idempotency_key)`` decides replays;
* the schema is migrated under an advisory lock, so processes starting together migrate once;
  a process that reads it current takes no lock.

A connection lost or a pool exhausted past its timeout is :class:`StoreBusyError` (503 with
``Retry-After``): nothing was committed, and the client retries with the same key.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict

from billing_ui.core.postgres_pool import Pool, open_pool
from billing_ui.server import migrations
from billing_ui.server import usage_sql as Q
from billing_ui.server.postgres_async import LoopPool
from billing_ui.server.store import (
    Customer,
    HourBucket,
    PeriodKey,
    PlainBatch,
    PlainOutcome,
    StoreBusyError,
    StoreError,
    TrackItem,
    TrackOutcome,
    UsageRead,
)

_MIGRATION_LOCK: Final = 0x62696C6C  # "bill": pg_advisory_xact_lock key for schema changes
_LOCK_CUSTOMERS: Final = "SELECT id FROM customers WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE"

T = TypeVar("T")


@functools.cache
def _pg(sql: str) -> str:
    """The shared ``?`` placeholders as psycopg's ``%s`` (no statement contains ``%``)."""
    return sql.replace("?", "%s")


class _PgTx:
    """:class:`~billing_ui.server.usage_sql.Tx` over one psycopg connection."""

    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(_pg(sql), args).fetchone()
        return row

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(_pg(sql), args).fetchall()

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self.conn.execute(_pg(sql), args).rowcount

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(_pg(sql), rows)

    def claim_keys(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[bool]:
        """One pipeline for all rows; a row is claimed when its statement returns a row."""
        claimed = []
        with self.conn.cursor() as cur:
            cur.executemany(_pg(sql.rstrip() + " RETURNING 1"), rows, returning=True)
            while True:
                claimed.append(cur.fetchone() is not None)
                if not cur.nextset():
                    break
        return claimed

    def lock_customers(self, pks: Sequence[int]) -> None:
        self.conn.execute(_LOCK_CUSTOMERS, (list(pks),))


def public_location(url: str) -> str:
    """``url`` without its password, for logs."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = f"{info['user']}@" if info.get("user") else ""
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{info.get('host', '')}{port}/{info.get('dbname', '')}"


class PostgresStore:
    """The local server's database on PostgreSQL. Thread-safe; one instance per process,
    any number of processes per database."""

    inline_reads = False  # network round trips: off the event loop

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 10,
        connect_timeout_s: float = 10.0,
        wait_timeout_s: float = 10.0,
        lock_timeout_s: float = 10.0,
        migrate: bool = True,
    ) -> None:
        """``wait_timeout_s``: longest wait for a free connection of the pool;
        ``lock_timeout_s``: longest wait for a row lock another process holds. Past either,
        the request is refused as busy (503), like SQLite's busy timeout. ``migrate=False``:
        the schema is known to be current (a worker forked after its parent opened it), so
        opening takes no advisory lock."""
        self.location = public_location(url)
        lock_timeout = f"{int(lock_timeout_s * 1000)}ms"

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (lock_timeout,))

        pool: Pool | None = None
        try:
            # One plain connection first: a wrong host, password or database name is said at
            # once, in PostgreSQL's words, instead of a pool retrying until its timeout.
            psycopg.connect(url, connect_timeout=max(1, round(connect_timeout_s))).close()
            self._pool = pool = open_pool(
                url,
                name="billing_ui",
                max_size=max_connections,
                wait_timeout_s=wait_timeout_s,
                open_timeout_s=connect_timeout_s,
                configure=configure,
            )
            if migrate and not self._read(
                lambda tx: migrations.is_current("postgres", tx.one)
            ):  # current: no advisory lock to queue on
                self._migrate()
            self._loop_pool = LoopPool(
                url,
                name="billing_ui_async",
                max_size=max_connections,
                wait_timeout_s=wait_timeout_s,
            )
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            if pool is not None:
                pool.close()
            raise StoreError(f"cannot open the billing database {self.location}: {exc}") from None

    # -- connections and transactions --
    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolClosed:
            raise StoreError("the store is closed") from None
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise StoreBusyError(f"the billing database is unavailable: {exc}") from None

    def _read(self, fn: Callable[[_PgTx], T]) -> T:
        with self._connection() as conn:
            return fn(_PgTx(conn))

    def _write(self, fn: Callable[[_PgTx], T]) -> T:
        """``fn`` in one transaction: committed when it returns, rolled back if it raises."""
        with self._connection() as conn, conn.transaction():
            return fn(_PgTx(conn))

    def _migrate(self) -> None:
        def run(tx: _PgTx) -> None:
            tx.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            tx.run(migrations.META_TABLE)
            row = tx.one(migrations.READ_VERSION)
            current = int(row[0]) if row else 0
            migrations.migrate("postgres", current, tx.run, self.location)

        self._write(run)

    def close(self) -> None:
        self._loop_pool.close_from_outside()
        self._pool.close()

    async def close_async(self) -> None:
        await self._loop_pool.close()

    def ping(self) -> None:
        self._read(lambda tx: tx.one("SELECT 1"))

    # -- the port --
    def upsert_customer(
        self, customer_id: str, products: Sequence[str], status: str, now_us: int
    ) -> Customer:
        return self._write(lambda tx: Q.upsert_customer(tx, customer_id, products, status, now_us))

    def get_customer(self, customer_id: str) -> Customer | None:
        return self._read(lambda tx: Q.get_customer(tx, customer_id))

    def get_customers(self, customer_ids: Sequence[str]) -> dict[str, Customer]:
        return self._read(lambda tx: Q.get_customers(tx, customer_ids))

    def track_many(
        self, items: Sequence[TrackItem], now_us: int, key_cutoff_us: int
    ) -> list[TrackOutcome]:
        return self._write(lambda tx: Q.track_many(tx, items, now_us, key_cutoff_us))

    def track_plain(self, batch: PlainBatch, answer: Callable[[PlainOutcome], T]) -> T | None:
        """``answer`` runs after the commit (a round trip with ``synchronous_commit`` off:
        too short to be worth a thread)."""
        try:
            outcome = self._write(lambda tx: Q.track_plain(tx, batch))
        except Q.NotPlain:  # rolled back by _write
            return None
        return answer(outcome)

    def track_now(
        self, items: Sequence[TrackItem], now_us: int, key_cutoff_us: int
    ) -> list[TrackOutcome] | None:
        return None  # every write is a round trip: never on the event loop

    def consumed(self, customer_pk: int, periods: Sequence[PeriodKey]) -> dict[str, int]:
        return self._read(lambda tx: Q.consumed(tx, customer_pk, periods))

    def customer_usage(
        self, customer_id: str, periods: Sequence[PeriodKey], revoked_jti: str | None = None
    ) -> UsageRead:
        return self._read(lambda tx: Q.customer_usage(tx, customer_id, periods, revoked_jti))

    async def customer_usage_async(
        self, customer_id: str, periods: Sequence[PeriodKey], revoked_jti: str | None = None
    ) -> UsageRead:
        """One statement on the loop's own async connection (see ``postgres_async``); in the
        thread pool when this loop cannot have one."""
        try:
            pool = await self._loop_pool.for_this_loop()
            if pool is None:
                return await asyncio.to_thread(
                    self.customer_usage, customer_id, periods, revoked_jti
                )
            sql, args = Q.usage_read_query(customer_id, periods, revoked_jti)
            async with pool.connection() as conn:
                cursor = conn.read_cursor()
                await cursor.execute(_pg(sql), args)
                rows = await cursor.fetchall()
        except psycopg_pool.PoolClosed:
            raise StoreError("the store is closed") from None
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise StoreBusyError(f"the billing database is unavailable: {exc}") from None
        return Q.usage_read_rows(rows, customer_id, periods)

    def hourly(
        self, customer_pk: int, feature_key: str, start_us: int, end_us: int
    ) -> list[HourBucket]:
        return self._read(lambda tx: Q.hourly(tx, customer_pk, feature_key, start_us, end_us))

    def prune_idempotency_keys(self, cutoff_us: int) -> int:
        return self._write(lambda tx: Q.prune_idempotency_keys(tx, cutoff_us))

    def revoke_token(self, jti: str, now_us: int, forget_before_us: int) -> None:
        self._write(lambda tx: Q.revoke_token(tx, jti, now_us, forget_before_us))

    def is_revoked(self, jti: str) -> bool:
        return self._read(lambda tx: Q.is_revoked(tx, jti))
