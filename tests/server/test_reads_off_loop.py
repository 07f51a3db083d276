"""PostgreSQL reads run off the event loop (``server/reads.py``): a read stuck behind a lock
that another connection holds does not hold up the other requests of the same server process.
(SQLite reads run inline by design: a local file, tens of microseconds.)"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg

from billing_ui.server.testing import create_customer, mint_session_token, running_server

WAITING_ON_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
    "AND query LIKE '%usage_aggregates%'"
)


def test_a_postgres_read_stuck_on_a_lock_does_not_stall_the_server(postgres_cluster):
    url = postgres_cluster.create_database()
    try:
        with running_server(database_url=url) as server, ThreadPoolExecutor(1) as pool:
            cid = create_customer(server, ["pro"])
            with psycopg.connect(url) as blocker:  # a transaction until the block ends
                blocker.execute("LOCK TABLE usage_aggregates IN ACCESS EXCLUSIVE MODE")
                stuck = pool.submit(
                    httpx.get,
                    f"{server.base_url}/v1/usage/metrics",
                    params={"customer_id": cid},
                    headers=server.auth(),
                    timeout=60,
                )
                deadline = time.monotonic() + 30
                with psycopg.connect(url, autocommit=True) as watcher:
                    while watcher.execute(WAITING_ON_A_LOCK).fetchone() != (1,):
                        assert time.monotonic() < deadline, "the read never reached the lock"
                        time.sleep(0.02)
                started = time.monotonic()
                token = mint_session_token(server, cid)  # an async route, on the event loop
                answered_in = time.monotonic() - started
                assert token and not stuck.done()
                assert answered_in < 2.0, answered_in
                blocker.rollback()
            assert stuck.result(timeout=30).status_code == 200
    finally:
        postgres_cluster.drop_database(url)
