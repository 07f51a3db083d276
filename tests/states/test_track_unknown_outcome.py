"""A track whose outcome is unknown is neither called a success nor a failure until the billing
API answers (issue 8, part 2).

Through Reflex's real event pipeline against the real local server; the fault proxy loses the
answers (the faults a real server cannot produce on demand): ``drop_response`` lets the server
record the track and closes the connection before the client sees the answer; ``close`` drops
the request before the server sees it. The client makes no retries of its own here
(``max_retries=0``), so each fault reaches the state as an unknown outcome.

What is counted: for every track, what the tab finally reported (success or failure) and what
the server recorded. They must agree, call by call and in total, and every retry must carry
the first attempt's idempotency key.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from billing_ui.states import TrackUsageState, UsageMetricsState
from billing_ui.states import track as track_module
from tests.faults import Action, close, drop_response

from .conftest import Session, wait_until

TRACK = "/v1/usage/track"

CASES: list[tuple[str, tuple[Action, ...]]] = [
    ("answered", ()),
    ("recorded, answer lost", (drop_response(),)),
    ("never arrived", (close(),)),
    ("down for three attempts", (close(), close(), drop_response())),
]


def recorded(session: Session) -> float:
    r = httpx.get(
        f"{session.server.base_url}/v1/usage/metrics",
        params={"customer_id": session.customer_id, "feature_key": "api_calls"},
        headers=session.server.auth(),
    )
    r.raise_for_status()
    return float(
        next(m["consumed"] for m in r.json()["metrics"] if m["feature_key"] == "api_calls")
    )


@pytest.fixture(autouse=True)
def quick_confirmation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(track_module, "CONFIRM_FIRST", 0.1)


async def test_recorded_and_reported_agree_case_by_case(session: Session) -> None:
    await session.send(UsageMetricsState.refetch)
    reported: Counter[str] = Counter()
    said_unconfirmed: Counter[str] = Counter()
    rounds = 3
    for _ in range(rounds):
        for name, faults in CASES:
            if faults:
                session.proxy.on(TRACK, *faults)
            sent_before = len(session.proxy.seen(TRACK))
            before = recorded(session)
            task = asyncio.create_task(
                session.send(TrackUsageState.track, feature_key="api_calls", quantity=1)
            )
            if faults:
                await wait_until(
                    lambda: _shows_unconfirmed(session), message=f"{name}: never 'not confirmed'"
                )
                said_unconfirmed[name] += 1
            await asyncio.wait_for(task, timeout=30)
            state = await session.get(TrackUsageState)
            assert state.unconfirmed == [] and not state.is_pending, name
            outcome = "success" if state.is_success else "failure"
            reported[outcome] += 1
            assert recorded(session) - before == (1 if state.is_success else 0), name
            attempts = session.proxy.seen(TRACK)[sent_before:]
            assert len({a.idempotency_key for a in attempts}) == 1, f"{name}: a new key"
            assert len(attempts) == len(faults) + 1, f"{name}: {len(attempts)} attempts"
            # The server had recorded it when the last lost answer was a dropped response:
            # the retry is then a replay (duplicate), not a second count.
            lost_after_recording = bool(faults) and faults[-1].kind == "drop_response"
            assert state.last_result.duplicate == lost_after_recording, name
    total = rounds * len(CASES)
    assert reported == Counter({"success": total}), reported
    assert recorded(session) == total, "recorded and reported disagree"
    assert said_unconfirmed == Counter({n: rounds for n, f in CASES if f}), said_unconfirmed


async def _shows_unconfirmed(session: Session) -> bool:
    state = await session.get(TrackUsageState)
    return state.unconfirmed == ["api_calls"] and "Not confirmed yet" in state.error


async def test_an_unknown_outcome_that_ends_in_a_refusal_is_reported_as_one(
    session: Session,
) -> None:
    """A hard limit answered after the outage: the tab says "not confirmed yet" first, then the
    refusal, and nothing was recorded."""
    from billing_ui.server.testing import create_customer

    free = create_customer(session.server, ["free"])
    await session.sign_in(free)
    session.customer_id = free
    for _ in range(2):  # 10,000 of 10,000 ai_tokens: the hard limit is reached
        await session.send(TrackUsageState.track, feature_key="ai_tokens", quantity=5000)
    session.proxy.on(TRACK, close())
    task = asyncio.create_task(
        session.send(TrackUsageState.track, feature_key="ai_tokens", quantity=1)
    )
    await wait_until(lambda: _unconfirmed_is(session, "ai_tokens"), message="never unconfirmed")
    await asyncio.wait_for(task, timeout=30)
    state = await session.get(TrackUsageState)
    assert state.is_error and "Limit reached" in state.error and state.unconfirmed == []
    r = httpx.get(
        f"{session.server.base_url}/v1/usage/metrics",
        params={"customer_id": free},
        headers=session.server.auth(),
    )
    ai = next(m for m in r.json()["metrics"] if m["feature_key"] == "ai_tokens")
    assert ai["consumed"] == 10000


async def _unconfirmed_is(session: Session, key: str) -> bool:
    return (await session.get(TrackUsageState)).unconfirmed == [key]
