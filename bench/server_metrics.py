"""Benchmark: usage-metrics read latency with 1,000,000 stored events, on SQLite and on
PostgreSQL.

    python -m bench.server_metrics [--smoke]

For each store (a SQLite file; a database of a throwaway PostgreSQL cluster):

1. Bulk-load the events *through the store* (``BillingService.track_batch``, batches of
   5,000 — the API's write path without HTTP): 1,000 customers on the ``pro`` plan, four
   metered features (monthly, weekly, daily resets), instants spread over the last 90 days,
   so there are many past periods too.
2. Start ``python -m billing_ui.server`` on it and time ``GET /v1/usage/metrics`` for random
   customers over loopback HTTP with one keep-alive httpx client (p50/p90/p99/max), then the
   session-token endpoint, then ``BillingService.metrics`` in-process (no HTTP: the baseline).

Reads never scan raw events (per-period aggregates, read in one query per request), so
latency should not depend on the event count. Target: p99 <= 5 ms on both stores.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench._harness import cli, result
from bench.server_process import STORES, databases, server_process
from billing_ui.server.clock import SystemClock
from billing_ui.server.plans import load_plans
from billing_ui.server.service import BillingService, TrackCommand
from billing_ui.server.store import open_store
from billing_ui.server.testing import count_events

KEY = "sk_test_billing_ui_local"
FEATURES = ("api_calls", "ai_tokens", "report_exports", "storage_gb")


def customer_ids(n: int) -> list[str]:
    return [f"m_{i:04d}" for i in range(n)]


def load(database: str, events: int, customers: list[str]) -> float:
    store = open_store(database if database.startswith("postgres") else Path(database))
    try:
        service = BillingService(store, load_plans(), SystemClock())
        for cid in customers:
            service.upsert_customer(cid, ["pro"], "active")
        rng = random.Random(7)
        now = datetime.now(UTC)
        start = time.perf_counter()
        chunk = 5000
        for n in range(0, events, chunk):
            at = now - timedelta(days=90) * (1 - n / events)  # oldest first
            cmds = [
                TrackCommand(rng.choice(customers), FEATURES[i % 4], rng.randint(1, 3))
                for i in range(min(chunk, events - n))
            ]
            service.track_batch(cmds, now=at, rate_limited=False)
        elapsed = time.perf_counter() - start
        assert count_events(database) == events
        return elapsed
    finally:
        store.close()


def percentiles(prefix: str, samples: list[float]) -> dict[str, float]:
    """p50, p90, p95, p99 and max of ``samples`` (seconds), in milliseconds, as named figures."""
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=100)
    return {
        f"{prefix}_p50_ms": round(q[49], 3),
        f"{prefix}_p90_ms": round(q[89], 3),
        f"{prefix}_p95_ms": round(q[94], 3),
        f"{prefix}_p99_ms": round(q[98], 3),
        f"{prefix}_max_ms": round(ms[-1], 3),
    }


def time_requests(client: httpx.Client, path: str, params: list[dict[str, str]]) -> list[float]:
    for p in params[:200]:  # warm up
        client.get(path, params=p).raise_for_status()
    samples = []
    for p in params:
        t = time.perf_counter()
        response = client.get(path, params=p)
        samples.append(time.perf_counter() - t)
        assert response.status_code == 200 and len(response.json()["metrics"]) == 5
    return samples


def measure(
    kind: str, database: str, events: int, requests: int, customers: list[str]
) -> dict[str, float]:
    rng = random.Random(11)
    figures: dict[str, float] = {}
    elapsed = load(database, events, customers)
    figures[f"{kind}_bulk_load_events_per_s"] = round(events / elapsed)
    if kind == "postgres":  # what autovacuum starts on its own after a bulk load: done first,
        import psycopg  # so the reads are timed in the steady state, not during its catch-up

        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    with server_process(database) as url:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=url, headers=headers) as client:
            params = [{"customer_id": rng.choice(customers)} for _ in range(requests)]
            samples = time_requests(client, "/v1/usage/metrics", params)
            figures |= percentiles(f"{kind}_http_secret", samples)
            token = client.post("/v1/session-tokens", json={"externalUserId": customers[0]}).json()[
                "sessionToken"
            ]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            samples = time_requests(client, "/v1/features/usage-metrics", [{}] * requests)
            figures |= percentiles(f"{kind}_http_session", samples)
    store = open_store(database if database.startswith("postgres") else Path(database))
    try:
        service = BillingService(store, load_plans(), SystemClock())
        samples = []
        for _ in range(requests):
            cid = rng.choice(customers)
            t = time.perf_counter()
            service.metrics(cid)
            samples.append(time.perf_counter() - t)
        figures |= percentiles(f"{kind}_in_process", samples)
    finally:
        store.close()
    figures[f"{kind}_http_over_in_process_p50"] = round(
        figures[f"{kind}_http_secret_p50_ms"] / figures[f"{kind}_in_process_p50_ms"], 1
    )
    return figures


def run(*, smoke: bool = False) -> dict[str, object]:
    # Smoke: every figure from a few requests (1,000 customers were 2,000 upserts, one
    # transaction each, and 1,800 timed requests: seconds of CPU that check nothing more).
    events, requests, n_customers = (1_000, 40, 50) if smoke else (1_000_000, 5_000, 1_000)
    customers = customer_ids(n_customers)
    config = {"events": events, "requests": requests, "customers": n_customers}
    print(f"server_metrics: {config}", flush=True)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in STORES:
            with databases(kind, Path(tmp)) as new_database:
                figures |= measure(kind, new_database(), events, requests, customers)
    # The machine's load moves every p99: PostgreSQL's against SQLite's of the same run says
    # what the store adds, whatever the load.
    for route in ("secret", "session"):
        figures[f"postgres_over_sqlite_{route}_p99"] = round(
            figures[f"postgres_http_{route}_p99_ms"] / figures[f"sqlite_http_{route}_p99_ms"], 2
        )
    figures["load_average_1m"] = round(os.getloadavg()[0], 2)
    goals = {
        f"{kind}_http_{route}_p99_ms": "<= 5 ms"
        for kind in STORES
        for route in ("secret", "session")
    }
    checks = {name: figures[name] <= 5 for name in goals}
    return result("server_metrics", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
