"""Benchmark: how many usage events per second the local server records.

    python -m bench.server_ingest [--events 20000] [--batches 100] [--clients 4]

The server runs as its own process (``python -m billing_ui.server``, SQLite in WAL mode on a
temporary file, rate limit off) and is driven over loopback HTTP by httpx:

1. one event per request (``POST /v1/usage/track``): one client, then ``--clients`` threads;
2. ``POST /v1/usage/track-batch`` with 1,000 events per request: one client, then two.

Every event carries its own idempotency key and goes to one of 100 customers, so each write
does the full work (key claim, aggregate, hourly bucket, event row). Request bodies are
encoded before the clock starts, so the figures are the server's, not the client's JSON.
The target is >= 20,000 events/s through the batch endpoint.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.server_process import machine, server_process

KEY = "sk_test_billing_ui_local"
HEADERS = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
CUSTOMERS = [f"bench_{i:03d}" for i in range(100)]


def _event(n: int, tag: str) -> dict[str, object]:
    return {
        "customer_id": CUSTOMERS[n % len(CUSTOMERS)],
        "feature_key": "api_calls",
        "quantity": 1,
        "idempotency_key": f"{tag}-{n}",
    }


def _single(url: str, bodies: list[bytes]) -> None:
    with httpx.Client(base_url=url, headers=HEADERS) as client:
        for body in bodies:
            response = client.post("/v1/usage/track", content=body)
            assert response.status_code == 200, response.text


def _batches(url: str, bodies: list[bytes]) -> None:
    with httpx.Client(base_url=url, headers=HEADERS, timeout=60) as client:
        for body in bodies:
            response = client.post("/v1/usage/track-batch", content=body)
            assert response.status_code == 200, response.text


def _split(items: list[bytes], parts: int) -> list[list[bytes]]:
    return [items[i::parts] for i in range(parts)]


def _run(fn, url: str, bodies: list[bytes], clients: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda part: fn(url, part), _split(bodies, clients)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="single-request events")
    parser.add_argument("--batches", type=int, default=100, help="batches of 1,000 events")
    parser.add_argument("--clients", type=int, default=4, help="client threads (single mode)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each batch measurement")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp, server_process(Path(tmp) / "bench.db") as url:
        with httpx.Client(base_url=url, headers=HEADERS) as c:
            for cid in CUSTOMERS:
                c.put(f"/v1/customers/{cid}", json={"products": ["enterprise"]}).raise_for_status()
        results = []
        for clients in (1, args.clients):
            n = args.events // (4 if clients == 1 else 1)
            bodies = [json.dumps(_event(i, f"s{clients}")).encode() for i in range(n)]
            _single(url, bodies[:200])  # warm up (connections, caches); replays after this
            elapsed = _run(_single, url, bodies[200:], clients)
            rate = (n - 200) / elapsed
            results.append((f"1 event/request, {clients} client(s)", n - 200, elapsed, rate))
        for clients in (1, 2):
            rates = []
            for run in range(args.repeat):
                tag = f"b{clients}r{run}"
                bodies = [
                    json.dumps(
                        {"events": [_event(b * 1000 + i, tag) for i in range(1000)]}
                    ).encode()
                    for b in range(args.batches)
                ]
                elapsed = _run(_batches, url, bodies, clients)
                rates.append((args.batches * 1000 / elapsed, elapsed))
            rates.sort()
            rate, elapsed = rates[len(rates) // 2]
            label = f"batch of 1,000, {clients} client(s), median of {args.repeat}"
            results.append((label, args.batches * 1000, elapsed, rate))
            print(f"  ({label}: best {rates[-1][0]:,.0f}, worst {rates[0][0]:,.0f} events/s)")
    width = max(len(r[0]) for r in results)
    for label, n, elapsed, rate in results:
        print(f"{label:<{width}}  {n:>8,} events in {elapsed:6.2f} s = {rate:>9,.0f} events/s")


if __name__ == "__main__":
    main()
