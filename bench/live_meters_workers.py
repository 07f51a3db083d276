"""Benchmark: a track in tab A until the meter moves in tab B of the same customer, on another
backend worker, on loopback.

    python -m bench.live_meters_workers [--smoke] [--json PATH]

Two Reflex backend processes of the demo (``reflex run --backend-only --env prod``, one
granian worker each) share a throwaway Redis: Reflex's state manager (``REFLEX_REDIS_URL``)
and billing_ui's query store (``BILLING_UI_REDIS_URL``). Tab A (a raw socket.io client,
``bench/_socketio.py``) connects to the first, tab B to the second; that they sit on different
workers is checked against Reflex's own socket records in Redis. Both sign in as one customer
and start the page's poll loop, at the SDK's 30 s interval. Then, N times, A sends a track and
the time until B's state delta carries the new usage is taken.

Baseline: per-tab polling, as BillingOS's, Autumn's and OpenMeter's hooks do: tab B learns of
the track at its own next tick, uniformly 0 to 30 s later, so p50 = 15 s and p95 = 28.5 s (the
interval's fractions; not a measurement: waiting for 30 s ticks N times would take minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from bench._harness import cli, result
from bench._reflex_backend import start_backends
from bench._socketio import Tab, handler_name
from bench.many_sockets import signed_in_tab
from billing_ui.core.testing_redis import temp_redis
from billing_ui.demo.scaled import socket_record
from billing_ui.server.testing import server_process

CUSTOMER = "demo_enterprise"  # unlimited api_calls in the sample plans
INTERVAL_S = 30.0
"""The refresh interval of every tab (the SDK's ``refetchInterval``)."""


def _metrics_state() -> Any:
    from billing_ui.states.metrics import UsageMetricsState

    return UsageMetricsState


def consumed(tab: Tab, feature: str = "api_calls") -> float | None:
    for metric in tab.meters():
        if metric.get("feature_key") == feature:
            return float(metric["consumed"])
    return None


def has_meter(tab: Tab) -> bool:
    return consumed(tab) is not None


def shows(tab: Tab, value: float) -> bool:
    return consumed(tab) == value


PACE_S = 0.25
"""At most 4 tracks a second from tab A."""


async def _samples(urls: list[str], redis_url: str, n: int) -> tuple[list[float], list[str]]:
    from billing_ui.states import TrackUsageState

    poll, track = handler_name(_metrics_state().poll), handler_name(TrackUsageState.track)
    a = await signed_in_tab(urls[0], CUSTOMER)
    b = await signed_in_tab(urls[1], CUSTOMER)
    try:
        for tab in (a, b):
            await tab.emit(poll)
            await tab.wait_for(partial(has_meter, tab), 60)
        workers = [record[0] for t in (a, b) if (record := socket_record(redis_url, t.token))]
        if len(set(workers)) != 2:
            raise RuntimeError(f"tabs A and B are not on two workers: {workers}")
        latencies = []
        for _ in range(n):
            before = consumed(b)
            assert before is not None
            loop = asyncio.get_running_loop()
            started = loop.time()
            await a.emit(track, {"feature_key": "api_calls", "quantity": 1})
            await b.wait_for(partial(shows, b, before + 1), 30)
            latencies.append(loop.time() - started)
            await a.wait_for(partial(shows, a, before + 1), 30)
            # A person's pace, under the token bucket's default 5 tracks/s per session (at
            # full speed tracks 31 and on are refused, as they should be).
            await asyncio.sleep(max(0.0, started + PACE_S - loop.time()))
        return latencies, workers
    finally:
        for tab in (a, b):
            await tab.close()


def run(*, smoke: bool = False) -> dict[str, object]:
    n = 3 if smoke else 50
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        srv = stack.enter_context(server_process(db_path=tmp / "billing.db"))
        redis_url = stack.enter_context(temp_redis())
        env = {
            "BILLINGOS_API_URL": srv.base_url,
            "REFLEX_REDIS_URL": redis_url,
            "BILLING_UI_REDIS_URL": redis_url,
            "BILLING_UI_REFRESH_INTERVAL": str(INTERVAL_S),
            "BILLING_UI_DEMO_CUSTOMERS": CUSTOMER,
            "GRANIAN_WORKERS": "1",
        }
        urls = [backend.url for backend in start_backends(stack, [env, env], tmp)]
        latencies, workers = asyncio.run(_samples(urls, redis_url, n))
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000
    polling_p50, polling_p95 = INTERVAL_S * 500, INTERVAL_S * 950
    figures = {
        "push_p50_ms": round(p50, 1),
        "push_p95_ms": round(p95, 1),
        "push_max_ms": round(ordered[-1] * 1000, 1),
        "polling_p50_ms": polling_p50,
        "polling_p95_ms": polling_p95,
        "polling_p50_vs_push_p50": round(polling_p50 / p50, 1),
        "samples": len(latencies),
    }
    goals = {"push_p50_ms": "<= 100 ms (per-tab polling: up to 30 s)"}
    checks = {"push_p50_ms": p50 <= 100}
    config = {
        "backend_workers": 2,
        "distinct_worker_instances": len(set(workers)),
        "interval_s": INTERVAL_S,
        "tracks": n,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "baseline": "per-tab polling at the interval: the next tick, uniform in [0, interval]",
    }
    return result("live_meters_workers", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
