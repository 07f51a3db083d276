"""A chart says what it knows during an outage, as the meters do (issue 8, the outage UI):
its data served from the cache while the billing API is known down is "Not up to date", and
one failed metrics fetch marks every chart of the tab at once, not one chart per retry.

Through Reflex's real event pipeline against the real local server; the outage is the fault
proxy closing every request (the one fault the real server cannot produce on demand)."""

from __future__ import annotations

from billing_ui.states import FeatureEntitlementsState, UsageMetricsState
from billing_ui.states.history import UsageHistoryState, history_id

from .conftest import Session
from .test_query_status import outage

CHARTS = ["api_calls", history_id("ai_tokens", "hour")]
METRICS = "/v1/usage/metrics"


async def load_charts(session: Session) -> UsageHistoryState:
    for ident in CHARTS:
        await session.send(UsageHistoryState.load, history=ident)
    state = await session.get(UsageHistoryState)
    assert set(state.histories) >= set(CHARTS) and state.errors == {}
    return state


async def test_a_chart_served_from_the_cache_during_an_outage_says_not_up_to_date(
    session: Session,
) -> None:
    """The meters' entry is younger than the refresh interval, so the chart's refresh is a
    cache hit; another request has just found the API down. The meters say "stale" for that
    same entry (test_query_status.py), so the charts drawn from it must too."""
    before = await load_charts(session)
    shown = {ident: before.histories[ident] for ident in CHARTS}
    outage(session)
    await session.send(FeatureEntitlementsState.refetch)  # finds the API down
    assert (await session.get(FeatureEntitlementsState)).status == "error"

    fetched = session.upstream(METRICS)
    await session.send(UsageHistoryState.refetch_all)
    assert session.upstream(METRICS) == fetched, "the meters' entry is fresh: a cache hit"
    state = await session.get(UsageHistoryState)
    assert set(state.errors) == set(CHARTS), "data served during an outage is not current"
    assert all("temporarily unavailable" in state.errors[i] for i in CHARTS)
    assert {ident: state.histories[ident] for ident in CHARTS} == shown, "the data stays"

    session.proxy.clear()
    await session.send(UsageMetricsState.refetch)  # the API answers again
    await session.send(UsageHistoryState.refetch_all)
    assert (await session.get(UsageHistoryState)).errors == {}


async def test_one_failed_metrics_fetch_marks_every_chart_at_once(session: Session) -> None:
    """The charts of a tab are drawn from one metrics entry: a refresh asks for it once, and
    its failure reaches every chart in the same update (the outage screenshot showed one
    chart "Not up to date" and the other still plain while its own retry was in flight)."""
    await load_charts(session)
    outage(session)
    await session.send(UsageMetricsState.refetch)  # the meters' entry is now invalid
    fetched = session.upstream(METRICS)
    await session.send(UsageHistoryState.refetch_all)
    state = await session.get(UsageHistoryState)
    assert set(state.errors) == set(CHARTS)
    assert session.upstream(METRICS) == fetched + 1, "one metrics request for all the charts"
