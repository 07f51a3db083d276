"""An update sends what changed, not every entry again (issue 8, part 3, last point).

Driven through Reflex's real event processor against the real local server (conftest), with
the processor's ``emit_update`` going to a sink that stands where the websocket is and keeps
every update a tab would be sent, serialized as Reflex's socket serializes it. A tab checks
``MAX_CHECKS`` features one by one (the app's ``trackable`` names them, so each is known and
each check is stored). Before, each check resent the whole ``checks`` map, so the update that
adds the 64th check was about 64 entries long; now it carries its bucket
(:mod:`billing_ui.states.split_map`), at most ``MAX_CHECKS / BUCKETS`` entries.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from reflex_base.event.processor import BaseStateEventProcessor
from reflex_base.utils.format import json_dumps

import billing_ui.states as bs
from billing_ui import settings as billing_settings
from billing_ui.states import FeatureEntitlementsState
from billing_ui.states.entitlements import MAX_CHECKS
from billing_ui.states.split_map import BUCKETS

from .conftest import Session

FEATURES = [f"feature_{i:02d}" for i in range(MAX_CHECKS)]


class BrowserSink:
    """Stands where the websocket is: keeps the serialized size of every update."""

    def __init__(self) -> None:
        self.updates: list[tuple[int, Any]] = []

    async def emit_update(self, update: Any, token: str) -> None:
        self.updates.append((len(json_dumps(update).encode()), update))

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
