"""An update sends what changed, not every entry again (issue 8, part 3, last point).

Driven through Reflex's real event processor against the real local server (conftest), with
the processor's ``emit_update`` going to a sink that stands where the websocket is and keeps
every update a tab would be sent, serialized as Reflex's socket serializes it. A tab checks
``MAX_CHECKS`` features one by one (the app's ``trackable`` names them, so each is known and
each check is stored). Before, each check resent the whole ``checks`` map, so the update that
adds the 64th check was about 64 entries long; now it carries its bucket
(:mod:`billing_ui.states.split_map`), at most ``MAX_CHECKS / BUCKETS`` entries.

The meters likewise: a customer with ``len(METER_FEATURES)`` meters tracks one of them in one
tab, and the customer's other tab is told by a live push. Before, both tabs were sent every
meter again; now each update carries the changed meter's bucket.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from reflex.istate.manager.token import BaseStateToken
from reflex.state import StateUpdate
from reflex_base.event.processor import BaseStateEventProcessor
from reflex_base.utils.format import json_dumps

import billing_ui.states as bs
from bench.map_update_bytes import plans_with_meters
from billing_ui import runtime
from billing_ui import settings as billing_settings
from billing_ui.server.testing import RunningServer, create_customer, running_server
from billing_ui.states import FeatureEntitlementsState, TrackUsageState, UsageMetricsState
from billing_ui.states.entitlements import MAX_CHECKS
from billing_ui.states.live import live_meters
from billing_ui.states.metrics import METER_BUCKETS, metric_for
from billing_ui.states.split_map import BUCKETS

from .conftest import Session, wait_until

FEATURES = [f"feature_{i:02d}" for i in range(MAX_CHECKS)]


class BrowserSink:
    """Stands where the websocket is: keeps the serialized size of every update."""

    def __init__(self) -> None:
        self.updates: list[tuple[int, Any]] = []
        self.tokens: list[str] = []

    async def emit_update(self, update: Any, token: str) -> None:
        self.updates.append((len(json_dumps(update).encode()), update))
        self.tokens.append(token)

    def meter_updates(self, token: str, key: str, since: int) -> list[tuple[int, dict[str, Any]]]:
        """Size and meters carried (by feature key) of each update sent to ``token`` after the
        first ``since`` that carried ``key``'s meter, whatever vars hold the meters."""
        name = UsageMetricsState.get_full_name()
        found = []
        for (size, update), to in zip(self.updates[since:], self.tokens[since:], strict=True):
            part = json.loads(json_dumps(update.delta or {})).get(name, {})
            meters: dict[str, Any] = {}
            for var, value in part.items():
                if var.startswith("metrics") and isinstance(value, list):  # one list var
                    meters |= {m["feature_key"]: m for m in value}
                elif var.startswith("meters_"):  # a bucket
                    meters |= value
            if to == token and key in meters:
                found.append((size, meters))
        return found

    def check_updates(self, key: str) -> list[int]:
        """Sizes of the updates that carried ``key``'s check."""
        name = FeatureEntitlementsState.get_full_name()
        return [
            size
            for size, update in self.updates
            if any(
                part.startswith("checks") and key in (value or {})
                for part, value in (update.delta or {}).get(name, {}).items()
            )
        ]


SINK = BrowserSink()


@pytest.fixture
async def processor() -> AsyncIterator[BaseStateEventProcessor]:
    """The conftest's processor, with the sink as its event namespace."""
    SINK.updates.clear()
    SINK.tokens.clear()
    proc = BaseStateEventProcessor().configure(event_namespace=SINK)  # type: ignore[arg-type]
    async with proc:
        yield proc
    await billing_settings.close_client()


@pytest.fixture(autouse=True)
def many_known_features(configure_billing: Callable[..., bs.BillingSettings]) -> None:
    configure_billing(
        trackable={k: bs.TrackRule() for k in FEATURES},
        browser_burst=10 * MAX_CHECKS,  # the bucket is not what this test is about
    )


async def check(session: Session, key: str) -> int:
    """Check ``key``; the size of the update that brought its entry."""
    await session.send(FeatureEntitlementsState.check, feature_key=key)
    sizes = SINK.check_updates(key)
    assert len(sizes) == 1, f"{key}: {len(sizes)} updates carried its check"
    return sizes[0]


async def test_one_check_sends_its_bucket_not_the_whole_map(session: Session) -> None:
    first = await check(session, FEATURES[0])
    for key in FEATURES[1:-1]:
        await check(session, key)
    last = await check(session, FEATURES[-1])  # the map is full: MAX_CHECKS entries

    ent = await session.get(FeatureEntitlementsState)
    assert sorted(ent.checks) == FEATURES, "every check is kept, up to the cap"
    entry = max(len(json_dumps({k: v})) for k, v in ent.checks.items())  # with its key
    whole = len(json_dumps(ent.checks))
    per_bucket = math.ceil(MAX_CHECKS / BUCKETS)
    # The update that adds the 64th entry is the first one's size plus at most the rest of
    # its bucket, however many entries the map holds (before: plus 63 entries).
    assert last - first <= (per_bucket - 1) * entry, (first, last, entry)
    assert last < whole / 4, f"an update of {last} bytes for a map of {whole}"

    # Past the cap, a new check still sends one bucket, and the map stays at the cap.
    evicting = await check(session, "api_calls")
    ent = await session.get(FeatureEntitlementsState)
    assert len(ent.checks) == MAX_CHECKS and "api_calls" in ent.checks
    assert evicting - first <= (per_bucket - 1) * entry, (first, evicting)


METER_FEATURES = FEATURES[:24]
"""A customer with many meters (each one known to the app, so it can be tracked)."""


class TestMeters:
    @pytest.fixture
    def server(self, tmp_path: Path) -> Iterator[RunningServer]:
        """The local server with a plan of ``len(METER_FEATURES)`` meters (overrides conftest's)."""
        with running_server(
            db_path=tmp_path / "billing.db", plans=plans_with_meters(METER_FEATURES)
        ) as srv:
            yield srv

    @pytest.fixture
    def pushed_to_sink(
        self, processor: BaseStateEventProcessor, configure_billing: Any
    ) -> Iterator[None]:
        """Live pushes go through the processor's state manager and their delta to the sink,
        as ``app.modify_state`` sends it (there is no app here)."""
        manager = processor._root_context.state_manager  # type: ignore[union-attr]

        @asynccontextmanager
        async def modify(token: str) -> AsyncIterator[Any]:
            ident = BaseStateToken(ident=token, cls=UsageMetricsState)
            async with manager.modify_state(ident) as root:
                yield root
                delta = await root._get_resolved_delta()
                root._clean()
                if delta:
                    await SINK.emit_update(StateUpdate(delta=delta), token)

        live = live_meters(runtime.current())
        live.modify = modify
        yield
        live.modify = None

    async def test_one_changed_meter_sends_its_bucket_not_every_meter(
        self,
        processor: BaseStateEventProcessor,
        server: RunningServer,
        proxy: Any,
        pushed_to_sink: None,
    ) -> None:
        from tests.states.test_live_meters import open_tab

        customer = create_customer(server, ["pro"])
        a, b = (
            Session(
                processor, token=f"{n}-{customer}", server=server, proxy=proxy, customer_id=customer
            )
            for n in ("a", "b")
        )
        for tab in (a, b):
            await open_tab(tab)  # signed in, followed by the live meters, meters loaded
        shown = await b.get(UsageMetricsState)
        assert [m.feature_key for m in shown.metrics] == METER_FEATURES, "all, in the API's order"
        whole = len(json_dumps(shown.metrics))
        key = METER_FEATURES[5]
        before = metric_for(shown, key)
        assert before is not None
        since = len(SINK.updates)

        await a.send(TrackUsageState.track, feature_key=key, quantity=3)

        async def b_told() -> bool:
            meter = metric_for(await b.get(UsageMetricsState), key)
            return meter is not None and meter.consumed == before.consumed + 3

        await wait_until(b_told, timeout=5, message="tab B never saw tab A's track")
        per_bucket = math.ceil(len(METER_FEATURES) / METER_BUCKETS)
        for tab, how in ((a, "the track"), (b, "the live push")):
            updates = SINK.meter_updates(tab.token, key, since)
            assert updates, f"{how}: no update carried the meter"
            for size, meters in updates:
                # Before: every meter again (24), about the whole list's bytes.
                assert len(meters) <= per_bucket, f"{how}: an update carried {len(meters)} meters"
                assert size < whole / 2, f"{how}: an update of {size} bytes, {whole} for all"
        assert (await a.get(UsageMetricsState)).metrics == (await b.get(UsageMetricsState)).metrics
