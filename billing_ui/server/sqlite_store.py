"""The embedded adapter of :class:`~billing_ui.server.store.UsageStore`: one SQLite file.

**One writer, many readers.** SQLite in WAL mode lets readers run while one writer writes.
Writes go through a single connection guarded by a lock (cheap hand-off between threads of
this process) *and* run in ``BEGIN IMMEDIATE`` transactions (correct even when a second
process opens the same file: the file's write lock is what serialises every writer, so the
limit read inside the write is the truth). Each thread reads through its own connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

from billing_ui.server import migrations
from billing_ui.server import usage_sql as Q
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


class _SqliteTx:
    """:class:`~billing_ui.server.usage_sql.Tx` over one sqlite3 connection."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(sql, args).fetchone()
        return row

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, args).fetchall()

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, args).rowcount

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def claim_keys(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[bool]:
        return [self.conn.execute(sql, row).rowcount == 1 for row in rows]

    def lock_customers(self, pks: Sequence[int]) -> None:
        """Nothing to do: ``BEGIN IMMEDIATE`` already holds the whole file's write lock."""


SYNCHRONOUS_ENV: Final = "BILLING_UI_SQLITE_SYNCHRONOUS"
SYNCHRONOUS_MODES: Final = ("FULL", "NORMAL")


def synchronous_mode(given: str | None = None) -> str:
    """``given``, else ``$BILLING_UI_SQLITE_SYNCHRONOUS``, else ``FULL``; refused unless it is
    one of :data:`SYNCHRONOUS_MODES` (the environment reaches every ``--workers`` process)."""
    mode = (given or os.environ.get(SYNCHRONOUS_ENV, "") or "FULL").strip().upper()
    if mode not in SYNCHRONOUS_MODES:
        raise StoreError(f"{SYNCHRONOUS_ENV} must be FULL or NORMAL, not {mode!r}")
    return mode


BUILD_DURING_COMMIT: Final = 64
"""A plain batch of at least this many events has its answer built during its COMMIT
(:meth:`SqliteStore.track_plain`); a smaller one after it (the hand-off to the helper
thread and back costs tens of microseconds)."""

T = TypeVar("T")

LOCK_POLL_S: Final = 0.0005
"""How often a writer tries again for the file's write lock that another process holds."""


class _WouldWait(Exception):
    """The write would have to wait for another writer (see ``SqliteStore._write``)."""


class SqliteStore:
    """The local server's database as one SQLite file. Thread-safe; one instance per process.

    ``synchronous``: ``FULL`` by default — in WAL mode each commit is fsynced before the
    answer goes out, so a track the server acknowledged survives a power loss, not only a
    crash of the process. ``NORMAL`` syncs at checkpoints only: a crash of the process still
    loses nothing, but a power loss may take the last commits. What FULL costs is measured by
    ``bench/ingest_durability.py`` and discussed in docs/architecture.md."""

    inline_reads = True  # a local file: tens of microseconds

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 10.0,
        synchronous: str | None = None,
        migrate: bool = True,
    ) -> None:
        """``migrate=False`` skips setting WAL mode and migrating (both persist in the
        file): for a process forked after another opened the same file, which then takes no
        write lock at start-up."""
        self.path = Path(path)
        self.synchronous = synchronous_mode(synchronous)
        self.location = str(self.path)
        self._busy_timeout_s = busy_timeout_s
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._answers: ThreadPoolExecutor | None = None
        try:
            self._writer = self._connect()
            if migrate:
                # Takes no lock on a file already in WAL mode.
                self._writer.execute("PRAGMA journal_mode = WAL")
                if not migrations.is_current("sqlite", _SqliteTx(self._writer).one):
                    self._migrate()
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
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")  # one of two literals
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _reader(self) -> _SqliteTx:
        tx: _SqliteTx | None = getattr(self._local, "tx", None)
        if tx is None:
            if self._closed:
                raise StoreError("the store is closed")
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.tx = tx = _SqliteTx(conn)
            with self._readers_lock:
                self._readers.append(conn)
        return tx

    @contextmanager
    def _write(self, *, wait: bool = True) -> Iterator[_SqliteTx]:
        """One write transaction: serialised in-process by the lock, across processes by
        SQLite's RESERVED lock (BEGIN IMMEDIATE). Rolled back on any exception, including a
        failed ``COMMIT`` (SQLite leaves the transaction open then: without the rollback the
        one writer connection would stay inside it and every later write would fail). With
        ``wait=False``, raises :class:`_WouldWait` at once instead of waiting for either."""
        if not self._write_lock.acquire(blocking=wait):
            raise _WouldWait
        try:
            conn = self._writer
            self._begin(conn, wait)
            try:
                yield _SqliteTx(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may have rolled back already (e.g. disk full)
                    conn.execute("ROLLBACK")
                raise
        finally:
            self._write_lock.release()

    def _begin(self, conn: sqlite3.Connection, wait: bool) -> None:
        """``BEGIN IMMEDIATE``, polling for the file's write lock every
        :data:`LOCK_POLL_S` while another process holds it, up to the busy timeout (then
        :class:`StoreBusyError`); with ``wait=False``, one try (:class:`_WouldWait`).

        Not SQLite's own busy handler: it sleeps 1, 2, 5, 10, 15, 20, 25 ms... between tries,
        so a process waiting behind another's batch (a few milliseconds) woke up to 3 ms
        after the lock was free; two server processes on one file then wrote little more
        than one (``bench/db_ceiling.py``, ``http_2_proc``)."""
        busy_ms = conn.execute("PRAGMA busy_timeout").fetchone()[0]  # as connect() set it
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            deadline = None
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:  # "database is locked"
                    if not wait:
                        raise _WouldWait from None
                    now = time.monotonic()
                    deadline = deadline or now + busy_ms / 1000
                    if now >= deadline or exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                        raise StoreBusyError(f"the billing database is busy: {exc}") from None
                time.sleep(LOCK_POLL_S)
        finally:  # back to the connection's own (for the statements inside the transaction)
            conn.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")

    def _migrate(self) -> None:
        with self._write() as tx:
            tx.run(migrations.META_TABLE)
            row = tx.one(migrations.READ_VERSION)
            current = int(row[0]) if row else 0
            migrations.migrate("sqlite", current, tx.run, str(self.path))

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
            if self._answers is not None:
                self._answers.shutdown()

    def ping(self) -> None:
        self._reader().all("SELECT 1 FROM meta LIMIT 1")

    # -- the port --
    def upsert_customer(
        self, customer_id: str, products: Sequence[str], status: str, now_us: int
    ) -> Customer:
        with self._write() as tx:
            return Q.upsert_customer(tx, customer_id, products, status, now_us)

    def get_customer(self, customer_id: str) -> Customer | None:
        return Q.get_customer(self._reader(), customer_id)

    def get_customers(self, customer_ids: Sequence[str]) -> dict[str, Customer]:
        return Q.get_customers(self._reader(), customer_ids)

    def track_many(
        self, items: Sequence[TrackItem], now_us: int, key_cutoff_us: int
    ) -> list[TrackOutcome]:
        with self._write() as tx:
            return Q.track_many(tx, items, now_us, key_cutoff_us)

    def track_plain(self, batch: PlainBatch, answer: Callable[[PlainOutcome], T]) -> T | None:
        """A batch of :data:`BUILD_DURING_COMMIT` events or more has ``answer`` built by a
        helper thread while this one runs COMMIT: the commit's page writes and fsync (about
        a fifth of a 1,000-event batch's time, ``bench/db_ceiling.py``) release the GIL, and
        the answer (a third of a megabyte of JSON) needs nothing the commit does. It is
        returned only once the commit succeeded; if the commit fails, it is dropped."""
        building: Future[T] | None = None
        try:
            with self._write() as tx:
                outcome = Q.track_plain(tx, batch)
                if len(batch.keys) >= BUILD_DURING_COMMIT:
                    building = self._builder().submit(answer, outcome)
        except Q.NotPlain:  # rolled back by _write
            return None
        return answer(outcome) if building is None else building.result()

    def _builder(self) -> ThreadPoolExecutor:
        """The helper thread of :meth:`track_plain` (started at the first large batch; the
        caller holds the write lock)."""
        if self._answers is None:
            self._answers = ThreadPoolExecutor(1, thread_name_prefix="billing-answer")
        return self._answers

    def track_now(
        self, items: Sequence[TrackItem], now_us: int, key_cutoff_us: int
    ) -> list[TrackOutcome] | None:
        """:meth:`track_many` if no thread of this process and no other process is writing.
        (A commit may run a WAL checkpoint: a few milliseconds every few hundred commits.)"""
        if self.synchronous == "FULL":
            return None  # each commit waits for the disk: never on the event loop
        try:
            with self._write(wait=False) as tx:
                return Q.track_many(tx, items, now_us, key_cutoff_us)
        except _WouldWait:
            return None

    def consumed(self, customer_pk: int, periods: Sequence[PeriodKey]) -> dict[str, int]:
        return Q.consumed(self._reader(), customer_pk, periods)

    def customer_usage(
        self, customer_id: str, periods: Sequence[PeriodKey], revoked_jti: str | None = None
    ) -> UsageRead:
        return Q.customer_usage(self._reader(), customer_id, periods, revoked_jti)

    async def customer_usage_async(
        self, customer_id: str, periods: Sequence[PeriodKey], revoked_jti: str | None = None
    ) -> UsageRead:
        """Inline: a local read takes tens of microseconds, less than any hop."""
        return self.customer_usage(customer_id, periods, revoked_jti)

    async def close_async(self) -> None:
        """Nothing: the loop's reader connection is closed with the store."""

    def hourly(
        self, customer_pk: int, feature_key: str, start_us: int, end_us: int
    ) -> list[HourBucket]:
        return Q.hourly(self._reader(), customer_pk, feature_key, start_us, end_us)

    def prune_idempotency_keys(self, cutoff_us: int) -> int:
        with self._write() as tx:
            return Q.prune_idempotency_keys(tx, cutoff_us)

    def revoke_token(self, jti: str, now_us: int, forget_before_us: int) -> None:
        with self._write() as tx:
            Q.revoke_token(tx, jti, now_us, forget_before_us)

    def is_revoked(self, jti: str) -> bool:
        return Q.is_revoked(self._reader(), jti)
