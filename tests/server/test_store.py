"""The stores' promises, checked against each database itself: reads use primary keys and
never the raw events; the schema is versioned and an old database is upgraded in place; a
writer blocked by another process gets a retryable refusal, never a half-write."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest

from billing_ui.server import migrations
from billing_ui.server import usage_sql as Q
from billing_ui.server.plans import load_plans
from billing_ui.server.postgres_store import PostgresStore
from billing_ui.server.service import BillingService, TrackCommand
from billing_ui.server.sqlite_store import SqliteStore
from billing_ui.server.store import (
    PeriodKey,
    StoreBusyError,
    StoreError,
    UsageStore,
    open_store,
)
from billing_ui.server.testing import count_events, fingerprint, query, running_server

from .conftest import T0, metric, track

V1_DB = Path(__file__).parent / "data" / "billing-v1.db"
"""Made by the first release's store.py (schema version 1): customer ``cus_v1`` on ``pro``
with 12.5 api_calls tracked at T0 - 1 h under keys ``v1-key-1``/``-2``, one revoked token."""

HOURLY = "SELECT 1 FROM usage_hourly WHERE customer_id = ? AND feature_key = ? " + (
    "AND hour_start_us >= ? AND hour_start_us < ? ORDER BY hour_start_us"
)
TWO_AGGREGATES = f"{Q.CONSUMED} UNION ALL {Q.CONSUMED}"
TWO_KEYS = (1, "api_calls", 0, 1, 1, "ai_tokens", 0, 1)
USAGE_READ = Q.usage_read_query(
    "x", [PeriodKey("api_calls", 0, 1), PeriodKey("ai_tokens", 0, 1)], revoked_jti="j"
)  # the metrics read: customer, two aggregates, a revocation
V1_TABLES = ("customers", "subscriptions", "usage_events", "usage_aggregates", "usage_hourly",
             "idempotency_keys", "revoked_tokens")  # fmt: skip


def _sqlite_plan(db: str, sql: str, args: tuple[object, ...]) -> str:
    rows = query(db, "EXPLAIN QUERY PLAN " + sql, args)
    return " | ".join(str(r[-1]) for r in rows)


def _postgres_plan(url: str, sql: str, args: tuple[object, ...]) -> str:
    """The plan when an index can serve the query at all (the tables are tiny here, so the
    planner would rightly scan them: what matters is that it does not have to)."""
    with psycopg.connect(url) as conn:
        conn.execute("SET enable_seqscan = off")
        rows = conn.execute("EXPLAIN " + sql.replace("?", "%s"), args).fetchall()
    return " | ".join(r[0] for r in rows)


def test_read_queries_search_by_primary_key(server, store_kind):
    if store_kind == "sqlite":
        plan = _sqlite_plan(server.database, TWO_AGGREGATES, TWO_KEYS)
        assert "SEARCH usage_aggregates USING PRIMARY KEY" in plan and "SCAN" not in plan
        plan = _sqlite_plan(server.database, HOURLY, (1, "api_calls", 0, 1))
        assert "SEARCH usage_hourly USING PRIMARY KEY" in plan and "SCAN" not in plan
        plan = _sqlite_plan(server.database, Q.CUSTOMERS.format(marks="?"), ("x",))
        assert "SCAN" not in plan.replace("USE TEMP B-TREE", "")
        plan = _sqlite_plan(server.database, *USAGE_READ)
        assert "SEARCH usage_aggregates USING PRIMARY KEY" in plan and "SCAN" not in plan
        assert "SEARCH revoked_tokens" in plan
        return
    plan = _postgres_plan(server.database, TWO_AGGREGATES, TWO_KEYS)
    assert "Index Scan using usage_aggregates_pkey" in plan and "Seq Scan" not in plan
    plan = _postgres_plan(server.database, HOURLY, (1, "api_calls", 0, 1))
    assert "usage_hourly_pkey" in plan and "Seq Scan" not in plan
    plan = _postgres_plan(server.database, Q.CUSTOMERS.format(marks="?"), ("x",))
    assert "customers_external_id_key" in plan and "Seq Scan" not in plan
    plan = _postgres_plan(server.database, *USAGE_READ)
    assert "usage_aggregates_pkey" in plan and "customers_external_id_key" in plan
    assert "revoked_tokens_pkey" in plan and "Seq Scan" not in plan


def test_a_customer_and_its_usage_are_read_together(server, api, customer):
    """``customer_usage`` (the metrics read, one round trip) gives what the two separate
    reads give: the customer, and its usage in each period asked (0 where none)."""
    cid = customer("pro")
    track(api, cid, "api_calls", 41.5)
    store = open_store(
        server.database if server.database.startswith("postgres") else Path(server.database)
    )
    try:
        pk = store.get_customer(cid)
        assert pk is not None
        periods = [PeriodKey(row[1], row[2], row[3]) for row in _aggregates(server.database)]
        periods.append(PeriodKey("ai_tokens", 0, 1))
        found, usage, revoked = store.customer_usage(cid, periods)
        assert not revoked
        assert found == pk
        assert usage == store.consumed(pk.pk, periods) == {"api_calls": 41_500_000, "ai_tokens": 0}
        assert store.customer_usage("nobody", periods) == (None, dict.fromkeys(usage, 0), False)
        assert store.customer_usage(cid, []) == (pk, {}, False)
        # The event loop's twin (PostgreSQL: its own async pool) reads the same, on one
        # loop and then on the next (the pool of a finished loop is not reused).
        store.revoke_token("tok_revoked", 1, 0)
        for jti, revoked in (("tok_revoked", True), ("tok_other", False)):
            expected = (pk, usage, revoked)
            assert store.customer_usage(cid, periods, jti) == expected
            assert asyncio.run(_read_async(store, cid, periods, jti)) == expected
    finally:
        store.close()


async def _read_async(
    store: UsageStore, cid: str, periods: list[PeriodKey], jti: str
) -> tuple[object, ...]:
    try:
        return await store.customer_usage_async(cid, periods, jti)
    finally:
        await store.close_async()


def _aggregates(database: str) -> list[tuple[object, ...]]:
    return query(
        database,
        "SELECT customer_id, feature_key, period_start_us, period_end_us FROM usage_aggregates",
    )


def test_reads_do_not_need_raw_events(server, api, customer):
    cid = customer("pro")
    track(api, cid, "api_calls", 41)
    track(api, cid, "api_calls", 1)
    query(server.database, "DELETE FROM usage_events")  # throw the raw events away
    assert server.count_events() == 0
    assert metric(api, cid, "api_calls")["consumed"] == 42
    check = api.get("/v1/usage/check", params={"customer_id": cid, "feature_key": "api_calls"})
    assert check.json()["usage"] == 42
    history = api.get("/v1/usage/history", params={"customer_id": cid, "feature_key": "api_calls"})
    assert history.json()["points"][-1]["cumulative"] == 42


def _location(database: dict[str, object]) -> str:
    return str(database.get("database_url") or database["db_path"])


def test_a_newer_schema_is_refused(database):
    where = _location(database)
    open_store(database.get("database_url") or Path(where)).close()
    query(where, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 99"):
        open_store(database.get("database_url") or Path(where))


def test_a_new_database_gets_every_step(database):
    where = _location(database)
    open_store(database.get("database_url") or Path(where)).close()
    version = query(where, migrations.READ_VERSION)
    assert version == [(str(migrations.LATEST),)] and migrations.LATEST >= 2


def _assert_upgraded(where: str) -> None:
    """``where`` holds the v1 data, now at the latest schema version, and serves it."""
    assert query(where, migrations.READ_VERSION) == [(str(migrations.LATEST),)]
    with running_server(**_kwargs(where)) as srv, srv.client() as api:
        srv.manual_clock.set(T0)
        assert metric(api, "cus_v1", "api_calls")["consumed"] == 12.5
        replay = track(api, "cus_v1", "api_calls", 5, idempotency_key="v1-key-1")
        assert replay.json()["duplicate"] is True  # the v1 key still protects its event
        assert track(api, "cus_v1", "api_calls", 1).json()["usage"]["consumed_units"] == 13.5
        assert srv.count_events("cus_v1") == 3


def _kwargs(where: str) -> dict[str, object]:
    return {"database_url": where} if where.startswith("postgresql") else {"db_path": where}


def test_a_database_made_by_the_first_release_is_upgraded_sqlite(tmp_path):
    db = tmp_path / "old.db"
    shutil.copy(V1_DB, db)
    assert query(str(db), migrations.READ_VERSION) == [("1",)]
    before = fingerprint(str(db))
    SqliteStore(db).close()
    assert fingerprint(str(db)) == before  # upgrading changed no data
    indexes = {r[0] for r in query(str(db), "SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"idempotency_keys_by_age", "revoked_tokens_by_age"} <= indexes
    plan = _sqlite_plan(str(db), "DELETE FROM idempotency_keys WHERE recorded_at_us <= ?", (1,))
    assert "idempotency_keys_by_age" in plan
    _assert_upgraded(str(db))


def test_a_version_1_database_is_upgraded_postgres(postgres_cluster):
    """PostgreSQL had no first release: build version 1 with its step, put data in, open."""
    url = postgres_cluster.create_database()
    with psycopg.connect(url) as conn:
        conn.execute(migrations.META_TABLE)
        for statement in migrations.STEPS[0].postgres:
            conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        for table in V1_TABLES:  # the first release's rows, copied as they are
            rows = query(str(V1_DB), f"SELECT * FROM {table}")
            marks = ", ".join(["%s"] * len(rows[0]))
            conn.cursor().executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        for table in ("customers", "usage_events"):  # ids were copied: move identities on
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                         f"(SELECT MAX(id) FROM {table}))")  # fmt: skip
    before = fingerprint(url)
    PostgresStore(url).close()
    assert fingerprint(url) == before
    indexes = {r[0] for r in query(url, "SELECT indexname FROM pg_indexes")}
    assert {"idempotency_keys_by_age", "revoked_tokens_by_age"} <= indexes
    _assert_upgraded(url)


def test_wal_mode_and_close_is_idempotent(tmp_path):
    store = SqliteStore(tmp_path / "b.db")
    assert query(str(store.path), "PRAGMA journal_mode") == [("wal",)]
    store.close()
    store.close()


def test_a_writer_in_another_process_gives_a_retryable_503_sqlite(tmp_path):
    """Another process holding the write lock past the busy timeout: 503 with Retry-After
    (which clients retry), nothing half-written, and all is well once it lets go."""
    with running_server(db_path=tmp_path / "b.db") as server, server.client() as api:
        cid = track_customer(server)
        server.store._writer.execute("PRAGMA busy_timeout = 50")  # type: ignore[attr-defined]
        before = server.fingerprint()
        other = sqlite3.connect(server.database, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            response = track(api, cid, "api_calls", 1)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "SYS_DATABASE_BUSY"
            assert response.headers["retry-after"] == "1"
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert server.fingerprint() == before
        assert track(api, cid, "api_calls", 1).status_code == 200


def track_customer(server) -> str:
    from billing_ui.server.testing import create_customer

    return create_customer(server, ["pro"])


def test_a_writer_in_another_process_gives_a_retryable_refusal_postgres(postgres_cluster):
    """Another connection holding the customer's row lock past the lock timeout: the track is
    refused as busy (the 503 of the SQLite test above), nothing half-written, and it goes
    through once the lock is released."""
    url = postgres_cluster.create_database()
    store = PostgresStore(url, lock_timeout_s=0.05)
    try:
        service = BillingService(store, load_plans(), _clock())
        service.upsert_customer("c1", ["pro"], "active")
        before = fingerprint(url)
        with psycopg.connect(url) as other, other.transaction():
            other.execute("SELECT 1 FROM customers WHERE external_id = 'c1' FOR UPDATE")
            with pytest.raises(StoreBusyError):
                service.track(TrackCommand("c1", "api_calls", 1, idempotency_key="k"))
        assert fingerprint(url) == before
        assert service.track(TrackCommand("c1", "api_calls", 1, idempotency_key="k"))
        assert count_events(url, "c1") == 1
    finally:
        store.close()


def test_an_unreachable_postgres_is_a_clear_error(postgres_cluster):
    url = postgres_cluster.url("no_such_database")
    with pytest.raises(StoreError, match="cannot open the billing database") as caught:
        PostgresStore(url, connect_timeout_s=1)
    assert postgres_cluster.password not in str(caught.value)


def test_processes_starting_together_migrate_once(postgres_cluster):
    """Eight stores opened at once on a new database (as eight workers would) all succeed:
    the advisory lock lets one apply the steps while the others wait, then see them done."""
    url = postgres_cluster.create_database()
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def open_one() -> None:
        barrier.wait()
        try:
            PostgresStore(url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert query(url, migrations.READ_VERSION) == [(str(migrations.LATEST),)]


def _clock():
    from billing_ui.server.clock import ManualClock

    return ManualClock(T0)


def test_a_batch_decides_each_key_as_if_its_items_came_one_by_one(database):
    """Keys are claimed in bulk, then decided in memory: a key whose first item was refused
    is taken over by a later item (which is then what replays), a key recorded earlier in
    the batch replays, and a different quantity under it is a reuse."""
    from billing_ui.server.store import TrackItem
    from billing_ui.server.store import TrackStatus as S

    where = database.get("database_url") or database["db_path"]
    store = open_store(where)
    try:
        pk = store.upsert_customer("c1", ["pro"], "active", 0).pk
        aggregate = (pk, "seats", 0, 10**15)

        def item(key: str, units: int) -> TrackItem:
            return (aggregate, units * 10**6, 0, key, None, 3 * 10**6)  # hard limit: 3

        batch = [item("a", 5), item("a", 1), item("a", 1), item("b", 2), item("b", 1)]
        outcomes = store.track_many(batch, now_us=100, key_cutoff_us=0)
        assert [o[0] for o in outcomes] == [
            S.QUOTA_EXCEEDED, S.RECORDED, S.REPLAYED, S.RECORDED, S.KEY_REUSED
        ]  # fmt: skip
        assert [o[4] for o in outcomes] == [m * 10**6 for m in (0, 1, 1, 3, 3)]  # consumed
        keys = query(str(where), "SELECT idempotency_key, quantity_micros FROM idempotency_keys")
        assert sorted(keys) == [("a", 10**6), ("b", 2 * 10**6)]
        again = store.track_many([item("a", 5), item("c", 1)], now_us=200, key_cutoff_us=0)
        assert [o[0] for o in again] == [S.KEY_REUSED, S.QUOTA_EXCEEDED]
        assert query(str(where), "SELECT COUNT(*) FROM idempotency_keys") == [(2,)]
        assert count_events(str(where)) == 2
    finally:
        store.close()
