"""Nothing of one customer ever reaches another customer's tab (issue 7, part 1).

Each test runs through Reflex's real event pipeline against the real local server: customer A
is signed in, one of A's requests is held by the fault proxy (a slow billing API: the only
fault here, which the real server cannot produce on demand), the app's sign-in handler switches
the tab to customer B (``AuthTestState.switch_to``, decorated with ``switches_customer``), and
then the held answer is released. B's vars must hold nothing of A's: no data, no error, no
"loading" flag of A's request.

On the code before this change (each state checking its own ``_customer``) the tests marked
``fails before`` in their docstring failed: the feature check, the history, the track result,
the nudge dismissals and A's late errors all landed in B's tab.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from billing_ui.server.testing import create_customer
from billing_ui.states import (
    FeatureEntitlementsState,
    TrackUsageState,
    UsageMetricsState,
)
from billing_ui.states.history import UsageHistoryState
from billing_ui.states.nudge import UpgradeNudgeState
from tests.faults import close, hold

from .conftest import AuthTestState, Session, wait_until

METRICS = "/v1/usage/metrics"
ENTITLEMENTS = "/v1/features/entitlements"
CHECK = "/v1/usage/check"
HISTORY = "/v1/usage/history"
TRACK = "/v1/usage/track"
A_USAGE = 9.0
"""What customer A has used of api_calls: a number B (a fresh customer) never shows."""
Starter = Callable[[], Awaitable[None]]


def record(session: Session, customer: str, feature: str, quantity: float) -> None:
    """Usage recorded straight at the server (not through the proxy)."""
    httpx.post(
        f"{session.server.base_url}/v1/usage/track",
        json={"customer_id": customer, "feature_key": feature, "quantity": quantity},
        headers=session.server.auth(),
    ).raise_for_status()


async def switch_while_held(
    session: Session,
    path: str,
    start: Starter,
    *,
    b_products: list[str],
    then_b: Starter | None = None,
    fail: bool = False,
) -> str:
    """Start A's request (``start``), hold it at the proxy, switch the tab to a new customer
    B, optionally let B load (``then_b``), then release A's answer (or fail it, ``fail``) and
    wait until A's handler has finished. Returns B's id."""
    gate = threading.Event()
    held_before = len(session.proxy.seen(path))
    session.proxy.on(path, hold(gate, then=close() if fail else None))
    task = asyncio.create_task(start())
    await wait_until(
        lambda: len(session.proxy.seen(path)) > held_before,
        message=f"A's request to {path} never reached the proxy",
    )
    b = create_customer(session.server, b_products)
    await session.send(AuthTestState.switch_to, customer_id=b)
    if then_b is not None:
        await then_b()
    gate.set()
    await asyncio.wait_for(task, timeout=30)
    return b


@pytest.fixture
async def a_with_usage(session: Session) -> Session:
    record(session, session.customer_id, "api_calls", A_USAGE)
    return session


def refetch(s: Session, state: type[UsageMetricsState | FeatureEntitlementsState]) -> Starter:
    """The tab's refetch of ``state`` (for A while A is signed in, for B after the switch)."""

    async def send() -> None:
        await s.send(state.refetch)

    return send


@pytest.mark.parametrize("b_loads_first", [True, False], ids=["b-loaded", "b-not-yet"])
async def test_metrics_answer_for_a_is_dropped(a_with_usage: Session, b_loads_first: bool) -> None:
    s = a_with_usage
    load = refetch(s, UsageMetricsState)
    await switch_while_held(
        s, METRICS, load, b_products=["free"], then_b=load if b_loads_first else None
    )
    state = await s.get(UsageMetricsState)
    assert all(m.consumed == 0 and m.limit != 50000 for m in state.metrics), state.metrics
    assert state.error == ""


def _b_has_its_own_metrics(state: UsageMetricsState) -> None:
    assert not state.is_fetching
    api = next(m for m in state.metrics if m.feature_key == "api_calls")
    assert (api.consumed, api.limit) == (0, 1000)


def _b_has_its_own_entitlements(state: FeatureEntitlementsState) -> None:
    assert state.entitlements


@pytest.mark.parametrize(
    ("path", "state_class", "b_holds_its_own"),
    [
        (METRICS, UsageMetricsState, _b_has_its_own_metrics),
        (ENTITLEMENTS, FeatureEntitlementsState, _b_has_its_own_entitlements),
    ],
    ids=["metrics", "entitlements"],
)
async def test_a_late_error_does_not_reach_b(
    a_with_usage: Session,
    path: str,
    state_class: type[UsageMetricsState | FeatureEntitlementsState],
    b_holds_its_own: Callable[[Any], None],
) -> None:
    """Fails before: A's failed request wrote its error into B's state (for the metrics also
    ``is_fetching``)."""
    s = a_with_usage
    load = refetch(s, state_class)
    await switch_while_held(s, path, load, b_products=["free"], then_b=load, fail=True)
    state = await s.get(state_class)
    assert state.error == "" and state.status == "success"
    b_holds_its_own(state)


async def test_entitlements_answer_for_a_is_dropped(session: Session) -> None:
    s = session
    enterprise = create_customer(s.server, ["enterprise"])
    await s.send(AuthTestState.switch_to, customer_id=enterprise)

    await switch_while_held(
        s, ENTITLEMENTS, refetch(s, FeatureEntitlementsState), b_products=["free"]
    )
    ent = await s.get(FeatureEntitlementsState)
    assert "sso" not in ent.enabled_features
    assert all(e.product_name != "Enterprise" for e in ent.entitlements)


async def test_feature_check_for_a_is_dropped(session: Session) -> None:
    """Fails before: ``check`` accepted a result while its ``_customer`` was empty, so
    enterprise's ``sso: has_access`` landed in the free customer's tab."""
    s = session
    enterprise = create_customer(s.server, ["enterprise"])
    await s.send(AuthTestState.switch_to, customer_id=enterprise)

    await switch_while_held(
        s,
        CHECK,
        lambda: s.send(FeatureEntitlementsState.check, feature_key="sso"),
        b_products=["free"],
    )
    ent = await s.get(FeatureEntitlementsState)
    assert "sso" not in ent.checks or not ent.checks["sso"].has_access, ent.checks


async def test_history_for_a_is_dropped(a_with_usage: Session) -> None:
    """Fails before: the reset left ``UsageHistoryState._customer`` set to A."""
    s = a_with_usage
    await switch_while_held(
        s,
        HISTORY,
        lambda: s.send(UsageHistoryState.load, history="api_calls"),
        b_products=["free"],
    )
    state = await s.get(UsageHistoryState)
    assert all(A_USAGE not in h.points for h in state.histories.values()), state.histories
    assert state.errors == {}


async def test_track_result_for_a_is_dropped(session: Session) -> None:
    """Fails before: A's track result (with A's usage) became B's ``last_result``."""
    s = session
    load = refetch(s, UsageMetricsState)
    await load()
    await switch_while_held(
        s,
        TRACK,
        lambda: s.send(TrackUsageState.track, feature_key="api_calls", quantity=7),
        b_products=["free"],
        then_b=load,
    )
    track = await s.get(TrackUsageState)
    assert track.last_result.consumed == 0 and track.last_result.feature_key == ""
    assert not track.is_success and not track.is_error
    assert track.pending_features == [] and not track.is_pending
    metrics = await s.get(UsageMetricsState)
    api = next(m for m in metrics.metrics if m.feature_key == "api_calls")
    assert api.consumed == 0, "A's track patched B's meter"


async def test_nudge_dismissals_of_a_do_not_carry_over(session: Session) -> None:
    """Fails before: the reset kept A's dismissed nudges, so B's near-limit banner stayed
    hidden; A's meters (what the nudge is driven by) must not arrive either."""
    s = session
    record(s, s.customer_id, "api_calls", 45000)  # 90 %: A's nudge shows
    await s.send(UpgradeNudgeState.dismiss, feature_key="api_calls")
    assert (await s.get(UpgradeNudgeState)).dismissed == ["api_calls"]

    await switch_while_held(s, METRICS, refetch(s, UsageMetricsState), b_products=["free"])
    assert (await s.get(UpgradeNudgeState)).dismissed == []
    metrics = await s.get(UsageMetricsState)
    assert all(m.consumed == 0 for m in metrics.metrics), "A's meters reached B"


async def test_a_resolver_change_without_a_reset_is_caught_at_the_answer(
    a_with_usage: Session,
) -> None:
    """An app that forgets the reset (the resolver simply starts naming B): the answer for A
    is still dropped, because each answer re-resolves the customer before it is taken."""
    s = a_with_usage
    gate = threading.Event()
    s.proxy.on(METRICS, hold(gate))
    task = asyncio.create_task(s.send(UsageMetricsState.refetch))
    await wait_until(lambda: s.proxy.seen(METRICS), message="no metrics request")
    await s.sign_in(create_customer(s.server, ["free"]))  # no reset
    gate.set()
    await asyncio.wait_for(task, timeout=30)
    state = await s.get(UsageMetricsState)
    assert all(m.consumed != A_USAGE for m in state.metrics)


async def test_a_state_that_skips_the_ticket_cannot_reach_the_api() -> None:
    """The guard a new state cannot forget: the query layer refuses a call made outside a
    billing handler's ticket."""
    from billing_ui.states import _runtime as rt

    with pytest.raises(RuntimeError, match="without a ticket"):
        await rt.queries.usage_metrics("anyone")


def test_every_billing_state_inherits_the_owner() -> None:
    from billing_ui.states.base import BillingState, _billing_state_classes

    classes = set(_billing_state_classes())
    for cls in (
        UsageMetricsState,
        FeatureEntitlementsState,
        TrackUsageState,
        UsageHistoryState,
        UpgradeNudgeState,
    ):
        assert issubclass(cls, BillingState) and cls in classes
