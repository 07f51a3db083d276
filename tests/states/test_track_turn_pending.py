"""A track waiting for its turn at the FairGate (``states/track.py``'s ``_TrackTurn``) shows as
pending in its tab at once, not only once it is admitted (issue 8, part 4).

Through Reflex's real event pipeline against the real local server. Every slot of the gate is
held by another "tab" (the gate's own ``acquire``, as a flood's tracks would hold it), so the
track must wait; while it waits, its tab must say ``is_pending`` for its feature. Once the
slots come free it is sent, counted once, and the tab is no longer pending.
"""

from __future__ import annotations

import asyncio

from billing_ui.states import TrackUsageState
from billing_ui.states import track as track_module

from .conftest import Session, wait_until
from .test_track_unknown_outcome import recorded


async def _pending_for(session: Session, key: str) -> bool:
    state = await session.get(TrackUsageState)
    return state.is_pending and state.pending_features == [key]


async def test_a_track_waiting_for_its_turn_is_pending_at_once(session: Session) -> None:
    gate = track_module._TrackTurn._gate_of_loop()
    for _ in range(gate.limit):  # a flood of other tabs holds every slot
        await gate.acquire("another tab")
    before = recorded(session)
    fetched = session.upstream("/v1/usage/metrics")
    task = asyncio.create_task(
        session.send(TrackUsageState.track, feature_key="api_calls", quantity=1)
    )
    try:
        await wait_until(
            lambda: _pending_for(session, "api_calls"),
            timeout=5,
            message="the waiting track did not show as pending",
        )
        assert gate.waiting == 1, "the track did not wait for a turn"
        assert recorded(session) == before, "sent before its turn"
        # The handler returned although the track still waits for its turn.
        await asyncio.wait_for(task, timeout=10)
        assert gate.waiting == 1 and recorded(session) == before
    finally:
        for _ in range(gate.limit):
            gate.release()

    async def _succeeded() -> bool:
        state = await session.get(TrackUsageState)
        return state.is_success and not state.is_pending and state.pending_features == []

    await wait_until(_succeeded, timeout=30, message="the track's outcome never reached its tab")
    # The settled burst's refetch, which the handler used to yield, is queued all the same.
    await wait_until(
        lambda: session.upstream("/v1/usage/metrics") > fetched,
        timeout=30,
        message="no refetch after the deferred track",
    )
    assert recorded(session) - before == 1
    assert gate.inside == 0 and gate.waiting == 0
