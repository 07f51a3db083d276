"""Benchmark: usage-metrics read latency with 1,000,000 stored events.

    python -m bench.server_metrics [--events 1000000] [--requests 5000]

1. Bulk-load ``--events`` events into a fresh SQLite file *through the store*
   (``BillingService.track_batch``, batches of 5,000 — the same write path as the API, without
   HTTP): 1,000 customers on the ``pro`` plan, four metered features (monthly, weekly, daily
   resets), instants spread over the last 90 days, so there are many past periods too.
2. Start ``python -m billing_ui.server`` on that file and time ``GET /v1/usage/metrics`` for
   random customers over loopback HTTP with one keep-alive httpx client (p50/p90/p99/max),
   then the session-token endpoint, then ``BillingService.metrics`` in-process (no HTTP).

Reads never scan raw events (per-period aggregates), so latency should not depend on the
event count. Target: p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.server_process import machine, server_process
from billing_ui.server.clock import SystemClock
from billing_ui.server.plans import load_plans
from billing_ui.server.service import BillingService, TrackCommand
from billing_ui.server.store import Store

KEY = "sk_test_billing_ui_local"
FEATURES = ("api_calls", "ai_tokens", "report_exports", "storage_gb")
CUSTOMERS = [f"m_{i:04d}" for i in range(1000)]


def load(db: Path, events: int) -> float:
    store = Store(db)
    try:
        service = BillingService(store, load_plans(), SystemClock())
        for cid in CUSTOMERS:
            service.upsert_customer(cid, ["pro"], "active")
        rng = random.Random(7)
        now = datetime.now(UTC)
        start = time.perf_counter()
        chunk = 5000
        for n in range(0, events, chunk):
            at = now - timedelta(days=90) * (1 - n / events)  # oldest first
            cmds = [
                TrackCommand(rng.choice(CUSTOMERS), FEATURES[i % 4], rng.randint(1, 3))
                for i in range(min(chunk, events - n))
            ]
            service.track_batch(cmds, now=at, rate_limited=False)
        elapsed = time.perf_counter() - start
        assert store.count_events() == events
        return elapsed
    finally:
        store.close()


def percentiles(samples: list[float]) -> str:
    """``n``, p50, p90, p99 and max of ``samples`` (seconds), in milliseconds."""
    ms = sorted(s * 1000 for s in samples)
    q = statistics.quantiles(ms, n=100)
    return (
        f"n={len(ms):,}  p50 {q[49]:.2f} ms  p90 {q[89]:.2f} ms  p99 {q[98]:.2f} ms  "
        f"max {ms[-1]:.2f} ms"
    )


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    rng = random.Random(11)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "metrics.db"
        elapsed = load(db, args.events)
        size = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 1e6
        print(
            f"bulk load: {args.events:,} events in {elapsed:.1f} s "
            f"({args.events / elapsed:,.0f} events/s through the store), database {size:.0f} MB"
        )
        with server_process(db) as url:
            headers = {"Authorization": f"Bearer {KEY}"}
            with httpx.Client(base_url=url, headers=headers) as client:
                params = [{"customer_id": rng.choice(CUSTOMERS)} for _ in range(args.requests)]
                samples = time_requests(client, "/v1/usage/metrics", params)
                print(f"GET /v1/usage/metrics (secret key):        {percentiles(samples)}")
                token = client.post(
                    "/v1/session-tokens", json={"externalUserId": CUSTOMERS[0]}
                ).json()["sessionToken"]
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
                samples = time_requests(client, "/v1/features/usage-metrics", [{}] * args.requests)
                print(f"GET /v1/features/usage-metrics (session): {percentiles(samples)}")
        store = Store(db)
        try:
            service = BillingService(store, load_plans(), SystemClock())
            samples = []
            for _ in range(args.requests):
                cid = rng.choice(CUSTOMERS)
                t = time.perf_counter()
                service.metrics(cid)
                samples.append(time.perf_counter() - t)
            print(f"BillingService.metrics (in-process):       {percentiles(samples)}")
        finally:
            store.close()


if __name__ == "__main__":
    main()
