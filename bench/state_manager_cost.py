"""Benchmark: what the Redis state manager costs per poll tick, against Reflex's in-memory one.

    python -m bench.state_manager_cost [--smoke] [--json PATH]

One demo backend (``reflex run --backend-only --env prod``, one granian worker) serves N tabs
(raw socket.io clients, ``bench/_socketio.py``) of a few customers, each running the page's
poll loop at a short interval. Its CPU time (every process of the backend) over a window of
several intervals, divided by tabs x intervals, is the cost of one tab's tick: the loop's event
through Reflex's state manager (lock, load, save the state; send the delta) and the query
store. Measured twice on fresh backends: in memory (the single-worker default) and on Redis
(``REFLEX_REDIS_URL`` and ``BILLING_UI_REDIS_URL``, as several workers need), where the
redis-server's own CPU is counted too. Goal: Redis at most 2x memory.

Both arms measure the same work, where it runs: in memory the state and the query store live
in the backend, so its CPU is all of it; on Redis they live in redis-server, so the backend's
CPU plus redis-server's is (the config says so). The Redis arm also counts the commands
redis-server ran per tick (``INFO commandstats``, those run inside scripts included): the
round trips a tick costs, which is what a Redis tick pays for beyond memory.

The ticks are counted, not assumed: the backend's query-store reads in the window (its
Prometheus counters, hits + fetches + joined: one per quiet tick), scraped just outside the
CPU window and scaled from the scrapes' interval to the window's. A
loaded machine ticks less often than ``tabs x window / interval`` (each loop sleeps a full
interval after its tick), which made a loaded run look cheaper per tick than it was
(``*_ticks_over_expected``). Both arms run the same tabs, interval and window, each after
two intervals of warm-up; redis-server's CPU is counted in the Redis arm. A loaded machine
also batches: a busy worker and redis-server handle several ticks' round trips per wake-up,
so a Redis tick, whose cost is mostly round trips, costs less under load than quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs installed; bench only

from bench._harness import cli, result
from bench._reflex_backend import ReflexBackend, start_backends
from bench._socketio import Tab, handler_name
from bench.live_meters_workers import has_meter
from bench.many_sockets import signed_in_tab
from billing_ui.core.testing_redis import temp_redis
from billing_ui.server.testing import ServerProcess, server_process

CUSTOMERS = ["demo_free", "demo_pro", "demo_enterprise"]  # each has meters


def _redis_cpu(redis_url: str | None) -> float:
    """CPU seconds used so far by the redis-server at ``redis_url`` (0 without one)."""
    if redis_url is None:
        return 0.0
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] == "redis-server" and f":{port}" in " ".join(proc.cmdline()):
                times = proc.cpu_times()
                return float(times.user + times.system)
    raise RuntimeError(f"no redis-server process for {redis_url}")


def _store_reads(url: str) -> int:
    """Reads of the backend's query store so far (hits + fetches + joined: one per tick)."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    total = 0
    for name in ("hits", "fetches", "joined"):
        for line in text.splitlines():
            if line.startswith(f"billing_ui_cache_{name}_total "):
                total += int(float(line.split()[1]))
    return total


async def _timed_reads(url: str) -> tuple[int, float]:
    """:func:`_store_reads` and when it was read (the middle of the scrape)."""
    before = time.monotonic()
    reads = await asyncio.to_thread(_store_reads, url)
    return reads, (before + time.monotonic()) / 2


def _redis_commands(redis_url: str | None) -> dict[str, int]:
    """Commands redis-server has run so far, by command (none without one)."""
    if redis_url is None:
        return {}
    import redis

    with redis.Redis.from_url(redis_url) as client:
        stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def _tabs(url: str, n: int) -> list[Tab]:
    from billing_ui.states.metrics import UsageMetricsState

    poll = handler_name(UsageMetricsState.poll)
    tabs = [await signed_in_tab(url, CUSTOMERS[i % len(CUSTOMERS)]) for i in range(n)]
    for tab in tabs:
        await tab.emit(poll)
    for tab in tabs:
        await tab.wait_for(partial(has_meter, tab), 120)
    return tabs


def backend_env(srv: ServerProcess, redis_url: str | None, interval: float) -> dict[str, str]:
    env = {
        "BILLINGOS_API_URL": srv.base_url,
        "BILLING_UI_REFRESH_INTERVAL": str(interval),
        "BILLING_UI_DEMO_CUSTOMERS": ",".join(CUSTOMERS),
        "GRANIAN_WORKERS": "1",
        # The query store's read counters (one read per tick): the ticks are counted, not
        # assumed from the interval (a loaded machine ticks less often than that).
        "BILLING_UI_METRICS_PATH": "/metrics",
    }
    if redis_url is not None:
        env |= {"REFLEX_REDIS_URL": redis_url, "BILLING_UI_REDIS_URL": redis_url}
    return env


def measure(
    be: ReflexBackend, redis_url: str | None, tabs: int, interval: float, window: float
) -> dict[str, Any]:
    """CPU per tab per tick of the backend ``be`` (and of its Redis) over ``window`` s."""

    async def session() -> dict[str, Any]:
        open_tabs = await _tabs(be.url, tabs)
        try:
            await asyncio.sleep(2 * interval)  # every loop past its first fetches
            updates = sum(len(t.updates) for t in open_tabs)
            # Read outside the CPU window: a scrape is the backend's work, not a tick's.
            reads0, at0 = await _timed_reads(be.url)
            commands0 = _redis_commands(redis_url)
            cpu0, redis0, t0 = be.cpu_seconds(), _redis_cpu(redis_url), time.monotonic()
            await asyncio.sleep(window)  # the measurement window: the loops tick on
            cpu1, redis1, t1 = be.cpu_seconds(), _redis_cpu(redis_url), time.monotonic()
            commands1 = _redis_commands(redis_url)
            reads1, at1 = await _timed_reads(be.url)
            deltas = sum(len(t.updates) for t in open_tabs) - updates
        finally:
            for tab in open_tabs:
                await tab.close()
        expected = tabs * (t1 - t0) / interval
        # The ticks of the CPU window: the rate between the two scrapes, over the window (the
        # scrapes bracket it, and on a loaded machine they and the INFO take a while).
        ticks = max((reads1 - reads0) * (t1 - t0) / (at1 - at0), 1.0)
        return {
            "backend_ms": (cpu1 - cpu0) * 1000 / ticks,
            "redis_ms": (redis1 - redis0) * 1000 / ticks,
            "deltas_per_tick": deltas / ticks,
            "commands_per_tick": (sum(commands1.values()) - sum(commands0.values())) / ticks,
            "commands_by_kind": {
                name: round((calls - commands0.get(name, 0)) / ticks, 3)
                for name, calls in sorted(commands1.items())
                if calls > commands0.get(name, 0) and name != "info"
            },
            "ticks": ticks,
            "ticks_over_expected": ticks / expected,
        }

    return asyncio.run(session())


def run(*, smoke: bool = False) -> dict[str, object]:
    tabs, interval, window = (3, 0.5, 1.0) if smoke else (60, 2.0, 20.0)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        srv = stack.enter_context(server_process(db_path=tmp / "billing.db"))
        redis_url = stack.enter_context(temp_redis())
        envs = [backend_env(srv, None, interval), backend_env(srv, redis_url, interval)]
        # Started together, measured one after the other (the idle one costs little).
        in_memory, on_redis_backend = start_backends(stack, envs, tmp)
        memory = measure(in_memory, None, tabs, interval, window)
        on_redis = measure(on_redis_backend, redis_url, tabs, interval, window)
    memory_ms = memory["backend_ms"]
    redis_ms = on_redis["backend_ms"] + on_redis["redis_ms"]
    figures = {
        "memory_ms_per_tab_tick": round(memory_ms, 3),
        "redis_ms_per_tab_tick": round(redis_ms, 3),
        "redis_backend_ms_per_tab_tick": round(on_redis["backend_ms"], 3),
        "redis_server_ms_per_tab_tick": round(on_redis["redis_ms"], 3),
        "redis_vs_memory": round(redis_ms / memory_ms, 2),
        "memory_deltas_per_tab_tick": round(memory["deltas_per_tick"], 2),
        "redis_deltas_per_tab_tick": round(on_redis["deltas_per_tick"], 2),
        "redis_commands_per_tab_tick": round(on_redis["commands_per_tick"], 2),
        "memory_ticks": round(memory["ticks"]),
        "redis_ticks": round(on_redis["ticks"]),
        "memory_ticks_over_expected": round(memory["ticks_over_expected"], 3),
        "redis_ticks_over_expected": round(on_redis["ticks_over_expected"], 3),
    }
    goals = {"redis_vs_memory": "<= 2.0"}
    checks = {"redis_vs_memory": figures["redis_vs_memory"] <= 2.0}
    config = {
        "memory_arm": "backend CPU (Reflex state and query store in the backend's memory)",
        "redis_arm": "backend CPU + redis-server CPU (Reflex state and query store in Redis)",
        "ticks": "counted: the query store's reads in the window (one per tick), not assumed",
        "tabs": tabs,
        "customers": len(CUSTOMERS),
        "interval_s": interval,
        "window_s": window,
        "backend_workers": 1,
        "redis_commands_per_tab_tick_by_kind": on_redis["commands_by_kind"],
        "cpus": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    return result("state_manager_cost", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
