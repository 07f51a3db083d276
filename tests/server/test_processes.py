"""The guarantees between processes: two real ``python -m billing_ui.server`` processes on
one database (a SQLite file, or a PostgreSQL database through ``--database-url``), driven
concurrently over loopback HTTP. Each check runs twice: ``[processes]``, two servers on their
own ports, requests alternating between them; ``[workers]``, one server started with
``--workers 2``, two forked workers accepting on one port.

* a hard limit of 10 under 50 concurrent tracks accepts exactly 10, whichever process each
  request reaches;
* one idempotency key sent 20 times at once to both processes counts once;
* aggregates and hourly buckets move in the transaction of their events: a reader never sees
  one without the other, however the writes interleave;
* bad input gets a 4xx from either process, even mixed into concurrent good traffic.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing_ui.core._constants import LOCAL_SECRET_KEY
from billing_ui.server.store import UsageStore, is_postgres_url, open_store
from billing_ui.server.testing import count_events, post_at_once, query, server_process

from .conftest import new_database

PLANS = """
[features.calls]
title = "Calls"
type = "usage_quota"
reset = "month"
hard_limit = true

[features.events]
title = "Events"
type = "usage_quota"
reset = "month"

[products.tight]
name = "Tight"
[products.tight.features]
calls = { limit = 10 }
events = { limit = 1000 }
"""
HEADERS = {"Authorization": f"Bearer {LOCAL_SECRET_KEY}"}
TRACK = "/v1/usage/track"


@pytest.fixture(scope="module", params=["processes", "workers"])
def two_servers(
    request: pytest.FixtureRequest, store_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, list[str]]]:
    """(database, [url of process 1, url of process 2]): two servers, or the one URL of a
    server with two workers, twice."""
    folder = tmp_path_factory.mktemp("procs")
    plans = folder / "plans.toml"
    plans.write_text(PLANS)
    db = new_database(request, store_kind, folder)
    database = str(db.get("database_url") or db["db_path"])
    with ExitStack() as stack:
        if store_kind == "sqlite":  # create the file first: two processes, one creator
            from billing_ui.server.sqlite_store import SqliteStore

            SqliteStore(Path(database)).close()
        args = ["--no-seed", "--plans", str(plans)]
        if request.param == "workers":
            served = stack.enter_context(
                server_process(db_path=database, extra_args=[*args, "--workers", "2"])
            )
            assert len(_children(served.process.pid)) == 2
            yield database, [served.base_url] * 2
            return
        urls = [
            stack.enter_context(server_process(db_path=database, extra_args=args)).base_url
            for _ in range(2)
        ]
        yield database, urls


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_workers_serve_one_port_and_stop_with_their_parent(database: dict[str, Any]):
    """``--workers 2``: the parent says it runs only once both workers serve, so right after
    its line, with either worker paused, the other answers every request on the one port; and
    stopping the parent stops both. (Before the parent waited, a worker paused right after the
    line could be mid start-up, once holding the write lock the other needed: issue 13.)"""
    location = database.get("database_url") or database["db_path"]
    with server_process(db_path=location, extra_args=["--workers", "2"]) as served:
        workers = _children(served.process.pid)
        assert len(workers) == 2
        for paused in workers:
            os.kill(paused, signal.SIGSTOP)  # the other worker must take every request
            try:
                for _ in range(3):
                    assert httpx.get(f"{served.base_url}/health", timeout=10).status_code == 200
            finally:
                os.kill(paused, signal.SIGCONT)
        parent = served.process
    assert parent.returncode is not None
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def test_a_worker_opens_its_store_while_another_process_holds_the_schema_lock(
    database: dict[str, Any],
):
    """A worker opens the database its parent already set up with ``migrate=False``, which
    takes no lock: it opens and answers while another process holds the lock a migration
    needs (a paused worker could hold it). A migrating open of that current schema takes no
    lock either (it reads the version first); one with a step missing still waits and fails
    (test_migration_lock.py)."""
    location = str(database.get("database_url") or database["db_path"])
    open_store(location).close()  # the parent: creates and migrates
    with _holding_schema_lock(location):
        for migrate in (False, True):
            store = _open(location, migrate=migrate)
            try:
                store.ping()
            finally:
                store.close()


def _open(location: str, *, migrate: bool) -> UsageStore:
    """The store with a short lock wait (0.5 s), so the migrating open fails fast."""
    if is_postgres_url(location):
        from billing_ui.server.postgres_store import PostgresStore

        return PostgresStore(location, lock_timeout_s=0.5, migrate=migrate)
    from billing_ui.server.sqlite_store import SqliteStore

    return SqliteStore(location, busy_timeout_s=0.5, migrate=migrate)


@contextmanager
def _holding_schema_lock(location: str) -> Iterator[None]:
    """Another connection holds what a migration takes: SQLite's write lock, PostgreSQL's
    migration advisory lock."""
    if is_postgres_url(location):
        import psycopg

        from billing_ui.server.postgres_store import _MIGRATION_LOCK

        with psycopg.connect(location, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            yield
        return
    conn = sqlite3.connect(location, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _customer(url: str) -> str:
    cid = f"cus_{uuid.uuid4().hex[:10]}"
    httpx.put(
        f"{url}/v1/customers/{cid}", json={"products": ["tight"]}, headers=HEADERS
    ).raise_for_status()
    return cid


def test_a_hard_limit_of_10_accepts_exactly_10_of_50_concurrent_tracks(two_servers):
    database, urls = two_servers
    cid = _customer(urls[0])
    body = {"customer_id": cid, "feature_key": "calls", "quantity": 1}
    responses = post_at_once([(urls[i % 2] + TRACK, body) for i in range(50)], HEADERS)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 10 + [400] * 40, statuses
    refused = [r.json()["error"]["message"] for r in responses if r.status_code == 400]
    assert set(refused) == {"quota_exceeded"}
    assert count_events(database, cid) == 10
    consumed = query(
        database,
        "SELECT a.consumed_micros FROM usage_aggregates a JOIN customers c "
        "ON c.id = a.customer_id WHERE c.external_id = ?",
        (cid,),
    )
    assert consumed == [(10_000_000,)]


def test_one_key_sent_20_times_to_two_processes_counts_once(two_servers):
    database, urls = two_servers
    cid = _customer(urls[1])
    body = {"customer_id": cid, "feature_key": "events", "quantity": 3, "idempotency_key": "k"}
    responses = post_at_once([(urls[i % 2] + TRACK, body) for i in range(20)], HEADERS)
    assert [r.status_code for r in responses] == [200] * 20
    duplicates = sorted(r.json()["duplicate"] for r in responses)
    assert duplicates == [False] + [True] * 19
    assert {r.json()["usage"]["consumed_units"] for r in responses} == {3}
    assert count_events(database, cid) == 1


CONSISTENT = """
SELECT
  (SELECT COALESCE(SUM(quantity_micros), 0) FROM usage_events WHERE customer_id = c.id),
  (SELECT COALESCE(SUM(consumed_micros), 0) FROM usage_aggregates WHERE customer_id = c.id),
  (SELECT COALESCE(SUM(quantity_micros), 0) FROM usage_hourly WHERE customer_id = c.id)
FROM customers c WHERE c.external_id = ?
"""


def test_aggregates_commit_with_their_events(two_servers):
    """Two processes write batches while a third connection reads the three sums in single
    statements (one snapshot each): they are equal at every read, not only at the end."""
    database, urls = two_servers
    cid = _customer(urls[0])
    done = threading.Event()
    snapshots: list[tuple[int, int, int]] = []

    def read_until_done() -> None:
        while not done.is_set() or not snapshots:
            (row,) = query(database, CONSISTENT, (cid,))
            snapshots.append(row)

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        calls = [
            (
                urls[b % 2] + "/v1/usage/track-batch",
                {
                    "events": [
                        {
                            "customer_id": cid,
                            "feature_key": "events",
                            "quantity": 1 + i % 3,
                            "idempotency_key": f"b{b}-{i}",
                        }
                        for i in range(20)
                    ]
                },
            )
            for b in range(10)
        ]
        responses = post_at_once(calls, HEADERS)
    finally:
        done.set()
        reader.join()
    assert all(r.status_code == 200 for r in responses)
    assert len(snapshots) > 1
    torn = [s for s in snapshots if len(set(s)) != 1]
    assert torn == []
    total = sum(1 + i % 3 for i in range(20)) * 10 * 1_000_000
    assert query(database, CONSISTENT, (cid,)) == [(total, total, total)]


def test_bad_input_mixed_into_concurrent_traffic_is_4xx_on_both_processes(two_servers):
    database, urls = two_servers
    cid = _customer(urls[0])
    good = {"customer_id": cid, "feature_key": "events", "quantity": 1}
    bad: list[dict[str, Any]] = [
        {**good, "quantity": 1e300},
        {**good, "quantity": -1},
        {**good, "quantity": "1"},
        {**good, "customer_id": "x\u0000y"},
        {**good, "feature_key": "no such feature"},
        {**good, "idempotency_key": "k" * 10_000},
        {**good, "metadata": {"nul": "\u0000", "deep": [[[[[[[[[[1]]]]]]]]]]}},
        {"events": "not a list"},
        {**good, "customer_id": "cus_nobody"},
    ]
    calls = [(urls[i % 2] + TRACK, body) for i, body in enumerate(bad + [good] * 9)]
    responses = post_at_once(calls, HEADERS)
    statuses = [r.status_code for r in responses]
    assert all(s < 500 for s in statuses), statuses
    assert statuses[len(bad) :] == [200] * 9
    stored = count_events(database, cid)
    assert stored == 9 + sum(s == 200 for s in statuses[: len(bad)])
