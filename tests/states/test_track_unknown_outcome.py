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


@pytest.mark.parametrize("sent", [True, False], ids=["attempt sent", "nothing sent"])
async def test_pool_exhausted_after_a_sent_attempt_is_an_unknown_outcome(
    session: Session, monkeypatch: pytest.MonkeyPatch, sent: bool
) -> None:
    """``PoolExhaustedError(request_sent=True)``: an attempt went out, its answer was lost, and
    the retry found every connection busy. The track may have been recorded, so the tab says
    "not confirmed yet" and asks again with the same key; ``request_sent=False`` is a sure
    "not sent" (nothing recorded, nothing re-sent).

    A fake, the only one here: that error needs a lost answer *and* a pool kept full at the
    moment of the retry, which real parts cannot be timed into on demand. The wrapper around
    the real ``track_usage`` sends the first call for real when ``sent`` (the server records
    it, as the lost attempt would have been) and then raises; every later call is the real one
    through the fault proxy to the real server."""
    from billing_ui.core.errors import PoolExhaustedError
    from billing_ui.core.problems import BUSY_MESSAGE
    from billing_ui.core.queries import BillingQueries

    real = BillingQueries.track_usage
    calls = 0

    async def first_one_exhausted(self: BillingQueries, *args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            if sent:
                await real(self, *args, **kwargs)  # type: ignore[arg-type]
            raise PoolExhaustedError(request_sent=sent)
        return await real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(BillingQueries, "track_usage", first_one_exhausted)
    await session.send(UsageMetricsState.refetch)
    before = recorded(session)
    task = asyncio.create_task(
        session.send(TrackUsageState.track, feature_key="api_calls", quantity=1)
    )
    if sent:
        await wait_until(lambda: _shows_unconfirmed(session), message="never 'not confirmed'")
    await asyncio.wait_for(task, timeout=30)
    state = await session.get(TrackUsageState)
    attempts = session.proxy.seen(TRACK)
    assert state.unconfirmed == [] and not state.is_pending
    if sent:
        assert state.is_success and state.last_result.duplicate, state.error
        assert calls == 2 and len(attempts) == 2
        assert len({a.idempotency_key for a in attempts}) == 1, "the retry used a new key"
        assert recorded(session) - before == 1
    else:
        assert state.is_error and state.error == BUSY_MESSAGE
        assert calls == 1 and attempts == []
        assert recorded(session) == before
