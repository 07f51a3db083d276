"""The local server's SQLite durability: ``synchronous=FULL`` in WAL mode by default (an
acknowledged track survives a power loss), ``NORMAL`` when the operator chooses it
(``BILLING_UI_SQLITE_SYNCHRONOUS``), anything else refused with the variable's name."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from billing_ui.server.sqlite_store import SYNCHRONOUS_ENV, SqliteStore
from billing_ui.server.store import StoreError, open_store

FULL, NORMAL = 2, 1  # PRAGMA synchronous's answers


def modes(store: SqliteStore) -> tuple[str, int]:
    journal = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    return journal, store._writer.execute("PRAGMA synchronous").fetchone()[0]


@pytest.mark.parametrize(("env", "expected"), [(None, FULL), ("normal", NORMAL)])
def test_billing_data_is_wal_and_synchronous_full_unless_the_operator_says_normal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str | None, expected: int
) -> None:
    if env is None:
        monkeypatch.delenv(SYNCHRONOUS_ENV, raising=False)
    else:
        monkeypatch.setenv(SYNCHRONOUS_ENV, env)
    store = open_store(tmp_path / "b.db")
    assert isinstance(store, SqliteStore)
    try:
        assert modes(store) == ("wal", expected)
    finally:
        store.close()


def test_another_mode_is_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SYNCHRONOUS_ENV, "OFF")
    with pytest.raises(StoreError, match=f"{SYNCHRONOUS_ENV} must be FULL or NORMAL"):
        open_store(tmp_path / "b.db")


def test_a_failed_commit_is_rolled_back_and_the_store_keeps_writing(tmp_path: Path) -> None:
    """A ``COMMIT`` that fails leaves SQLite's transaction open. The writer connection must not
    stay inside it, or every later write of the process fails as "busy". A real SQLite fault
    on demand: with foreign keys deferred, a dangling reference is refused at ``COMMIT``."""
    store = SqliteStore(tmp_path / "b.db")
    try:
        dangling = (
            "INSERT INTO subscriptions (customer_id, product_key, status, position,"
            " granted_at_us) VALUES (424242, 'pro', 'active', 0, 0)"
        )
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), store._write() as tx:
            tx.run("PRAGMA defer_foreign_keys = ON")
            tx.run(dangling)
        assert not store._writer.in_transaction
        customer = store.upsert_customer("after_failed_commit", ["pro"], "active", 1)
        assert store.get_customer("after_failed_commit") == customer
    finally:
        store.close()
