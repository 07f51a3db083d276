"""Benchmark: bytes sent to the browser for one changed entry of a full per-tab map.

    python -m bench.map_update_bytes [--smoke]

One tab checks ``MAX_CHECKS`` features one by one through Reflex's real event processor
(in-memory state manager) against the real local billing server on loopback; the app's
``trackable`` names the features, so each is known and each check is stored. Every state
update the tab would be sent is serialized as Reflex's socket serializes it, by an
``emit_update`` sink standing where the websocket is (it only measures).

Then the tab charts each usage feature of the Pro plan by day and by hour (10 charts, each
``UsageHistoryState.load``: a metrics read, the history back-fill, the samples).

Figures, for each map: the update that brings the first entry (a map of 1), and the one that
brings the last (one changed entry in a full map). Baseline, from the same run: that same last
update with the map as one var, as Reflex sent it before the map was split into bucket vars
(``billing_ui/states/split_map.py``: Reflex's delta is per var, and the browser replaces a var
whole). ``tests/states/test_update_size.py`` asserts the bound for the checks.

The meters (``UsageMetricsState.metrics``, 4 buckets): a customer of a plan with
``MANY_METERS`` meters loads them in a tab, then tracks one (``TrackUsageState.track``). Figure:
the largest update after the track that carried that meter, against the same update with the
meters as the one ``metrics`` list they were before (second local server, same run).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import reflex as rx
from reflex.istate.manager.token import BaseStateToken
from reflex_base.constants.state import FIELD_MARKER
from reflex_base.event import Event
from reflex_base.event.processor import BaseStateEventProcessor
from reflex_base.utils.format import json_dumps

import billing_ui.states as bs
from bench._harness import cli, result
from billing_ui import settings as billing_settings
from billing_ui.core import AsyncBillingClient
from billing_ui.server.plans import Plans, parse_plans
from billing_ui.server.testing import create_customer, running_server
from billing_ui.states.entitlements import CHECKS, MAX_CHECKS
from billing_ui.states.history import HISTORIES, UsageHistoryState, history_id
from billing_ui.states.metrics import METER_BUCKETS, METERS
from billing_ui.states.split_map import BUCKETS, SplitMap
from billing_ui.states.track import _TrackTurn

GOAL = 0.25
PLAN_USAGE_FEATURES = ("api_calls", "ai_tokens", "report_exports", "storage_gb", "seats")
"""The seeded Pro plan's usage features: each charted by day and by hour, 10 charts."""
METER_GOAL = 0.4
MANY_METERS: Final = 30
"""Meters of the customer whose one meter changes (the demo's plan has 5)."""


def plans_with_meters(keys: Sequence[str]) -> Plans:
    """A plan ("pro") with one monthly usage meter per key, a limit of 1,000 each."""
    features = {k: {"title": k, "type": "usage_quota", "reset": "month"} for k in keys}
    limits = {k: {"limit": 1000} for k in keys}
    return parse_plans(
        {"features": features, "products": {"pro": {"name": "Pro", "features": limits}}}
    )


class BenchMapAuthState(rx.State):
    _customer_id: str = ""


async def resolver(state: rx.State) -> str | None:
    return (await state.get_state(BenchMapAuthState))._customer_id or None


class Sink:
    """Stands where the websocket is: keeps every update a tab is sent."""

    def __init__(self) -> None:
        self.updates: list[Any] = []

    async def emit_update(self, update: Any, token: str) -> None:
        self.updates.append(update)


def carrying(updates: list[Any], cls: Any, split: SplitMap[Any], key: str) -> Any:
    """The update that brought ``key``'s entry (the first to carry it: later updates of its
    bucket carry it again)."""
    name = cls.get_full_name()
    buckets = {b + FIELD_MARKER for b in split.buckets}
    found = [
        u
        for u in updates
        if any(key in v for k, v in (u.delta or {}).get(name, {}).items() if k in buckets)
    ]
    if not found:
        raise AssertionError(f"{key}: no update carried its entry")
    return found[0]


def as_one_var(
    update: Any, cls: Any, split: SplitMap[Any], whole: object, var: str | None = None
) -> Any:
    """``update`` as the wire had it with the map in one var (``var``, the map's name by
    default): its buckets replaced by ``whole``."""
    name = cls.get_full_name()
    delta = {state: dict(part) for state, part in update.delta.items()}
    for bucket in split.buckets:
        delta[name].pop(bucket + FIELD_MARKER, None)
    delta[name][(var or split.name) + FIELD_MARKER] = whole
    return {"delta": delta, "events": update.events, "final": update.final}


def size(update: Any) -> int:
    """Bytes of ``update`` as Reflex's socket serializes it."""
    return len(json_dumps(update).encode())


def figures_of(
    prefix: str, updates: list[Any], cls: Any, split: SplitMap[Any], whole: dict[str, Any]
) -> dict[str, float]:
    """The update that brought the first entry, the last one (the map then full), and the
    baseline: that last update with the map in one var."""
    keys = list(whole)
    if not keys:
        raise AssertionError(f"{prefix}: the map is empty")
    first = carrying(updates, cls, split, keys[0])
    last = max((carrying(updates, cls, split, k) for k in keys), key=updates.index)
    whole_bytes = size(as_one_var(last, cls, split, whole))
    return {
        f"{prefix}_entries": len(keys),
        f"{prefix}_first_entry_update_bytes": size(first),
        f"{prefix}_last_entry_update_bytes": size(last),
        f"{prefix}_whole_map_update_bytes": whole_bytes,
        f"{prefix}_one_entry_vs_whole_map": round(size(last) / whole_bytes, 3),
    }


async def send(proc: BaseStateEventProcessor, token: str, handler: Any, **payload: Any) -> None:
    """Send a browser's event and wait for it, and for the track sends it handed to tasks of
    their own (a track's handler returns once the track is in line: ``_TrackTurn.later``), as
    tests/states/conftest.py's ``Session.send`` does."""
    before = set(_TrackTurn._running)
    event = Event(name=f"{handler.state_full_name}.{handler.fn.__name__}", payload=payload)
    await asyncio.gather(*await proc.enqueue_many(token, event))
    while started := _TrackTurn._running - before:
        await asyncio.wait(started)


async def scenario(base_url: str, key: str, customer: str, features: list[str]) -> dict[str, float]:
    """Fill the checks to the cap, then chart every usage feature of the plan (day and hour)."""
    sink = Sink()
    bs.configure(
        customer_resolver=resolver,
        trackable={k: bs.TrackRule() for k in features},
        browser_burst=10 * len(features),
        client_factory=lambda: AsyncBillingClient(base_url=base_url, api_key=key),
    )
    proc = BaseStateEventProcessor().configure(event_namespace=sink)  # type: ignore[arg-type]
    token = "tab-map"
    async with proc:
        manager = proc._root_context.state_manager  # type: ignore[union-attr]
        async with manager.modify_state(BaseStateToken(ident=token, cls=BenchMapAuthState)) as root:
            (await root.get_state(BenchMapAuthState))._customer_id = customer
        for feature in features:
            await send(proc, token, bs.FeatureEntitlementsState.check, feature_key=feature)
        for feature in PLAN_USAGE_FEATURES:
            for bucket in ("day", "hour"):
                ident = history_id(feature, bucket)
                await send(proc, token, UsageHistoryState.load, history=ident)
        root = await manager.get_state(BaseStateToken(ident=token, cls=BenchMapAuthState))
        checks = (await root.get_state(bs.FeatureEntitlementsState)).checks
        histories = (await root.get_state(UsageHistoryState)).histories
    await billing_settings.close_client()
    if len(checks) != len(features):
        raise AssertionError(f"{len(checks)} checks kept of {len(features)}")
    return figures_of(
        "checks", sink.updates, bs.FeatureEntitlementsState, CHECKS, checks
    ) | figures_of("histories", sink.updates, UsageHistoryState, HISTORIES, histories)


async def meters_scenario(base_url: str, key: str, customer: str) -> dict[str, float]:
    """Load ``MANY_METERS`` meters in a tab, track one; the update that brought the change."""
    sink = Sink()
    keys = [f"meter_{i:02d}" for i in range(MANY_METERS)]
    bs.configure(
        customer_resolver=resolver,
        trackable={k: bs.TrackRule() for k in keys},
        client_factory=lambda: AsyncBillingClient(base_url=base_url, api_key=key),
    )
    proc = BaseStateEventProcessor().configure(event_namespace=sink)  # type: ignore[arg-type]
    token, changed = "tab-meters", keys[MANY_METERS // 2]
    async with proc:
        manager = proc._root_context.state_manager  # type: ignore[union-attr]
        async with manager.modify_state(BaseStateToken(ident=token, cls=BenchMapAuthState)) as root:
            (await root.get_state(BenchMapAuthState))._customer_id = customer
        await send(proc, token, bs.UsageMetricsState.refetch)
        since = len(sink.updates)
        await send(proc, token, bs.TrackUsageState.track, feature_key=changed, quantity=1)
        root = await manager.get_state(BaseStateToken(ident=token, cls=BenchMapAuthState))
        meters = (await root.get_state(bs.UsageMetricsState)).metrics
    await billing_settings.close_client()
    if [m.feature_key for m in meters] != keys:
        raise AssertionError(f"{len(meters)} meters shown of {MANY_METERS}")
    name, buckets = bs.UsageMetricsState.get_full_name(), {b + FIELD_MARKER for b in METERS.buckets}
    after = [
        u
        for u in sink.updates[since:]
        if any(changed in v for k, v in (u.delta or {}).get(name, {}).items() if k in buckets)
    ]
    if not after:
        raise AssertionError(f"{changed}: no update after the track carried its meter")
    update = max(after, key=size)
    whole_bytes = size(as_one_var(update, bs.UsageMetricsState, METERS, meters, var="metrics"))
    return {
        "meters_entries": len(meters),
        "meters_one_meter_update_bytes": size(update),
        "meters_whole_list_update_bytes": whole_bytes,
        "meters_one_entry_vs_whole_map": round(size(update) / whole_bytes, 3),
    }


def run(*, smoke: bool = False) -> dict[str, object]:
    """The same size in both modes: the figure is about a full map, and it takes seconds."""
    features = [f"feature_{i:02d}" for i in range(MAX_CHECKS)]
    charts = 2 * len(PLAN_USAGE_FEATURES)
    config = {
        "checks": MAX_CHECKS,
        "charts": charts,
        "buckets": BUCKETS,
        "meters": MANY_METERS,
        "meter_buckets": METER_BUCKETS,
        "smoke": smoke,
    }
    print(f"map_update_bytes: {config}", flush=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(db_path=Path(tmp) / "bench.db", seed=True) as server,
    ):
        customer = create_customer(server, ["pro"])
        figures: dict[str, float] = asyncio.run(
            scenario(server.base_url, server.api_key, customer, features)
        )
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(
            db_path=Path(tmp) / "meters.db",
            plans=plans_with_meters([f"meter_{i:02d}" for i in range(MANY_METERS)]),
        ) as server,
    ):
        customer = create_customer(server, ["pro"])
        figures |= asyncio.run(meters_scenario(server.base_url, server.api_key, customer))
    # The goal is on the checks, the map that reaches its cap. A fresh customer's charts are
    # a point or two each, so the rest of a history update (``loading``) weighs as much as a
    # chart, and 10 charts are not the cap (16): that ratio is reported, not judged.
    name = "checks_one_entry_vs_whole_map"
    goals = {name: f"<= {GOAL} (one bucket of {BUCKETS}, not the map)"}
    checks = {name: figures[name] <= GOAL}
    # The meters: a bucket of 4 holds a quarter of them, plus the rest of the track's update.
    meters = "meters_one_entry_vs_whole_map"
    goals[meters] = f"<= {METER_GOAL} (one bucket of {METER_BUCKETS}, not every meter)"
    checks[meters] = figures[meters] <= METER_GOAL
    return result("map_update_bytes", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
