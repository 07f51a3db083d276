"""Benchmark: bytes sent to the browser for one changed entry of a full per-tab map.

    python -m bench.map_update_bytes [--smoke]

One tab checks ``MAX_CHECKS`` features one by one through Reflex's real event processor
(in-memory state manager) against the real local billing server on loopback; the app's
``trackable`` names the features, so each is known and each check is stored. Every state
update the tab would be sent is serialized as Reflex's socket serializes it, by an
``emit_update`` sink standing where the websocket is (it only measures).

Figures: the update that brings the first check (a map of 1), and the one that brings the
last (a map of ``MAX_CHECKS``: one changed entry in a full map). Baseline, from the same run:
that same last update with the map as one var, as Reflex sent it before the map was split
into bucket vars (``billing_ui/states/split_map.py``: Reflex's delta is per var, and the
browser replaces a var whole). ``tests/states/test_update_size.py`` asserts the bound.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

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
from billing_ui.server.testing import create_customer, running_server
from billing_ui.states.entitlements import CHECKS, MAX_CHECKS
from billing_ui.states.split_map import BUCKETS

GOAL = 0.25


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


def carrying(updates: list[Any], key: str) -> Any:
    """The update that brought ``key``'s check (the first to carry it: later updates of its
    bucket carry it again)."""
    name = bs.FeatureEntitlementsState.get_full_name()
    buckets = {b + FIELD_MARKER for b in CHECKS.buckets}
    found = [
        u
        for u in updates
        if any(key in v for k, v in (u.delta or {}).get(name, {}).items() if k in buckets)
    ]
    if not found:
        raise AssertionError(f"{key}: no update carried its check")
    return found[0]


def as_one_var(update: Any, whole: dict[str, Any]) -> dict[str, Any]:
    """``update`` as the wire had it with the map in one var: its bucket replaced by the map."""
    name = bs.FeatureEntitlementsState.get_full_name()
    delta = {state: dict(part) for state, part in update.delta.items()}
    for bucket in CHECKS.buckets:
        delta[name].pop(bucket + FIELD_MARKER, None)
    delta[name]["checks" + FIELD_MARKER] = whole
    return {"delta": delta, "events": update.events, "final": update.final}


async def scenario(base_url: str, key: str, customer: str, features: list[str]) -> dict[str, int]:
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
        handler = bs.FeatureEntitlementsState.check
        name = f"{handler.state_full_name}.{handler.fn.__name__}"
        for feature in features:
            event = Event(name=name, payload={"feature_key": feature})
            await asyncio.gather(*await proc.enqueue_many(token, event))
        root = await manager.get_state(BaseStateToken(ident=token, cls=bs.FeatureEntitlementsState))
        ent = await root.get_state(bs.FeatureEntitlementsState)
        whole = ent.checks
    await billing_settings.close_client()
    if len(whole) != len(features):
        raise AssertionError(f"{len(whole)} checks kept of {len(features)}")
    first, last = carrying(sink.updates, features[0]), carrying(sink.updates, features[-1])
    size = lambda u: len(json_dumps(u).encode())  # noqa: E731 - what Reflex's socket sends
    return {
        "first_entry_update_bytes": size(first),
        "last_entry_update_bytes": size(last),
        "whole_map_update_bytes": size(as_one_var(last, whole)),
        "hydrate_map_bytes": len(json_dumps(whole).encode()),
    }


def run(*, smoke: bool = False) -> dict[str, object]:
    """The same size in both modes: the figure is about a full map, and it takes seconds."""
    features = [f"feature_{i:02d}" for i in range(MAX_CHECKS)]
    config = {"entries": MAX_CHECKS, "buckets": BUCKETS, "smoke": smoke}
    print(f"map_update_bytes: {config}", flush=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(db_path=Path(tmp) / "bench.db", seed=True) as server,
    ):
        customer = create_customer(server, ["pro"])
        figures: dict[str, float] = asyncio.run(
            scenario(server.base_url, server.api_key, customer, features)
        )
    figures["one_entry_vs_whole_map"] = round(
        figures["last_entry_update_bytes"] / figures["whole_map_update_bytes"], 3
    )
    figures["full_map_vs_one_entry_map"] = round(
        figures["last_entry_update_bytes"] / figures["first_entry_update_bytes"], 2
    )
    goals = {"one_entry_vs_whole_map": f"<= {GOAL} (one bucket of {BUCKETS}, not the map)"}
    checks = {"one_entry_vs_whole_map": figures["one_entry_vs_whole_map"] <= GOAL}
    return result("map_update_bytes", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
