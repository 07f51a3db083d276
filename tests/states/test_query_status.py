"""Each query's status (signed_out / pending / success / error / stale), through Reflex's real
event pipeline against the real local server; the outage is the fault proxy closing every
request (the one fault the real server cannot produce on demand)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from billing_ui.states import FeatureEntitlementsState, TrackUsageState, UsageMetricsState
from billing_ui.states.status import RETRY_FIRST, retry_delay
from tests.faults import close

from .conftest import Session, wait_until

UPSTREAM = [
    "/v1/usage/metrics",
    "/v1/features/entitlements",
    "/v1/session-tokens",
    "/v1/usage/track",
]


def outage(session: Session) -> None:
    for path in UPSTREAM:
        session.proxy.on(path, *[close() for _ in range(50)])


async def test_a_fresh_tab_is_pending_then_success(session: Session) -> None:
    assert (await session.get(UsageMetricsState)).status == "pending"
    await session.send(UsageMetricsState.refetch)
    await session.send(FeatureEntitlementsState.load)
    metrics = await session.get(UsageMetricsState)
    ents = await session.get(FeatureEntitlementsState)
    assert metrics.status == "success" and metrics.data_updated_at > 0 and metrics.metrics
    assert ents.status == "success" and ents.entitlements


async def test_signed_out_is_its_own_status_not_an_error(session: Session) -> None:
    await session.sign_in("")
    await session.send(UsageMetricsState.refetch)
    await session.send(FeatureEntitlementsState.load)
    metrics = await session.get(UsageMetricsState)
    ents = await session.get(FeatureEntitlementsState)
    assert metrics.status == ents.status == "signed_out"
    assert metrics.metrics == [] and ents.entitlements == []


async def test_an_outage_with_nothing_cached_is_error_not_empty(session: Session) -> None:
    outage(session)
    await session.send(UsageMetricsState.refetch)
    await session.send(FeatureEntitlementsState.load)
    metrics = await session.get(UsageMetricsState)
    ents = await session.get(FeatureEntitlementsState)
    assert metrics.status == ents.status == "error"
    assert "temporarily unavailable" in metrics.error


async def test_an_outage_after_data_is_stale_and_keeps_the_data(session: Session) -> None:
    await session.send(UsageMetricsState.refetch)
    before = await session.get(UsageMetricsState)
    shown, updated = list(before.metrics), before.data_updated_at
    outage(session)
    await session.send(UsageMetricsState.refetch)
    after = await session.get(UsageMetricsState)
    assert after.status == "stale" and after.metrics == shown
    assert after.data_updated_at == updated, "the data's age is the last success's"
    session.proxy.clear()
    await session.send(UsageMetricsState.refetch)
    assert (await session.get(UsageMetricsState)).status == "success"


async def test_cached_data_during_an_outage_is_stale_at_once(session: Session) -> None:
    """A tick served from the cache while another request just found the API down says
    "stale" now, not when the cache entry expires an interval later."""
    await session.send(UsageMetricsState.refetch)
    await session.send(FeatureEntitlementsState.load)
    outage(session)
    # The track meets the outage: its outcome is unknown and it keeps asking (see
    # test_track_unknown_outcome.py); meanwhile the meters must say "stale" at once.
    track = asyncio.create_task(
        session.send(TrackUsageState.track, feature_key="api_calls", quantity=1)
    )

    async def meters_stale() -> bool:
        return (await session.get(UsageMetricsState)).status == "stale"

    await wait_until(meters_stale, timeout=5, message="a failed track must flag the meters")
    # And a cache hit (the entry is younger than its interval) is stale too.
    fetched = len(session.proxy.seen("/v1/features/entitlements"))
    await session.send(FeatureEntitlementsState.load)
    assert len(session.proxy.seen("/v1/features/entitlements")) == fetched, "a cache hit"
    assert (await session.get(FeatureEntitlementsState)).status == "stale"
    session.proxy.clear()
    await asyncio.wait_for(track, timeout=30)
    assert (await session.get(TrackUsageState)).is_success


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 30.0), (1, RETRY_FIRST), (2, RETRY_FIRST * 2), (3, RETRY_FIRST * 4), (50, 30.0)],
)
def test_failed_refreshes_retry_sooner_up_to_the_interval(failures: int, expected: float) -> None:
    assert retry_delay(failures, 30.0) == expected


async def test_a_tab_past_its_token_bucket_is_refused_and_told(
    session: Session, configure_billing: Any
) -> None:
    configure_billing(browser_burst=1, browser_rate=0.01)
    await session.send(TrackUsageState.track, feature_key="api_calls", quantity=1)
    assert (await session.get(TrackUsageState)).is_success
    sent = session.upstream("/v1/usage/track")
    await session.send(TrackUsageState.track, feature_key="api_calls", quantity=1)
    track = await session.get(TrackUsageState)
    assert track.is_error and track.error == "Too many requests from this page: wait a moment."
    assert session.upstream("/v1/usage/track") == sent, "a refused call reached the API"
    fetched = session.upstream("/v1/usage/metrics")
    await session.send(UsageMetricsState.refetch)  # any handler that reaches the API
    assert session.upstream("/v1/usage/metrics") == fetched
