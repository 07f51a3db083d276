"""Benchmark: how many usage events per second the local server records one event per request,
on SQLite and on PostgreSQL, and whether a hard limit holds across two server processes.

    python -m bench.server_ingest [--smoke]

For each store (SQLite in WAL mode on a temporary file; PostgreSQL in a throwaway cluster of
Debian's ``postgresql`` with fsync on and ``synchronous_commit`` off, SQLite's durability in
WAL mode), two ``python -m billing_ui.server`` processes share one database, rate limit off,
driven over loopback HTTP by httpx:

1. one event per request (``POST /v1/usage/track``) to process 1: one client, then four;
2. exactness: 50 concurrent tracks, alternating between the two processes, against a hard
   limit of 10: ``*_hard_limit_accepted`` must be exactly 10 (and the database agrees).

Every event carries its own idempotency key and goes to one of 100 customers (10 at smoke
size), so each write does the full work. Request bodies are encoded before the clock starts.
Batched ingest, with one and two processes, against the database's own ceiling is
``bench/db_ceiling.py``; one event per request against a bare endpoint on the same HTTP stack
is ``bench/http_ceiling.py``.
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench._harness import cli, result
from bench.server_process import STORES, databases, server_process
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


def _event(n: int, tag: str, customers: list[str]) -> dict[str, object]:
    return {
        "customer_id": customers[n % len(customers)],
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
        customers = CUSTOMERS[: config["customers"]]
        urls = [stack.enter_context(server_process(database, "--plans", str(plans)))
                for _ in range(2)]  # fmt: skip
        with httpx.Client(base_url=urls[0], headers=HEADERS) as c:
            for cid in customers:
                c.put(f"/v1/customers/{cid}", json={"products": ["bulk"]}).raise_for_status()
        n = config["single_events"]
        for clients in (1, 4):
            bodies = [json.dumps(_event(i, f"s{clients}", customers)).encode() for i in range(n)]
            _post_all(urls[0], "/v1/usage/track", bodies[: n // 10])  # warm up
            parts = [(urls[0], "/v1/usage/track", bodies[n // 10 + i :: clients])
                     for i in range(clients)]  # fmt: skip
            figures[f"{kind}_single_{clients}_clients_events_per_s"] = round(
                (n - n // 10) / _timed(parts)
            )
        figures[f"{kind}_hard_limit_accepted"] = hard_limit_accepted(urls)
        (row,) = query(database, "SELECT COUNT(*) FROM usage_events WHERE feature_key = 'seats'")
        assert row[0] == figures[f"{kind}_hard_limit_accepted"]
    return figures


def run(*, smoke: bool = False) -> dict[str, object]:
    config = {
        "single_events": 40 if smoke else 5_000,
        "customers": 10 if smoke else len(CUSTOMERS),  # each one a PUT before the clock
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
    goals: dict[str, str] = {}
    checks: dict[str, bool] = {}
    for kind in STORES:
        name = f"{kind}_hard_limit_accepted"
        goals[name] = f"== {HARD_LIMIT}"
        checks[name] = figures[name] == HARD_LIMIT
    return result("server_ingest", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
