"""Benchmark: how many usage events per second the local server records.

    python -m bench.server_ingest [--smoke]

The server runs as its own process (``python -m billing_ui.server``, SQLite in WAL mode on a
temporary file, rate limit off) and is driven over loopback HTTP by httpx:

1. one event per request (``POST /v1/usage/track``): one client, then ``--clients`` threads;
2. ``POST /v1/usage/track-batch`` with 1,000 events per request: one client, then two.

Every event carries its own idempotency key and goes to one of 100 customers, so each write
does the full work (key claim, aggregate, hourly bucket, event row). Request bodies are
encoded before the clock starts, so the figures are the server's, not the client's JSON.
The target is >= 20,000 events/s through the batch endpoint. (The HTTP and database ceilings,
ratios against a bare endpoint and the database itself, are ``bench.http_ceiling`` and
``bench.db_ceiling``.)
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench._harness import cli, result
from bench.server_process import server_process

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


def measure(url: str, events: int, batches: int, clients: int, repeat: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for n_clients in (1, clients):
        n = events // (4 if n_clients == 1 else 1)
        warm = min(200, n // 4)
        bodies = [json.dumps(_event(i, f"s{n_clients}")).encode() for i in range(n)]
        _single(url, bodies[:warm])  # warm up (connections, caches)
        elapsed = _run(_single, url, bodies[warm:], n_clients)
        figures[f"single_{n_clients}_clients_events_per_s"] = round((n - warm) / elapsed)
    for n_clients in (1, 2):
        rates = []
        for r in range(repeat):
            tag = f"b{n_clients}r{r}"
            bodies = [
                json.dumps({"events": [_event(b * 1000 + i, tag) for i in range(1000)]}).encode()
                for b in range(batches)
            ]
            rates.append(batches * 1000 / _run(_batches, url, bodies, n_clients))
        figures[f"batch_{n_clients}_clients_events_per_s"] = round(sorted(rates)[len(rates) // 2])
    return figures


def run(*, smoke: bool = False) -> dict[str, object]:
    config = {
        "single_events": 400 if smoke else 20_000,
        "batches_of_1000": 3 if smoke else 100,
        "clients": 4,
        "repeat": 1 if smoke else 3,
        "customers": len(CUSTOMERS),
    }
    print(f"server_ingest: {config}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, server_process(Path(tmp) / "bench.db") as url:
        with httpx.Client(base_url=url, headers=HEADERS) as c:
            for cid in CUSTOMERS:
                c.put(f"/v1/customers/{cid}", json={"products": ["enterprise"]}).raise_for_status()
        figures = measure(
            url, config["single_events"], config["batches_of_1000"], 4, config["repeat"]
        )
    goals = {"batch_1_clients_events_per_s": ">= 20,000 events/s"}
    ok = figures["batch_1_clients_events_per_s"] >= 20_000
    return result("server_ingest", config, figures, goals, {"batch_1_clients_events_per_s": ok})


if __name__ == "__main__":
    cli(run)
