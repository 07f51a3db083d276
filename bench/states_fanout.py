"""Benchmark: many tabs, few customers, one refresh interval — how many upstream requests?

    python -m bench.states_fanout [--sessions 1000] [--customers 10] [--interval 2]

1,000 simulated sessions (Reflex client tokens) over 10 customers each run the real
``UsageMetricsState.poll`` loop through Reflex's real event processor (in-memory state manager),
against the real local billing server on loopback. Sessions start spread over the first interval,
as real tabs would. Reported:

- upstream metric requests during one interval, counted on the wire by an httpx request hook
  (target <= 10: one per customer), and without the shared cache for comparison (each tab
  would make its own request: 1,000);
- CPU time of the event loop's thread per session tick;
- the serialized size of the three billing states for one client with 10 metrics, as Reflex
  sends it on hydrate (target <= 8 KB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import reflex as rx
from reflex.istate.manager.token import BaseStateToken
from reflex_base.event import Event
from reflex_base.event.processor import BaseStateEventProcessor
from reflex_base.utils.format import json_dumps

import billing_ui.states as bs
from billing_ui.core import AsyncBillingClient
from billing_ui.server.plans import parse_plans
from billing_ui.server.testing import create_customer, running_server
from billing_ui.states import _runtime as runtime
from billing_ui.states import settings as bs_settings

TEN_FEATURES = [f"metric_{i}" for i in range(10)]


class BenchAuthState(rx.State):
    _customer_id: str = ""


async def resolver(state: rx.State) -> str | None:
    return (await state.get_state(BenchAuthState))._customer_id or None


def plans_with_ten_metrics() -> Any:
    features = {
        k: {"title": f"Metric {i}", "type": "usage_quota", "reset": "month"}
        for i, k in enumerate(TEN_FEATURES)
    }
    features["flag"] = {"title": "A flag", "type": "boolean_flag"}
    product_features: dict[str, Any] = {
        k: {"limit": 1000 * (i + 1)} for i, k in enumerate(TEN_FEATURES)
    }
    product_features["flag"] = True
    return parse_plans(
        {"features": features, "products": {"pro": {"name": "Pro", "features": product_features}}}
    )


class Counter:
    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)


async def sign_in(proc: BaseStateEventProcessor, token: str, customer: str) -> None:
    manager = proc._root_context.state_manager  # type: ignore[union-attr]
    async with manager.modify_state(BaseStateToken(ident=token, cls=BenchAuthState)) as root:
        (await root.get_state(BenchAuthState))._customer_id = customer


def poll_event() -> Event:
    h = bs.UsageMetricsState.poll
    return Event(name=f"{h.state_full_name}.{h.fn.__name__}", payload={})


async def fanout(
    base_url: str,
    key: str,
    customers: list[str],
    sessions: int,
    interval: float,
    *,
    shared_cache: bool,
    steady_intervals: int = 3,
) -> dict[str, float]:
    counter = Counter()
    bs.configure(
        customer_resolver=resolver,
        refresh_interval=interval,
        client_factory=lambda: AsyncBillingClient(
            base_url=base_url,
            api_key=key,
            http_client=httpx.AsyncClient(
                event_hooks={"request": [counter]},
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            ),
        ),
    )
    if not shared_cache:
        # Every fetch sees an empty cache: what each tab would do on its own.
        bs_settings.cache.fetch = _uncached  # type: ignore[method-assign]
    proc = BaseStateEventProcessor().configure()
    rng = random.Random(7)
    async with proc:
        tokens = [f"tab-{i}" for i in range(sessions)]
        for i, token in enumerate(tokens):
            await sign_in(proc, token, customers[i % len(customers)])
        # Warm the customers' session tokens and entitlements so the interval counts metrics.
        for c in customers:
            await runtime.queries.entitlements(c, stale_time=3600)
        counter.paths.clear()
        t0 = time.monotonic()
        starts = sorted(rng.uniform(0, interval) for _ in tokens)
        for token, at in zip(tokens, starts, strict=True):
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await proc.enqueue_many(token, poll_event())
        # Steady state: every tab is polling; count the requests of the next full intervals.
        await asyncio.sleep(max(0.0, t0 + interval - time.monotonic()))
        first_interval = counter.paths.count("/v1/usage/metrics")
        before, cpu0, t1 = first_interval, time.thread_time(), time.monotonic()
        await asyncio.sleep(interval * steady_intervals)
        steady = counter.paths.count("/v1/usage/metrics") - before
        cpu = time.thread_time() - cpu0
        elapsed = time.monotonic() - t1
        manager = proc._root_context.state_manager  # type: ignore[union-attr]
        empty = 0
        for token in tokens:
            root = await manager.get_state(BaseStateToken(ident=token, cls=bs.UsageMetricsState))
            if not (await root.get_state(bs.UsageMetricsState)).metrics:
                empty += 1
    if not shared_cache:
        del bs_settings.cache.fetch  # type: ignore[method-assign]
    ticks = sessions * elapsed / interval
    return {
        "metric_requests_first_interval": first_interval,
        "metric_requests_per_interval_steady": round(steady / (elapsed / interval), 2),
        "cpu_ms_per_session_tick": round(cpu / ticks * 1000, 3),
        "cpu_ms_per_interval_all_sessions": round(cpu / (elapsed / interval) * 1000, 1),
        "sessions_without_data": empty,
    }


async def _uncached(key: Any, fetcher: Any, *, stale_time: float) -> Any:
    from billing_ui.core.cache import CacheEntry

    data = await fetcher()
    return CacheEntry(data=data, updated_at=time.time(), fetched_at=time.monotonic())


async def state_size(base_url: str, key: str, customer: str) -> dict[str, int]:
    bs.configure(
        customer_resolver=resolver,
        client_factory=lambda: AsyncBillingClient(base_url=base_url, api_key=key),
    )
    proc = BaseStateEventProcessor().configure()
    sizes: dict[str, int] = {}
    async with proc:
        await sign_in(proc, "size-tab", customer)
        for handler in (bs.UsageMetricsState.refetch, bs.FeatureEntitlementsState.load):
            name = f"{handler.state_full_name}.{handler.fn.__name__}"
            await asyncio.gather(*await proc.enqueue_many("size-tab", Event(name=name, payload={})))
        manager = proc._root_context.state_manager  # type: ignore[union-attr]
        for cls in (bs.UsageMetricsState, bs.FeatureEntitlementsState, bs.TrackUsageState):
            root = await manager.get_state(BaseStateToken(ident="size-tab", cls=cls))
            state = await root.get_state(cls)
            sizes[cls.__name__] = len(json_dumps(state.dict(include_computed=True)).encode())
        metrics = await root.get_state(bs.UsageMetricsState)
        sizes["metrics_count"] = len(metrics.metrics)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=10)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(db_path=Path(tmp) / "bench.db", plans=plans_with_ten_metrics()) as server,
    ):
        customers = [create_customer(server, ["pro"]) for _ in range(args.customers)]
        shared = asyncio.run(
            fanout(
                server.base_url,
                server.api_key,
                customers,
                args.sessions,
                args.interval,
                shared_cache=True,
            )
        )
        alone = asyncio.run(
            fanout(
                server.base_url,
                server.api_key,
                customers,
                args.sessions,
                args.interval,
                shared_cache=False,
            )
        )
        sizes = asyncio.run(state_size(server.base_url, server.api_key, customers[0]))
    report = {
        "sessions": args.sessions,
        "customers": args.customers,
        "interval_s": args.interval,
        "shared_cache": shared,
        "no_shared_cache": alone,
        "state_bytes": sizes,
        "state_bytes_total": sum(v for k, v in sizes.items() if k != "metrics_count"),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
