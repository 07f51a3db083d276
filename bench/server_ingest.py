"""Benchmark: how many usage events per second the local server records, on SQLite and on
PostgreSQL, with one and two server processes, against each database's own ceiling.

    python -m bench.server_ingest [--smoke]

For each store (SQLite in WAL mode on a temporary file; PostgreSQL in a throwaway cluster of
Debian's ``postgresql`` with fsync on and ``synchronous_commit`` off, SQLite's durability in
WAL mode), two ``python -m billing_ui.server`` processes share one database, rate limit off,
driven over loopback HTTP by httpx:

1. one event per request (``POST /v1/usage/track``) to process 1: one client, then four;
2. ``POST /v1/usage/track-batch`` with 1,000 events per request: one client to process 1
   (1 process), then one client to each process at once (2 processes);
3. the ceiling: the same statements (key claim, aggregate upsert, hourly upsert, event
   insert) for the same number of events, sent straight to the database in one transaction
   with ``executemany``: no HTTP, no validation, no limit check. ``*_vs_ceiling`` is the
   server's rate over that; the goal is >= 0.5;
4. exactness: 50 concurrent tracks, alternating between the two processes, against a hard
   limit of 10: ``*_hard_limit_accepted`` must be exactly 10.

Every event carries its own idempotency key and goes to one of 100 customers, so each write
does the full work. Request bodies are encoded before the clock starts.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench._harness import cli, result
from bench.server_process import STORES, databases, server_process
from billing_ui.server import usage_sql as Q
from billing_ui.server.store import open_store
from billing_ui.server.testing import post_at_once, query

KEY = "sk_test_billing_ui_local"
HEADERS = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
CUSTOMERS = [f"bench_{i:03d}" for i in range(100)]
HARD_LIMIT = 10
PLANS = """
[features.api_calls]
title = "API calls"
type = "usage_quota"
reset = "month"

[features.seats]
title = "Seats"
type = "usage_quota"
reset = "never"
hard_limit = true

[products.bulk]
name = "Bulk"
[products.bulk.features]
api_calls = { unlimited = true }

[products.tight]
name = "Tight"
[products.tight.features]
seats = { limit = 10 }
"""


def _event(n: int, tag: str) -> dict[str, object]:
    return {
        "customer_id": CUSTOMERS[n % len(CUSTOMERS)],
        "feature_key": "api_calls",
        "quantity": 1,
        "idempotency_key": f"{tag}-{n}",
    }


def _post_all(url: str, path: str, bodies: list[bytes]) -> None:
    with httpx.Client(base_url=url, headers=HEADERS, timeout=120) as client:
        for body in bodies:
            response = client.post(path, content=body)
            assert response.status_code == 200, response.text


def _timed(work: list[tuple[str, str, list[bytes]]]) -> float:
    """Seconds for every ``(url, path, bodies)`` to be posted, each by its own client."""
    start = time.perf_counter()
    with ThreadPoolExecutor(len(work)) as pool:
        list(pool.map(lambda w: _post_all(*w), work))
    return time.perf_counter() - start


def _batches(tag: str, batches: int) -> list[bytes]:
    return [
        json.dumps({"events": [_event(b * 1000 + i, tag) for i in range(1000)]}).encode()
        for b in range(batches)
    ]


def ceiling(database: str, events: int) -> float:
    """Events per second for the write statements alone, one transaction, no HTTP."""
    store = open_store(database if database.startswith("postgres") else Path(database))
    try:
        pks = [store.upsert_customer(c, ["bulk"], "active", 0).pk for c in CUSTOMERS]
    finally:
        store.close()
    now = int(time.time() * 1e6)
    period = (0, 2**60)
    keys = [
        (pks[n % 100], f"ceil-{n}", "api_calls", 1_000_000, now, now - 1) for n in range(events)
    ]
    aggs = [(pk, "api_calls", *period, events // 100 * 1_000_000, events // 100, now) for pk in pks]
    hours = [(pk, "api_calls", now // 3_600_000_000, events // 100 * 1_000_000, events // 100)
             for pk in pks]  # fmt: skip
    rows = [(pks[n % 100], "api_calls", 1_000_000, now, f"ceil-{n}", None) for n in range(events)]
    work = [(Q.CLAIM_KEY, keys), (Q.ADD_TO_AGGREGATE, aggs), (Q.ADD_TO_HOUR, hours),
            (Q.INSERT_EVENT, rows)]  # fmt: skip
    if database.startswith("postgres"):
        import psycopg

        with psycopg.connect(database) as conn:
            start = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur:
                for sql, args in work:
                    cur.executemany(sql.replace("?", "%s"), args)
            return events / (time.perf_counter() - start)
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = NORMAL")  # as the store (the file is in WAL mode)
        conn.execute("PRAGMA foreign_keys = ON")
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        for sql, args in work:
            conn.executemany(sql, args)
        conn.execute("COMMIT")
        return events / (time.perf_counter() - start)
    finally:
        conn.close()


def hard_limit_accepted(urls: list[str]) -> int:
    """Of 50 concurrent tracks of 1 against a hard limit of 10 (alternating processes), how
    many were accepted; also checks the database agrees."""
    cid = "tight_customer"
    httpx.put(f"{urls[0]}/v1/customers/{cid}", json={"products": ["tight"]}, headers=HEADERS)
    body = {"customer_id": cid, "feature_key": "seats", "quantity": 1}
    responses = post_at_once([(f"{urls[i % 2]}/v1/usage/track", body) for i in range(50)], HEADERS)
    assert all(r.status_code in (200, 400) for r in responses), [r.text for r in responses]
    return sum(r.status_code == 200 for r in responses)


def measure(kind: str, folder: Path, plans: Path, config: dict[str, Any]) -> dict[str, float]:
    figures: dict[str, float] = {}
    with databases(kind, folder) as new_database, ExitStack() as stack:
        database = new_database()
        urls = [stack.enter_context(server_process(database, "--plans", str(plans)))
                for _ in range(2)]  # fmt: skip
        with httpx.Client(base_url=urls[0], headers=HEADERS) as c:
            for cid in CUSTOMERS:
                c.put(f"/v1/customers/{cid}", json={"products": ["bulk"]}).raise_for_status()
        n = config["single_events"]
        for clients in (1, 4):
            bodies = [json.dumps(_event(i, f"s{clients}")).encode() for i in range(n)]
            _post_all(urls[0], "/v1/usage/track", bodies[: n // 10])  # warm up
            parts = [(urls[0], "/v1/usage/track", bodies[n // 10 + i :: clients])
                     for i in range(clients)]  # fmt: skip
            figures[f"{kind}_single_{clients}_clients_events_per_s"] = round(
                (n - n // 10) / _timed(parts)
            )
        batches = config["batches_of_1000"]
        for procs in (1, 2):
            rates = []
            for r in range(config["repeat"]):
                bodies = _batches(f"b{procs}r{r}", batches)
                work = [(urls[p], "/v1/usage/track-batch", bodies[p::procs]) for p in range(procs)]
                rates.append(batches * 1000 / _timed(work))
            figures[f"{kind}_batch_{procs}_proc_events_per_s"] = round(
                sorted(rates)[len(rates) // 2]
            )
        figures[f"{kind}_hard_limit_accepted"] = hard_limit_accepted(urls)
        (row,) = query(database, "SELECT COUNT(*) FROM usage_events WHERE feature_key = 'seats'")
        assert row[0] == figures[f"{kind}_hard_limit_accepted"]
        figures[f"{kind}_ceiling_events_per_s"] = round(ceiling(new_database(), batches * 1000))
    for procs in (1, 2):
        figures[f"{kind}_batch_{procs}_proc_vs_ceiling"] = round(
            figures[f"{kind}_batch_{procs}_proc_events_per_s"]
            / figures[f"{kind}_ceiling_events_per_s"],
            2,
        )
    return figures


def run(*, smoke: bool = False) -> dict[str, object]:
    config = {
        "single_events": 40 if smoke else 5_000,
        "batches_of_1000": 2 if smoke else 40,
        "repeat": 1 if smoke else 3,
        "customers": len(CUSTOMERS),
        "hard_limit": HARD_LIMIT,
        "concurrent_tracks": 50,
    }
    print(f"server_ingest: {config}", flush=True)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        plans = Path(tmp) / "plans.toml"
        plans.write_text(PLANS)
        for kind in STORES:
            figures |= measure(kind, Path(tmp), plans, config)
    goals: dict[str, str] = {"sqlite_batch_1_proc_events_per_s": ">= 20,000 events/s"}
    checks = {
        "sqlite_batch_1_proc_events_per_s": figures["sqlite_batch_1_proc_events_per_s"] >= 20_000
    }
    for kind in STORES:
        for procs in (1, 2):
            name = f"{kind}_batch_{procs}_proc_vs_ceiling"
            goals[name] = ">= 0.5"
            checks[name] = figures[name] >= 0.5
        name = f"{kind}_hard_limit_accepted"
        goals[name] = f"== {HARD_LIMIT}"
        checks[name] = figures[name] == HARD_LIMIT
    return result("server_ingest", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
