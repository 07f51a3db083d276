"""A burst of tracks from one tab arrives as data, not as suspended tasks (issue 8 §4, issue 12
§3: the backend's RSS after a flood).

Why it matters: the RSS a flood leaves behind follows its peak of live objects, and the peak
came from the arrival: as background events, a tab's twenty clicks were twenty Reflex tasks at
once, each suspended at the tab's state lock with its chain of coroutines, before any of them
reached the ``FairGate``'s line. ``track`` is now a foreground event (``billing_event_in_line``):
Reflex keeps a tab's foreground events in its per-tab line as data and runs them one at a time.

Through Reflex's real event pipeline against the real local server. The tab's state lock is held
(as a flood's other events of the tab hold it) while the burst arrives, and every turn of the
gate is held (as a flood's other tabs hold them), so nothing is sent.
"""

from __future__ import annotations

import asyncio

from reflex.istate.manager.token import BaseStateToken

from billing_ui.states import TrackUsageState
from billing_ui.states import track as track_module

from .conftest import Session, wait_until
from .test_track_unknown_outcome import recorded

BURST = 8


def _track_tasks() -> list[asyncio.Task[object]]:
    """Reflex's tasks running a track event now (Reflex names them ``reflex_event|<event>|``)."""
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith("reflex_event|") and ".track|" in t.get_name()
    ]


async def test_a_burst_waits_as_data_not_as_one_suspended_task_per_click(
    session: Session,
) -> None:
    gate = track_module._TrackTurn._gate_of_loop()
    for _ in range(gate.limit):  # other tabs hold every turn
        await gate.acquire("another tab")
    manager = session.processor._root_context.state_manager  # type: ignore[union-attr]
    queue = session.processor._queue
    assert queue is not None
    before = recorded(session)
    try:
        async with manager.modify_state(
            BaseStateToken(ident=session.token, cls=TrackUsageState)
        ):  # the tab is busy: its lock is held while the burst arrives
            futures = []
            for _ in range(BURST):
                futures += await session.start(
                    TrackUsageState.track, feature_key="api_calls", quantity=1
                )
            await wait_until(queue.empty, timeout=10, message="the processor took no events")
            # As background events these were BURST tasks here, each waiting for the lock.
            assert len(_track_tasks()) <= 1, f"{len(_track_tasks())} tasks for {BURST} clicks"
        await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
        await wait_until(
            lambda: gate.waiting == BURST, timeout=10, message="the tracks are not in line"
        )
        # Every click's handler has returned: the burst waits in the gate's line as data.
        assert _track_tasks() == [] and not track_module._TrackTurn._running
        state = await session.get(TrackUsageState)
        assert state.is_pending and state.pending_features == ["api_calls"] * BURST
        assert recorded(session) == before, "sent before its turn"
    finally:
        for _ in range(gate.limit):
            gate.release()

    async def _all_sent() -> bool:
        state = await session.get(TrackUsageState)
        return state.is_success and not state.is_pending

    await wait_until(_all_sent, timeout=60, message="the burst's tracks never settled")
    assert recorded(session) - before == BURST
    # The last track gives its turn back once its write's `async with` has returned; the tab
    # may show it settled a moment before (on Redis the write saves, then sends the delta).
    await wait_until(
        lambda: gate.inside == 0 and gate.waiting == 0,
        timeout=10,
        message="the burst's turns were not all given back (gate.inside, gate.waiting)",
    )
