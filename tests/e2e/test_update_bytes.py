"""What a tab is sent while its meters poll (issue 8, part 3): nothing when nothing changed.

The demo's Reflex backend runs as its own process (``reflex run --backend-only``) against the
real billing server process, behind the counting fault proxy (``tests/faults.py``, forwarding
only: it counts the backend's upstream metric fetches, so the test knows that ticks happened
without sleeping). A raw socket.io client plays the tab and records every update it is sent.

Before: each tick re-sent the whole ``metrics`` list, its timestamps and ``is_fetching`` twice,
about 4 KB per tab per tick for the demo's meters. Now a tick that finds the same meters sends
nothing, and a tick after one meter changed sends that meter's bucket once (the meters are a
``SplitList`` over bucket vars, ``billing_ui/states/split_map.py``: Reflex replaces a var whole
in the browser), with no timestamps repeated.

During an outage (issue 13): each retry used to flip ``is_fetching`` on and off, two updates a
tick that re-rendered every component bound to the state, charts included, 0.5-1 s of the
browser's main thread each in the dev build. Now, once the failure is shown, the retries send
nothing until something the page states changes (``status.shows_fetching``).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench._reflex_backend import reflex_backend
from bench._socketio import Tab, handler_name
from bench.many_sockets import BACKEND_ENV, FLOOD_CUSTOMER, signed_in_tab
from billing_ui.core._constants import DEFAULT_MAX_RETRIES
from billing_ui.server.testing import ServerProcess, server_process
from billing_ui.states import UsageMetricsState
from billing_ui.states.metrics import METER_BUCKETS
from tests.faults import FaultProxy

METRICS = "/v1/usage/metrics"
TICKS = 3


def metrics_updates(tab: Tab, since: int) -> list[dict[str, Any]]:
    """The parts of the updates after ``since`` that concern the meters' state."""
    key = UsageMetricsState.get_full_name()
    return [u["delta"][key] for u in tab.updates[since:] if key in (u.get("delta") or {})]


def size(parts: list[dict[str, Any]]) -> int:
    return sum(len(json.dumps(p)) for p in parts)


def track_outside_the_app(srv: ServerProcess, quantity: float) -> None:
    r = httpx.post(
        f"{srv.base_url}/v1/usage/track",
        json={"customer_id": FLOOD_CUSTOMER, "feature_key": "api_calls", "quantity": quantity},
        headers={"Authorization": f"Bearer {srv.api_key}"},
        timeout=30,
    )
    r.raise_for_status()


async def _scenario(url: str, srv: ServerProcess, proxy: FaultProxy) -> dict[str, int]:
    tab = await signed_in_tab(url, FLOOD_CUSTOMER)
    try:
        await tab.emit(handler_name(UsageMetricsState.poll))
        await tab.wait_for(lambda: bool(tab.meters()), 30)
        meters = tab.meters()
        one_meter = max(len(json.dumps(m)) for m in meters)
        whole = len(json.dumps(meters))

        # Ticks with nothing new: the backend fetches (counted at the proxy), the tab hears
        # nothing about its meters.
        fetched, heard = len(proxy.seen(METRICS)), len(tab.updates)
        await asyncio.to_thread(
            proxy.wait_for, lambda seen: sum(s.path == METRICS for s in seen) >= fetched + TICKS, 30
        )
        quiet = metrics_updates(tab, heard)

        # One meter changes outside the app: the next tick sends it, and only the meters.
        before = len(tab.updates)
        consumed = next(m["consumed"] for m in meters if m["feature_key"] == "api_calls")
        await asyncio.to_thread(track_outside_the_app, srv, 7)

        def moved() -> bool:
            return any(
                m["feature_key"] == "api_calls" and m["consumed"] == consumed + 7
                for m in tab.meters()
            )

        await tab.wait_for(moved, 30)
        changed = metrics_updates(tab, before)
        return {
            "quiet_updates": len(quiet),
            "quiet_bytes": size(quiet),
            "changed_bytes": size(changed),
            "whole_bytes": whole,
            "one_meter_bytes": one_meter,
            "meters": len(meters),
        }
    finally:
        await tab.close()


Scenario = Callable[[str, ServerProcess, FaultProxy], Awaitable[dict[str, int]]]


def _run(scenario: Scenario, tmp_path: Path) -> dict[str, int]:
    """``scenario(backend_url, server, proxy)`` against the demo's backend (1 s refresh) behind
    the counting proxy in front of a real billing server process; its figures, printed."""
    with (
        server_process(db_path=tmp_path / "billing.db") as srv,
        FaultProxy(srv.base_url) as proxy,
        reflex_backend(
            {**BACKEND_ENV, "BILLINGOS_API_URL": proxy.url, "BILLING_UI_REFRESH_INTERVAL": "1"},
            tmp_path / "backend.log",
        ) as backend,
    ):
        out = asyncio.run(scenario(backend.url, srv, proxy))
    print(out)  # the figures for the report (pytest -s)
    return out


def test_a_tick_that_finds_nothing_new_sends_nothing(tmp_path: Path) -> None:
    out = _run(_scenario, tmp_path)
    assert out["quiet_updates"] == 0 and out["quiet_bytes"] == 0, out
    # The change arrives as its meter's bucket once: no second copy, no other bucket, no
    # per-tick timestamps on top.
    per_bucket = math.ceil(out["meters"] / METER_BUCKETS)
    assert 0 < out["changed_bytes"] <= per_bucket * out["one_meter_bytes"] + 200, out
    assert out["changed_bytes"] < out["whole_bytes"], out


async def _outage(url: str, srv: ServerProcess, proxy: FaultProxy) -> dict[str, int]:
    tab = await signed_in_tab(url, FLOOD_CUSTOMER)
    try:
        await tab.emit(handler_name(UsageMetricsState.poll))
        await tab.wait_for(lambda: bool(tab.meters()), 30)
        # The API goes down for real: the billing server process ends, the proxy in front of
        # it (only counting) finds nothing to connect to.
        srv.process.terminate()
        srv.process.wait(30)
        shown = UsageMetricsState.get_full_name()
        await tab.wait_for(lambda: tab.state(UsageMetricsState).get("status") == "stale", 30)
        heard, tried = len(tab.updates), len(proxy.seen(METRICS))
        # TICKS more ticks, counted where their requests fail (the client tries each fetch
        # 1 + DEFAULT_MAX_RETRIES times).
        attempts = TICKS * (1 + DEFAULT_MAX_RETRIES)

        def retried(seen: list[Any]) -> bool:
            return sum(s.path == METRICS for s in seen) >= tried + attempts

        await asyncio.to_thread(proxy.wait_for, retried, 60)
        during = metrics_updates(tab, heard)
        return {
            "attempts": len(proxy.seen(METRICS)) - tried,
            "updates": len(during),
            "bytes": size(during),
            "other_updates": sum(1 for u in tab.updates[heard:] if shown not in u.get("delta", {})),
        }
    finally:
        await tab.close()


def test_an_outage_sends_nothing_once_the_failure_is_shown(tmp_path: Path) -> None:
    """Fails before: each retry sent ``is_fetching`` true then false (2 updates a tick)."""
    out = _run(_outage, tmp_path)
    assert out["attempts"] >= TICKS * (1 + DEFAULT_MAX_RETRIES), out
    # The stale callout already says "retrying": a retry that fails the same way changes
    # nothing the page states, so it sends nothing (no re-render of the meters or charts).
    assert out["updates"] == 0 and out["bytes"] == 0, out
