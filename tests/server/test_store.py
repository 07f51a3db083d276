"""The store's promises, checked against SQLite itself: reads use primary keys and never the
raw events; the schema is versioned."""

from __future__ import annotations

import sqlite3

import pytest

from billing_ui.server import store as S
from billing_ui.server.store import Store, StoreError

from .conftest import metric, track


def _plan(db, sql: str, args: tuple) -> str:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
    return " | ".join(r[-1] for r in rows)


def test_read_queries_search_by_primary_key(server):
    db = server.store.path
    plan = _plan(db, S._CONSUMED, (1, "api_calls", 0, 1))
    assert "SEARCH usage_aggregates USING PRIMARY KEY" in plan and "SCAN" not in plan
    plan = _plan(
        db,
        "SELECT hour_start_us, quantity_micros FROM usage_hourly WHERE customer_id = ? "
        "AND feature_key = ? AND hour_start_us >= ? AND hour_start_us < ? ORDER BY hour_start_us",
        (1, "api_calls", 0, 1),
    )
    assert "SEARCH usage_hourly USING PRIMARY KEY" in plan and "SCAN" not in plan
    plan = _plan(
        db,
        "SELECT c.id FROM customers c LEFT JOIN subscriptions s ON s.customer_id = c.id "
        "WHERE c.external_id = ? ORDER BY s.position",
        ("x",),
    )
    assert "SCAN" not in plan.replace("USE TEMP B-TREE", "")


def test_reads_do_not_need_raw_events(server, api, customer):
    cid = customer("pro")
    track(api, cid, "api_calls", 41)
    track(api, cid, "api_calls", 1)
    with sqlite3.connect(server.store.path) as conn:  # throw the raw events away
        conn.execute("DELETE FROM usage_events")
    assert server.store.count_events() == 0
    assert metric(api, cid, "api_calls")["consumed"] == 42
    check = api.get("/v1/usage/check", params={"customer_id": cid, "feature_key": "api_calls"})
    assert check.json()["usage"] == 42
    history = api.get("/v1/usage/history", params={"customer_id": cid, "feature_key": "api_calls"})
    assert history.json()["points"][-1]["cumulative"] == 42


def test_schema_version_is_checked(tmp_path):
    db = tmp_path / "b.db"
    Store(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99"):
        Store(db)


def test_wal_mode_and_close_is_idempotent(tmp_path):
    store = Store(tmp_path / "b.db")
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    store.close()


def test_a_writer_in_another_process_gives_a_retryable_503(server, api, customer):
    """Another process holding the write lock past the busy timeout: 503 with Retry-After
    (which clients retry), nothing half-written, and all is well once it lets go."""
    cid = customer("pro")
    server.store._writer.execute("PRAGMA busy_timeout = 50")  # don't wait 10 s in a test
    before = server.store.fingerprint()
    other = sqlite3.connect(server.store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        response = track(api, cid, "api_calls", 1)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "SYS_DATABASE_BUSY"
        assert response.headers["retry-after"] == "1"
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert server.store.fingerprint() == before
    assert track(api, cid, "api_calls", 1).status_code == 200
