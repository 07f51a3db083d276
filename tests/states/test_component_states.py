"""The small states behind the components and the demo (history, nudge dismissals, the demo's
sign-in), through Reflex's real event pipeline and the real local server.

Every handler here is public, so each is also sent what a hostile client could send."""

from __future__ import annotations

from typing import Any

import pytest

from billing_ui.demo.session import DemoSessionState, demo_customer
from billing_ui.runtime import current
from billing_ui.states import TrackUsageState, UsageMetricsState
from billing_ui.states.history import (
    MAX_WATCHED,
    UsageHistoryState,
    history_id,
    parse_history_id,
)
from billing_ui.states.metrics import metric_for
from billing_ui.states.nudge import MAX_DISMISSED, UpgradeNudgeState
from tests.faults import respond

from .conftest import Session

HISTORY = "/v1/usage/history"


async def test_history_loads_and_follows_a_track(session: Session) -> None:
    await session.send(UsageHistoryState.load, history="api_calls")
    state = await session.get(UsageHistoryState)
    view = state.histories["api_calls"]
    assert view.points[-1] == 0 and view.start > 0 and state.loading == []
    assert session.upstream(HISTORY) == 1  # the local server back-fills

    await session.send(TrackUsageState.track, feature_key="api_calls", quantity=5)
    await session.send(UsageHistoryState.load, history="api_calls")
    state = await session.get(UsageHistoryState)
    assert state.histories["api_calls"].points[-1] == 5
    # The track reached the chart as a sample: the back-fill is not asked again.
    assert session.upstream(HISTORY) == 1
    kept = await current().queries.usage_samples(session.customer_id)
    assert kept is not None and kept.series["api_calls"].points[-1][1] == 5


async def test_chart_works_against_a_server_without_the_history_endpoint(
    session: Session,
) -> None:
    """A BillingOS without ``/v1/usage/history``: the fault proxy answers that path with the
    404 a NestJS server gives for a route it does not have (the real local server has the
    route, so the proxy stands in for its absence); everything else reaches the real server.
    The chart is drawn from the samples the metrics fetches and tracks keep, and the missing
    endpoint is neither an error nor asked again on every refresh."""
    missing = {"message": "Cannot GET /v1/usage/history", "error": "Not Found", "statusCode": 404}
    session.proxy.on(HISTORY, *[respond(404, body=missing) for _ in range(20)])
    await session.send(UsageHistoryState.load, history="api_calls")
    state = await session.get(UsageHistoryState)
    assert state.errors == {} and state.loading == []
    assert state.histories["api_calls"].points == [0]  # one bucket: samples begin now

    for quantity in (3, 4):
        await session.send(TrackUsageState.track, feature_key="api_calls", quantity=quantity)
    await session.send(UsageHistoryState.refetch_all)
    await session.send(UsageMetricsState.refetch)
    state = await session.get(UsageHistoryState)
    meter = metric_for(await session.get(UsageMetricsState), "api_calls")
    assert state.errors == {}
    assert meter is not None and state.histories["api_calls"].points[-1] == meter.consumed == 7
    # Asked once per back-fill staleness (and once more by the Retry), never per refresh.
    assert session.upstream(HISTORY) == 2
    await session.send(UsageHistoryState.load, history="api_calls")
    assert session.upstream(HISTORY) == 2


async def test_hourly_history_has_its_own_id(session: Session) -> None:
    ident = history_id("ai_tokens", "hour")
    assert ident == "ai_tokens@hour" and parse_history_id(ident) == ("ai_tokens", "hour")
    await session.send(UsageHistoryState.load, history=ident)
    state = await session.get(UsageHistoryState)
    view = state.histories[ident]
    # Hour buckets: 3,600,000 ms apart, the last one this hour's (the meter's own value).
    assert view.points and view.start % 3_600_000 == 0


@pytest.mark.parametrize(
    "hostile",
    ["", "../etc", "api_calls@week", "api_calls@hour@day", "x" * 500, 12345, {"a": 1}, None],
)
async def test_history_refuses_what_is_not_a_history_id(session: Session, hostile: Any) -> None:
    await session.send(UsageHistoryState.load, history=hostile)
    state = await session.get(UsageHistoryState)
    assert state.histories == {} and state.loading == [] and session.upstream(HISTORY) == 0


async def test_one_tab_charts_a_bounded_number_of_histories(session: Session) -> None:
    for i in range(MAX_WATCHED + 5):
        await session.send(UsageHistoryState.load, history=f"feature_{i}")
    state = await session.get(UsageHistoryState)
    assert len(state._watched) <= MAX_WATCHED
    # Made-up features are not the customer's: not charted, stored or fetched.
    assert state._watched == [] and state.errors == {} and state.histories == {}
    assert session.upstream(HISTORY) == 0


async def test_nudge_dismissals_are_validated_and_bounded(session: Session) -> None:
    await session.send(UpgradeNudgeState.dismiss, feature_key="api_calls")
    await session.send(UpgradeNudgeState.dismiss, feature_key="api_calls")
    for hostile in ["", "no spaces allowed", "x" * 100, 7, ["api_calls"], None]:
        await session.send(UpgradeNudgeState.dismiss, feature_key=hostile)
    state = await session.get(UpgradeNudgeState)
    assert state.dismissed == ["api_calls"]

    for i in range(MAX_DISMISSED + 10):
        await session.send(UpgradeNudgeState.dismiss, feature_key=f"f{i}")
    state = await session.get(UpgradeNudgeState)
    assert len(state.dismissed) == MAX_DISMISSED

    await session.send(UpgradeNudgeState.show_all)
    assert (await session.get(UpgradeNudgeState)).dismissed == []


async def test_the_demo_signs_in_only_its_own_customers(session: Session) -> None:
    for hostile in ["someone_else", "", "demo_free ", 42, {"customer_id": "demo_free"}]:
        await session.send(DemoSessionState.sign_in, customer_id=hostile)
        demo = await session.get(DemoSessionState)
        assert demo._customer_id == "" and demo.signed_in_as == ""
        assert await demo_customer(demo) is None

    await session.send(DemoSessionState.sign_in, customer_id="demo_pro")
    demo = await session.get(DemoSessionState)
    assert demo._customer_id == "demo_pro" == demo.signed_in_as
    assert await demo_customer(demo) == "demo_pro"

    await session.send(DemoSessionState.sign_out)
    demo = await session.get(DemoSessionState)
    assert demo._customer_id == "" and await demo_customer(demo) is None
