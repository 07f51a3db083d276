"""A server process opening a database whose schema is current takes no migration lock.

Two server processes started separately used to migrate each under the lock: on SQLite the
file's write lock (queued behind every write of the processes already running, and refused as
busy past the busy timeout), on PostgreSQL the advisory lock. Here another real process holds
that lock, as a running server mid-write (or mid-migration) does, while this one opens the
database: a current schema opens at once; a schema missing a step still waits for the lock."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from billing_ui.server import migrations
from billing_ui.server.postgres_store import _MIGRATION_LOCK, PostgresStore
from billing_ui.server.sqlite_store import SqliteStore
from billing_ui.server.store import StoreBusyError
from billing_ui.server.testing import query

V1_DB = Path(__file__).parent / "data" / "billing-v1.db"
WAIT_S = 2.0
"""The opening store's busy / lock timeout: a store that waits for the lock fails after it."""

HOLD_SQLITE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")  # the file's write lock, as a writing server holds it
print("held", flush=True)
sys.stdin.read()
"""
HOLD_POSTGRES = """
import psycopg, sys
conn = psycopg.connect(sys.argv[1], autocommit=True)
conn.execute("SELECT pg_advisory_lock(%s)", (int(sys.argv[2]),))  # as a migrating server
print("held", flush=True)
sys.stdin.read()
"""


@contextmanager
def lock_held(script: str, *args: str) -> Iterator[None]:
    """Another process holds the lock until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def _timed_open(open_store: object) -> float:
    started = time.monotonic()
    open_store()  # type: ignore[operator]
    return time.monotonic() - started


def test_sqlite_current_schema_opens_while_another_process_writes(tmp_path: Path) -> None:
    db = tmp_path / "billing.db"
    SqliteStore(db).close()  # the first process made and migrated it
    with lock_held(HOLD_SQLITE, str(db)):
        took = _timed_open(lambda: SqliteStore(db, busy_timeout_s=WAIT_S).close())
    assert took < WAIT_S / 2, f"opening waited {took:.2f} s for the write lock"


def test_sqlite_missing_step_still_waits_for_the_write_lock(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(V1_DB, db)  # schema version 1: a step to apply
    with lock_held(HOLD_SQLITE, str(db)), pytest.raises(StoreBusyError):
        SqliteStore(db, busy_timeout_s=WAIT_S)
    SqliteStore(db).close()  # the lock released: migrated
    assert query(str(db), migrations.READ_VERSION) == [(str(migrations.LATEST),)]


def test_postgres_current_schema_opens_without_the_advisory_lock(postgres_cluster) -> None:
    url = postgres_cluster.create_database()
    PostgresStore(url).close()
    with lock_held(HOLD_POSTGRES, url, str(_MIGRATION_LOCK)):
        took = _timed_open(lambda: PostgresStore(url, lock_timeout_s=WAIT_S).close())
    assert took < WAIT_S / 2 + 1, f"opening waited {took:.2f} s for the advisory lock"


def test_postgres_new_database_still_migrates_under_the_lock(postgres_cluster) -> None:
    url = postgres_cluster.create_database()
    held = lock_held(HOLD_POSTGRES, url, str(_MIGRATION_LOCK))
    with held, pytest.raises(StoreBusyError, match="lock timeout"):
        PostgresStore(url, lock_timeout_s=WAIT_S)
    PostgresStore(url).close()
    assert query(url, migrations.READ_VERSION) == [(str(migrations.LATEST),)]
