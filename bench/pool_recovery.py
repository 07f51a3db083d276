"""Benchmark: which transport survives httpcore#1093, and what each one costs.

    python -m bench.pool_recovery [--smoke] [--json PATH]

The bug (encode/httpcore#1093, httpcore 1.0.9): a request cancelled while it waits for a pool
slot can leave a connection stuck in CONNECTING forever; enough of them and every call fails
until the process restarts. The same ``AsyncBillingClient`` (retries on, as in production)
sends the same tracks four ways:

* **httpx** — straight into a plain ``httpx.AsyncClient`` (billing_ui before the fix): the
  baseline;
* **gate** — behind :class:`billing_ui.core._transport.SendGate` (at most as many requests
  inside httpx as its pool has connections: nobody waits inside httpcore) — the default now;
* **replace** — straight into httpx, but after a pool timeout it looks for stuck connections
  and replaces the whole ``httpx.AsyncClient`` when it finds one (detect-and-replace);
* **aiohttp** — ``httpx-aiohttp``'s ``AiohttpTransport`` behind the same httpx API (in the
  ``bench`` extra only, not a dependency of billing_ui; skipped when it is not installed).

Outage rounds: the real server process (``python -m billing_ui.server``) is frozen with SIGSTOP
while tracks start at 200 per second on a pool of 2 with 0.5 s timeouts and a random pending
one is cancelled half the time (as Reflex cancels a closing tab's tasks); then SIGCONT, and one
more track. A round is *poisoned* when a connection is left stuck (not idle with nothing in
flight: the pool has lost it for good) or that track fails or takes over 1 s. Each round uses a
fresh client, warmed by one track first. Cost: the median latency of sequential tracks and the
throughput of 16 concurrent workers, both relative to the plain client in the same run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench._harness import cli, result
from billing_ui.core import AsyncBillingClient
from billing_ui.core.errors import APIError
from billing_ui.server.testing import ServerProcess, server_process

POOL = 2
TIMEOUT = httpx.Timeout(0.5)
RATE_PER_S = 200
CANCEL_PROBABILITY = 0.5
RECOVERED_WITHIN_S = 1.0
CONCURRENCY = 16


class Ungated(AsyncBillingClient):
    """No gate: every request goes straight into httpx (billing_ui before the fix)."""

    async def _send_request(self, request: httpx.Request) -> httpx.Response:
        return await self._http.send(request)


class Replacing(AsyncBillingClient):
    """Detect-and-replace: a pool timeout while a connection sits in CONNECTING with no
    request waiting for it means the pool is poisoned; a new ``httpx.AsyncClient`` takes over
    (the call that found out still fails)."""

    async def _send_request(self, request: httpx.Request) -> httpx.Response:
        http = self._http
        try:
            return await http.send(request)
        except httpx.PoolTimeout:
            pool = http._transport._pool  # type: ignore[attr-defined]
            waiting_for = {id(r.connection) for r in pool._requests}
            if http is self._http and any(
                c.info() == "CONNECTING" and id(c) not in waiting_for for c in pool.connections
            ):
                self._http = _httpx(pool._max_connections)
                await http.aclose()
            raise


def _limits(size: int) -> httpx.Limits:
    return httpx.Limits(max_connections=size, max_keepalive_connections=size)


def _httpx(size: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(limits=_limits(size))


def _client(
    base_url: str, http: httpx.AsyncClient, cls: type[AsyncBillingClient] = AsyncBillingClient
) -> AsyncBillingClient:
    return cls(
        base_url=base_url,
        http_client=http,
        timeout=TIMEOUT,
        max_retries=1,
        retry_initial_delay=0.05,
        retry_max_delay=0.2,
    )


def make_httpx(base_url: str, size: int) -> AsyncBillingClient:
    return _client(base_url, _httpx(size), Ungated)


def make_gate(base_url: str, size: int) -> AsyncBillingClient:
    return _client(base_url, _httpx(size))  # the gate is built in


def make_replace(base_url: str, size: int) -> AsyncBillingClient:
    return _client(base_url, _httpx(size), Replacing)


def make_aiohttp(base_url: str, size: int) -> AsyncBillingClient:
    from httpx_aiohttp import AiohttpTransport

    transport = AiohttpTransport(limits=_limits(size))
    return _client(base_url, httpx.AsyncClient(transport=transport), Ungated)  # its own pool


OPTIONS: dict[str, Callable[[str, int], AsyncBillingClient]] = {
    "httpx": make_httpx,
    "gate": make_gate,
    "replace": make_replace,
}
if importlib.util.find_spec("httpx_aiohttp") is not None:  # not a dependency of billing_ui
    OPTIONS["aiohttp"] = make_aiohttp


async def one_track(client: AsyncBillingClient) -> None:
    await client.track_usage(customer_id="demo_pro", feature_key="api_calls", quantity=1)


async def close(client: AsyncBillingClient) -> None:
    await client._http.aclose()


def stuck_connections(client: AsyncBillingClient) -> int:
    """Connections of an httpcore pool that are not idle once no request is in flight: they
    can never serve again (0 for transports without an httpcore pool)."""
    pool = getattr(getattr(client._http, "_transport", None), "_pool", None)
    if pool is None:
        return 0
    return sum(not c.is_idle() for c in pool.connections)


async def outage_round(
    srv: ServerProcess, client: AsyncBillingClient, stall_s: float
) -> tuple[float, int]:
    """One outage with cancellations; the seconds the next track took (``inf``: it failed)
    and the connections left stuck."""
    rng = random.Random(1093)
    tasks: list[asyncio.Task[None]] = []
    await one_track(client)
    srv.pause()
    try:
        started = time.monotonic()
        while time.monotonic() - started < stall_s:
            tasks.append(asyncio.create_task(one_track(client)))
            pending = [t for t in tasks if not t.done()]
            if pending and rng.random() < CANCEL_PROBABILITY:
                rng.choice(pending).cancel()
            await asyncio.sleep(1 / RATE_PER_S)
    finally:
        srv.resume()
    await asyncio.gather(*tasks, return_exceptions=True)
    stuck = stuck_connections(client)
    started = time.monotonic()
    try:
        await one_track(client)
    except APIError:
        return float("inf"), stuck
    return time.monotonic() - started, stuck


async def sequential_ms(client: AsyncBillingClient, calls: int) -> float:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        await one_track(client)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


async def throughput(client: AsyncBillingClient, calls: int) -> float:
    per_worker = max(1, calls // CONCURRENCY)

    async def worker() -> None:
        for _ in range(per_worker):
            await one_track(client)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return per_worker * CONCURRENCY / (time.perf_counter() - started)


async def measure(
    srv: ServerProcess, options: list[str], *, rounds: int, stall_s: float, calls: int, reps: int
) -> dict[str, dict[str, float]]:
    """Outage rounds per option (a fresh client each), then the cost: ``reps`` repetitions
    with the options in rotating order, so load drift weighs on all alike."""
    next_s: dict[str, list[float]] = {name: [] for name in options}
    stuck: dict[str, list[int]] = {name: [] for name in options}
    for name in options:
        make = OPTIONS[name]
        for _ in range(rounds):
            client = make(srv.base_url, POOL)
            try:
                seconds, left = await outage_round(srv, client, stall_s)
                next_s[name].append(seconds)
                stuck[name].append(left)
            finally:
                await close(client)
    seq: dict[str, list[float]] = {name: [] for name in options}
    rps: dict[str, list[float]] = {name: [] for name in options}
    names = list(options)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            client = OPTIONS[name](srv.base_url, CONCURRENCY)
            try:
                await sequential_ms(client, 10)  # warm-up: connections, token-free path
                seq[name].append(await sequential_ms(client, calls))
                rps[name].append(await throughput(client, calls * 2))
            finally:
                await close(client)
    return {
        name: {
            "poisoned_rounds": sum(
                seconds > RECOVERED_WITHIN_S or left > 0
                for seconds, left in zip(next_s[name], stuck[name], strict=True)
            ),
            "stuck_connections_max": max(stuck[name]),
            "failed_next_tracks": sum(s == float("inf") for s in next_s[name]),
            "worst_next_track_ms": round(
                max((s for s in next_s[name] if s != float("inf")), default=0.0) * 1000, 1
            ),
            "call_ms_p50": round(statistics.median(seq[name]), 3),
            "rps": round(statistics.median(rps[name]), 1),
        }
        for name in options
    }


def run(*, smoke: bool = False) -> dict[str, object]:
    logging.getLogger("billing_ui.core").setLevel(logging.ERROR)  # thousands of expected failures
    rounds, stall_s, calls, reps = (1, 0.1, 5, 1) if smoke else (6, 3.0, 200, 5)
    options = list(OPTIONS)
    with tempfile.TemporaryDirectory() as tmp, server_process(db_path=Path(tmp) / "b.db") as srv:
        raw = asyncio.run(
            measure(srv, options, rounds=rounds, stall_s=stall_s, calls=calls, reps=reps)
        )
    base = raw["httpx"]
    figures: dict[str, float] = {}
    for name, values in raw.items():
        for key, value in values.items():
            figures[f"{name}_{key}"] = value
        figures[f"{name}_call_ms_vs_httpx"] = round(values["call_ms_p50"] / base["call_ms_p50"], 3)
        figures[f"{name}_rps_vs_httpx"] = round(values["rps"] / base["rps"], 3)
    config = {
        "rounds": rounds,
        "stall_s": stall_s,
        "pool": POOL,
        "timeout_s": 0.5,
        "rate_per_s": RATE_PER_S,
        "cancel_probability": CANCEL_PROBABILITY,
        "sequential_calls": calls,
        "concurrency": CONCURRENCY,
        "cost_repetitions": reps,
        "options": ",".join(raw),
    }
    goals = {
        "gate_poisoned_rounds": "0: no outage leaves a connection stuck or the next track failing",
        "gate_rps_vs_httpx": ">= 0.85: no real cost (noise on a shared 2-CPU machine is ~15 %)",
    }
    checks = {
        "gate_poisoned_rounds": figures["gate_poisoned_rounds"] == 0,
        "gate_rps_vs_httpx": figures["gate_rps_vs_httpx"] >= 0.85,
    }
    return result("pool_recovery", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
