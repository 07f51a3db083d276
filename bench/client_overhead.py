"""Benchmark: what ``AsyncBillingClient.track_usage`` costs over a raw ``httpx.AsyncClient`` POST.

    python -m bench.client_overhead [--concurrency 16] [--rounds 30] [--requests 400]

The local server runs in its own process (``python -m billing_ui.server`` on a free port,
SQLite on a temporary file, rate limit off, no access log). In this process, two arms send the
same tracks to it with the same concurrency (``--concurrency`` tasks on one event loop) and the
same connection-pool limits:

* **client** — ``await client.track_usage(customer_id=…, feature_key="api_calls", quantity=1)``:
  validation, a generated idempotency key (body and header), request building, the retry
  machinery, and the response parsed into a ``TrackUsageResult``;
* **raw** — ``await http.post("/v1/usage/track", json=body, headers={"Idempotency-Key": …})``
  with the same body (a fresh ``uuid4`` key per request, as the client makes) and the status
  checked; the response is not parsed.

Each round runs both arms back to back, in alternating order (client, raw, raw, client, …), so
that the database growing and the machine's speed drifting weigh on both arms alike. Reported:
each arm's median throughput, the median of the per-round ratios client/raw (target >= 0.85),
and the CPU time this process spent per request in each arm: their difference is the client's
own cost, independent of the server's speed. The load average is printed because on a small
shared machine other work moves the figures more than the client does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import timeit
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.server_process import machine, server_process
from billing_ui.core import AsyncBillingClient
from billing_ui.core import _constants as C
from billing_ui.core._base_client import Send, default_limits

CUSTOMERS = [f"bench_client_{i:02d}" for i in range(50)]
TARGET = 0.85

Arm = Callable[[int, int], Awaitable[None]]


@dataclass
class Samples:
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    def add(self, requests: int, wall: float, cpu: float) -> None:
        self.rps.append(requests / wall)
        self.cpu_us.append(cpu / requests * 1e6)


async def run_workers(
    concurrency: int, requests: int, one: Callable[[int], Awaitable[None]]
) -> None:
    async def worker(start: int) -> None:
        for n in range(start, requests, concurrency):
            await one(n)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))


def client_arm(client: AsyncBillingClient) -> Arm:
    async def one(n: int) -> None:
        await client.track_usage(
            customer_id=CUSTOMERS[n % len(CUSTOMERS)], feature_key="api_calls", quantity=1
        )

    return lambda concurrency, requests: run_workers(concurrency, requests, one)


def raw_arm(http: httpx.AsyncClient) -> Arm:
    async def one(n: int) -> None:
        key = str(uuid.uuid4())
        body = {
            "customer_id": CUSTOMERS[n % len(CUSTOMERS)],
            "feature_key": "api_calls",
            "quantity": 1,
            "idempotency_key": key,
        }
        response = await http.post("/v1/usage/track", json=body, headers={"Idempotency-Key": key})
        if response.status_code != 200:
            raise RuntimeError(f"raw track failed: {response.status_code} {response.text}")

    return lambda concurrency, requests: run_workers(concurrency, requests, one)


async def measure(arm: Arm, concurrency: int, requests: int, samples: Samples) -> None:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await arm(concurrency, requests)
    samples.add(requests, time.perf_counter() - wall0, time.process_time() - cpu0)


async def bench(url: str, concurrency: int, rounds: int, requests: int) -> dict[str, Samples]:
    async with (
        AsyncBillingClient(base_url=url) as client,
        httpx.AsyncClient(
            base_url=url,
            headers={
                "Authorization": f"Bearer {C.LOCAL_SECRET_KEY}",
                C.API_VERSION_HEADER: C.API_VERSION,
            },
            limits=default_limits(),
            timeout=client.timeout,
        ) as http,
    ):
        for cid in CUSTOMERS:  # unlimited api_calls: no quota ever refuses a track
            await client.upsert_customer(customer_id=cid, products=["enterprise"])
        arms = {"client": client_arm(client), "raw": raw_arm(http)}
        for arm in arms.values():  # warm-up: connections, caches, code paths
            await arm(concurrency, min(requests, 500))
        results = {name: Samples() for name in arms}
        for r in range(rounds):
            order = ["client", "raw"] if r % 2 == 0 else ["raw", "client"]
            for name in order:
                await measure(arms[name], concurrency, requests, results[name])
            print(
                f"  round {r + 1}/{rounds}: client {results['client'].rps[-1]:8.0f} req/s   "
                f"raw {results['raw'].rps[-1]:8.0f} req/s",
                flush=True,
            )
        return results


def offline_cost(calls: int = 5000) -> tuple[float, float]:
    """Microseconds per call of the work around the network, with no network at all: the
    client's operation (validation, key, request, parse into a model) against a canned response,
    vs building the raw request and receiving the same response. Immune to the server's speed
    and to other processes, so it isolates what the client adds."""
    canned = (
        b'{"success":true,"feature_key":"api_calls","quantity":1.0,'
        b'"recorded_at":"2026-11-30T04:16:47.977548Z","duplicate":false,"idempotency_key":"k",'
        b'"usage":{"consumed_units":3.0,"limit_units":null,"remaining_units":null,'
        b'"period_start":"2026-11-01T00:00:00Z","period_end":"2026-12-01T00:00:00Z",'
        b'"unlimited":true}}'
    )
    client = AsyncBillingClient()
    http = client._http

    def through_client() -> None:
        op = client._op_track_usage(CUSTOMERS[0], "api_calls", 1, None, None)
        effect = next(op)
        assert isinstance(effect, Send)
        with contextlib.suppress(StopIteration):
            op.send(httpx.Response(200, content=canned, request=effect.request))

    def raw() -> None:
        key = str(uuid.uuid4())
        body = {"customer_id": CUSTOMERS[0], "feature_key": "api_calls", "quantity": 1}
        request = http.build_request(
            "POST",
            C.DEFAULT_BASE_URL + "/v1/usage/track",
            json={**body, "idempotency_key": key},
            headers={"Idempotency-Key": key},
        )
        response = httpx.Response(200, content=canned, request=request)
        if response.status_code != 200:
            raise RuntimeError

    for fn in (through_client, raw):  # warm-up
        fn()
    costs = []
    for fn in (through_client, raw):
        best = min(timeit.repeat(fn, number=calls // 5, repeat=5)) / (calls // 5)
        costs.append(best * 1e6)
    return costs[0], costs[1]


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.client_overhead", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=400, help="per arm per round")
    args = parser.parse_args()
    print(machine())
    print(
        f"track_usage: AsyncBillingClient vs raw httpx.AsyncClient, concurrency "
        f"{args.concurrency}, {args.rounds} rounds x {args.requests} requests per arm "
        f"(load average before: {load()})"
    )
    with tempfile.TemporaryDirectory() as tmp, server_process(Path(tmp) / "bench.db") as url:
        results = asyncio.run(bench(url, args.concurrency, args.rounds, args.requests))
    client, raw = results["client"], results["raw"]
    # Each round runs the two arms back to back, so their ratio compares like with like even
    # when the machine's speed drifts between rounds; the median of those ratios is the figure.
    per_round = [c / r for c, r in zip(client.rps, raw.rps, strict=True)]
    ratio = statistics.median(per_round)
    cpu_client, cpu_raw = statistics.median(client.cpu_us), statistics.median(raw.cpu_us)
    print(f"load average after: {load()}")
    print(f"client: {statistics.median(client.rps):8.0f} req/s, {cpu_client:6.0f} us CPU/request")
    print(f"raw:    {statistics.median(raw.rps):8.0f} req/s, {cpu_raw:6.0f} us CPU/request")
    print(
        f"ratio client/raw: {ratio:.3f} (median of per-round ratios; range "
        f"{min(per_round):.3f}..{max(per_round):.3f}); target >= {TARGET} -> "
        f"{'met' if ratio >= TARGET else 'MISSED'}"
    )
    print(f"client's own CPU cost: {cpu_client - cpu_raw:+.0f} us/request over raw httpx")
    offline_client, offline_raw = offline_cost()
    print(
        f"without the network: client {offline_client:.0f} us/call, raw {offline_raw:.0f} "
        f"us/call -> the client adds {offline_client - offline_raw:.0f} us per track"
    )


if __name__ == "__main__":
    main()
