"""TrackUsageState with a durable outbox (``configure(track_outbox=UsageTracker(...))``): a
track the billing API cannot take is kept, the tab says "queued, will be sent" with the count,
and the tracker's worker delivers it — once (issue 12).

Through Reflex's real event pipeline against the real local server; the fault proxy closes the
connections (the API is down, on demand). Counts come from the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing_ui import settings as bs
from billing_ui.core import BillingClient
from billing_ui.core.outbox_sqlite import SQLiteOutboxStore
from billing_ui.core.tracker import UsageTracker
from billing_ui.states import TrackUsageState
from tests.faults import close
from tests.outbox.helpers import backed_off

from .conftest import Session, wait_until

TRACK, BATCH = "/v1/usage/track", "/v1/usage/track-batch"


@pytest.fixture
def tracker(
    session: Session, configure_billing: Callable[..., bs.BillingSettings], tmp_path: Path
) -> Iterator[UsageTracker]:
    client = BillingClient(base_url=session.proxy.url, max_retries=0, timeout=2.0)
    t = UsageTracker(client, outbox_path=tmp_path / "outbox.db", flush_interval=0.1)
    configure_billing(track_outbox=t)
    yield t
    t.shutdown()
    client.close()


def consumed(session: Session, feature: str) -> float:
    r = httpx.get(
        f"{session.server.base_url}/v1/usage/metrics",
        params={"customer_id": session.customer_id},
        headers=session.server.auth(),
    )
    return float(next(m["consumed"] for m in r.json()["metrics"] if m["feature_key"] == feature))


async def test_down_tracks_are_queued_shown_with_the_count_and_delivered_once(
    session: Session, tracker: UsageTracker
) -> None:
    session.proxy.on(TRACK, *[close()] * 100)
    session.proxy.on(BATCH, *[close()] * 100)
    for n in (1, 2):
        await asyncio.wait_for(
            session.send(TrackUsageState.track, feature_key="api_calls", quantity=1), 30
        )
        state = await session.get(TrackUsageState)
        assert (state.queued_feature, state.queued) == ("api_calls", n)
        assert not state.is_success and not state.is_error and state.unconfirmed == []
    assert tracker.stats().depth == 2 and consumed(session, "api_calls") == 0
    session.proxy.clear()  # back
    await wait_until(lambda: _drained(tracker), message="the outbox never drained")
    assert consumed(session, "api_calls") == 2
    keys = {r.idempotency_key for r in session.proxy.seen(TRACK)}
    batched = [e["idempotency_key"] for r in session.proxy.seen(BATCH)[-1:] for e in _events(r)]
    assert set(batched) <= keys  # the outbox sent the keys of the first attempts


async def test_fail_closed_features_and_final_refusals_are_not_queued(
    session: Session, tracker: UsageTracker, configure_billing: Callable[..., Any]
) -> None:
    configure_billing(
        track_outbox=tracker,
        trackable={"seats": bs.TrackRule(max_quantity=1), "api_calls": bs.TrackRule()},
    )
    session.proxy.on(TRACK, *[close()] * 100)
    task = asyncio.create_task(session.send(TrackUsageState.track, feature_key="seats"))
    await wait_until(lambda: _unconfirmed(session, "seats"), message="seats were queued?")
    assert tracker.stats().depth == 0
    session.proxy.clear()
    await asyncio.wait_for(task, 30)
    state = await session.get(TrackUsageState)
    assert state.is_success and state.queued_feature == ""


async def _drained(tracker: UsageTracker) -> bool:
    return (await asyncio.to_thread(tracker.stats)).depth == 0


async def _unconfirmed(session: Session, key: str) -> bool:
    return (await session.get(TrackUsageState)).unconfirmed == [key]


def _events(request: Any) -> list[dict[str, Any]]:
    body = request.json()
    return list(body["events"]) if isinstance(body, dict) else []


async def test_a_direct_track_that_goes_through_sends_the_backed_off_backlog(
    session: Session, configure_billing: Callable[..., bs.BillingSettings], tmp_path: Path
) -> None:
    """Queued tracks back off after an outage (next attempt ~16 s ahead, on a clock that then
    stands still). A tab's direct track that reaches the API tells the tracker
    (``UsageTracker.api_answered``), whose worker sends the backlog at once, with no probe due
    (``probe_interval`` an hour)."""
    store = SQLiteOutboxStore(tmp_path / "outbox.db")
    outbox = backed_off(store, session.customer_id, 3)
    client = BillingClient(base_url=session.server.base_url, max_retries=0, timeout=2.0)
    tracker = UsageTracker(client, outbox=outbox, flush_interval=0.1, probe_interval=3600)
    configure_billing(track_outbox=tracker)
    try:
        await asyncio.wait_for(
            session.send(TrackUsageState.track, feature_key="api_calls", quantity=1), 30
        )
        assert (await session.get(TrackUsageState)).is_success
        await wait_until(lambda: _drained(tracker), message="the backlog waited for its backoff")
        assert consumed(session, "api_calls") == 4
    finally:
        tracker.shutdown()
        client.close()
        store.close()
