"""Benchmark: what ``AsyncBillingClient.track_usage`` costs over a raw ``httpx.AsyncClient`` POST.

    python -m bench.client_overhead [--smoke]

Two arms send the same tracks with the same connection-pool limits:

* **client** - ``await client.track_usage(customer_id=..., feature_key="api_calls", quantity=1)``:
  validation, a generated idempotency key (body and header), request building, the retry
  machinery, and the response parsed into a ``TrackUsageResult``;
* **raw** - ``await http.post("/v1/usage/track", json=body, headers={"Idempotency-Key": ...})``
  with the same body (a fresh ``uuid4`` key per request, as the client makes), the status
  checked and the JSON answer parsed (``response.json()``): what the least careful caller of
  the API still does, so the ratio counts what the client adds, not the reading of the answer.

They run twice:

1. **canned transport** (the headline): both arms' ``httpx.AsyncClient`` answer every request
   from an in-process transport with the bytes of a real answer of the local server, so no
   server shares the CPU and the figure is the client process's CPU per track. The ratio
   raw/client of CPU per track is the client's speed relative to raw httpx; it falls below 1
   by exactly what the client adds, so it can fail (goal >= 0.85).
2. **loopback** (kept for reference): the local server in its own process on a free port;
   throughput and client-process CPU per request. Both arms are bound by the server sharing
   the CPUs, so this ratio stays near 1 whatever the client does.

Each round runs both arms back to back in alternating order (client, raw, raw, client, ...), so
drift of the machine's speed weighs on both alike; figures are medians over rounds.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench._harness import cli, result
from bench.server_process import server_process
from billing_ui.core import AsyncBillingClient
from billing_ui.core import _constants as C
from billing_ui.core._base_client import default_limits

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
        if not isinstance(response.json(), dict):  # read, as any caller of the API must
            raise RuntimeError(f"raw track answered no JSON object: {response.text}")

    return lambda concurrency, requests: run_workers(concurrency, requests, one)


async def measure(arm: Arm, concurrency: int, requests: int, samples: Samples) -> None:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await arm(concurrency, requests)
    samples.add(requests, time.perf_counter() - wall0, time.process_time() - cpu0)


def http_client(url: str, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The raw arm's client: the same base URL, headers and pool limits as the billing client."""
    return httpx.AsyncClient(
        base_url=url,
        headers={
            "Authorization": f"Bearer {C.LOCAL_SECRET_KEY}",
            C.API_VERSION_HEADER: C.API_VERSION,
        },
        limits=default_limits(),
        transport=transport,
    )


async def compare(
    client: AsyncBillingClient,
    http: httpx.AsyncClient,
    concurrency: int,
    rounds: int,
    requests: int,
) -> dict[str, Samples]:
    """Both arms, ``rounds`` times in alternating order, after one warm-up round each."""
    arms = {"client": client_arm(client), "raw": raw_arm(http)}
    for arm in arms.values():  # warm-up: connections, caches, code paths
        await arm(concurrency, requests)
    results = {name: Samples() for name in arms}
    for r in range(rounds):
        order = ["client", "raw"] if r % 2 == 0 else ["raw", "client"]
        for name in order:
            await measure(arms[name], concurrency, requests, results[name])
    return results


class CannedTransport(httpx.AsyncBaseTransport):
    """Answers every request with the same recorded bytes: the server costs nothing here."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        self.status, self.headers, self.content = status, headers, content

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(self.status, headers=self.headers, content=self.content)


async def loopback_and_canned(
    url: str, loop_cfg: tuple[int, int, int], canned_cfg: tuple[int, int]
) -> tuple[dict[str, Samples], dict[str, Samples]]:
    async with AsyncBillingClient(base_url=url) as client, http_client(url) as http:
        for cid in CUSTOMERS:  # unlimited api_calls: no quota ever refuses a track
            await client.upsert_customer(customer_id=cid, products=["enterprise"])
        recorded = await raw_track(http)
        loopback = await compare(client, http, *loop_cfg)
    canned = CannedTransport(
        recorded.status_code,
        [(k, v) for k, v in recorded.headers.raw if k.lower() != b"content-length"],
        recorded.content,
    )
    async with (
        AsyncBillingClient(base_url=url, http_client=http_client(url, canned)) as client,
        http_client(url, canned) as http,
    ):
        offline = await compare(client, http, 1, *canned_cfg)
    return loopback, offline


async def raw_track(http: httpx.AsyncClient) -> httpx.Response:
    """One real answer of the server to a track: what the canned transport replays."""
    key = str(uuid.uuid4())
    body = {
        "customer_id": CUSTOMERS[0],
        "feature_key": "api_calls",
        "quantity": 1,
        "idempotency_key": key,
    }
    response = await http.post("/v1/usage/track", json=body, headers={"Idempotency-Key": key})
    response.raise_for_status()
    return response


def run(*, smoke: bool = False) -> dict[str, object]:
    concurrency, rounds, requests = (4, 2, 40) if smoke else (16, 20, 400)
    canned_rounds, canned_calls = (2, 100) if smoke else (30, 2000)
    config = {
        "loopback_concurrency": concurrency,
        "loopback_rounds": rounds,
        "loopback_requests_per_arm_round": requests,
        "canned_rounds": canned_rounds,
        "canned_calls_per_arm_round": canned_calls,
    }
    print(f"client_overhead: {config}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, server_process(Path(tmp) / "bench.db") as url:
        loop, canned = asyncio.run(
            loopback_and_canned(url, (concurrency, rounds, requests), (canned_rounds, canned_calls))
        )
    c_cpu, r_cpu = (
        statistics.median(canned["client"].cpu_us),
        statistics.median(canned["raw"].cpu_us),
    )
    figures: dict[str, float] = {
        "canned_speed_ratio": round(
            statistics.median(
                r / c for c, r in zip(canned["client"].cpu_us, canned["raw"].cpu_us, strict=True)
            ),
            3,
        ),
        "canned_client_cpu_us_per_track": round(c_cpu, 1),
        "canned_raw_cpu_us_per_track": round(r_cpu, 1),
        "canned_client_added_us_per_track": round(c_cpu - r_cpu, 1),
        "loopback_ratio": round(
            statistics.median(
                c / r for c, r in zip(loop["client"].rps, loop["raw"].rps, strict=True)
            ),
            3,
        ),
        "loopback_client_req_per_s": round(statistics.median(loop["client"].rps)),
        "loopback_raw_req_per_s": round(statistics.median(loop["raw"].rps)),
        "loopback_client_cpu_us_per_track": round(statistics.median(loop["client"].cpu_us), 1),
        "loopback_raw_cpu_us_per_track": round(statistics.median(loop["raw"].cpu_us), 1),
    }
    goals = {"canned_speed_ratio": f">= {TARGET} (raw CPU per track / client CPU per track)"}
    checks = {"canned_speed_ratio": figures["canned_speed_ratio"] >= TARGET}
    return result("client_overhead", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
