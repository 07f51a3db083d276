"""Benchmark: many tabs, few customers, one refresh interval - upstream requests, CPU, bytes.

    python -m bench.states_fanout [--smoke]

1,000 simulated sessions (Reflex client tokens) over 10 customers each run the real
``UsageMetricsState.poll`` loop through Reflex's real event processor (in-memory state manager),
against the real local billing server on loopback. Sessions start spread over the first
interval, as real tabs would. Two arms, one after the other in the same run:

- **shared cache** (billing_ui): the process-wide query cache; the tabs of one customer share
  one metrics request per interval, and entitlements are refreshed every 5 minutes;
- **per-tab baseline** (what BillingOS's React hooks do): every tab keeps its own cache, so it
  fetches its own metrics every interval and its own entitlements at the SDK's staleTime (5
  minutes). It is run through the same code with one customer per tab (1,000 customers on the
  same plan), which gives every tab its own cache entries and nothing else different.

Reported for each arm over the steady-state intervals: upstream requests per interval (every
request counted on the wire by an httpx hook), CPU of the event loop's thread per interval
(the app server's cost), and bytes of state deltas sent to the browsers per interval (counted
where the websocket would send them: an ``emit_update`` sink handed to the event processor,
which only measures). And the serialized size of all five billing states for one customer
with 10 metrics and 10 entitlements, as Reflex sends them on hydrate.
"""

from __future__ import annotations

import asyncio
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
from bench._harness import cli, result
from billing_ui.core import AsyncBillingClient
from billing_ui.server.plans import parse_plans
from billing_ui.server.testing import create_customer, running_server
from billing_ui.states.history import UsageHistoryState
from billing_ui.states.nudge import UpgradeNudgeState

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
    product_features: dict[str, Any] = {
        k: {"limit": 1000 * (i + 1)} for i, k in enumerate(TEN_FEATURES)
    }
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


def handler_event(handler: Any, **payload: Any) -> Event:
    return Event(name=f"{handler.state_full_name}.{handler.fn.__name__}", payload=payload)


class BrowserSink:
    """Stands where the websocket is: counts the bytes of every state update sent to a tab."""

    def __init__(self) -> None:
        self.bytes = 0

    async def emit_update(self, update: Any, token: str) -> None:
        self.bytes += len(json_dumps(update).encode())  # what Reflex's socket serializes


async def fanout(
    base_url: str, key: str, tab_customers: list[str], interval: float, steady_intervals: int
) -> dict[str, float]:
    """Run one poll loop per entry of ``tab_customers``; figures per steady-state interval."""
    counter, sink = Counter(), BrowserSink()
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
    proc = BaseStateEventProcessor().configure(event_namespace=sink)  # type: ignore[arg-type]
    rng = random.Random(7)
    async with proc:
        tokens = [f"tab-{i}" for i in range(len(tab_customers))]
        for token, customer in zip(tokens, tab_customers, strict=True):
            await sign_in(proc, token, customer)
        t0 = time.monotonic()
        starts = sorted(rng.uniform(0, interval) for _ in tokens)
        for token, at in zip(tokens, starts, strict=True):
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await proc.enqueue_many(token, handler_event(bs.UsageMetricsState.poll))
        # Steady state: every tab is polling (the first fetches, entitlements included, are
        # behind); count the next full intervals.
        await asyncio.sleep(max(0.0, t0 + 2 * interval - time.monotonic()))
        requests0, bytes0 = len(counter.paths), sink.bytes
        cpu0, t1 = time.thread_time(), time.monotonic()
        await asyncio.sleep(interval * steady_intervals)
        intervals = (time.monotonic() - t1) / interval
        cpu = time.thread_time() - cpu0
        steady = counter.paths[requests0:]
        sent = sink.bytes - bytes0
        manager = proc._root_context.state_manager  # type: ignore[union-attr]
        empty = 0
        for token in tokens:
            root = await manager.get_state(BaseStateToken(ident=token, cls=bs.UsageMetricsState))
            if not (await root.get_state(bs.UsageMetricsState)).metrics:
                empty += 1
    return {
        "upstream_requests_per_interval": round(len(steady) / intervals, 1),
        "metric_requests_per_interval": round(steady.count("/v1/usage/metrics") / intervals, 1),
        "cpu_ms_per_interval": round(cpu / intervals * 1000, 1),
        # What a user sizes a server by: the share of one core these tabs keep busy.
        "core_percent_per_1000_tabs": round(
            cpu / (intervals * interval) * 100 * 1000 / len(tokens), 1
        ),
        "kb_to_browsers_per_interval": round(sent / intervals / 1000, 1),
        "tabs_without_data": empty,
    }


async def state_size(base_url: str, key: str, customer: str) -> dict[str, int]:
    """Bytes of each billing state for one signed-in tab with everything loaded."""
    bs.configure(
        customer_resolver=resolver,
        client_factory=lambda: AsyncBillingClient(base_url=base_url, api_key=key),
    )
    proc = BaseStateEventProcessor().configure()
    sizes: dict[str, int] = {}
    async with proc:
        await sign_in(proc, "size-tab", customer)
        events = [
            handler_event(bs.UsageMetricsState.refetch),
            handler_event(bs.FeatureEntitlementsState.load),
            handler_event(UsageHistoryState.load, history=TEN_FEATURES[0]),
            handler_event(UpgradeNudgeState.dismiss, feature_key=TEN_FEATURES[1]),
        ]
        await asyncio.gather(*await proc.enqueue_many("size-tab", *events))
        manager = proc._root_context.state_manager  # type: ignore[union-attr]
        for cls in (
            bs.UsageMetricsState,
            bs.FeatureEntitlementsState,
            bs.TrackUsageState,
            UsageHistoryState,
            UpgradeNudgeState,
        ):
            root = await manager.get_state(BaseStateToken(ident="size-tab", cls=cls))
            state = await root.get_state(cls)
            sizes[cls.__name__] = len(json_dumps(state.dict(include_computed=True)).encode())
        metrics = await root.get_state(bs.UsageMetricsState)
        entitlements = await root.get_state(bs.FeatureEntitlementsState)
        histories = await root.get_state(UsageHistoryState)
        assert len(metrics.metrics) == len(TEN_FEATURES), metrics.metrics
        assert len(entitlements.entitlements) == len(TEN_FEATURES), entitlements.entitlements
        assert histories.histories, "the history was not loaded"
    return sizes


STATE_BYTES_GOAL = 8000


def run(*, smoke: bool = False) -> dict[str, object]:
    sessions, customers, interval, steady = (20, 2, 0.5, 1) if smoke else (1000, 10, 2.0, 3)
    config = {
        "sessions": sessions,
        "customers": customers,
        "interval_s": interval,
        "steady_intervals": steady,
        "entitlements_stale_s": bs.BillingSettings().entitlements_refresh_interval,
    }
    print(f"states_fanout: {config}", flush=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(db_path=Path(tmp) / "bench.db", plans=plans_with_ten_metrics()) as server,
    ):
        shared_customers = [create_customer(server, ["pro"]) for _ in range(customers)]
        tab_customers = [shared_customers[i % customers] for i in range(sessions)]
        own_customers = [create_customer(server, ["pro"]) for _ in range(sessions)]
        shared = asyncio.run(
            fanout(server.base_url, server.api_key, tab_customers, interval, steady)
        )
        per_tab = asyncio.run(
            fanout(server.base_url, server.api_key, own_customers, interval, steady)
        )
        sizes = asyncio.run(state_size(server.base_url, server.api_key, shared_customers[0]))
    figures: dict[str, float] = {}
    for name, arm in (("shared", shared), ("per_tab", per_tab)):
        figures |= {f"{name}_{k}": v for k, v in arm.items()}
    for k in (
        "upstream_requests_per_interval",
        "cpu_ms_per_interval",
        "kb_to_browsers_per_interval",
    ):
        figures[f"per_tab_over_shared_{k}"] = round(per_tab[k] / shared[k], 2) if shared[k] else 0.0
    figures |= {f"state_bytes_{name}": size for name, size in sizes.items()}
    figures["state_bytes_total"] = sum(sizes.values())
    goals = {
        "shared_metric_requests_per_interval": f"<= {customers} (one per customer)",
        "shared_tabs_without_data": "0",
        "state_bytes_total": f"<= {STATE_BYTES_GOAL:,} bytes",
    }
    checks = {
        "shared_metric_requests_per_interval": shared["metric_requests_per_interval"] <= customers,
        "shared_tabs_without_data": shared["tabs_without_data"] == 0,
        "state_bytes_total": figures["state_bytes_total"] <= STATE_BYTES_GOAL,
    }
    return result("states_fanout", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
