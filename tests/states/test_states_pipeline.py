"""The hooks as Reflex states, through Reflex's real event pipeline and the real local server."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
import pytest

from billing_ui.core.problems import USER_MESSAGE
from billing_ui.states import FeatureEntitlementsState, TrackUsageState, UsageMetricsState
from billing_ui.states.metrics import metric_for
from billing_ui.states.views import MetricView

from .conftest import Session, wait_until

TRACK = "/v1/usage/track"
METRICS = "/v1/usage/metrics"


def meter(state: UsageMetricsState, feature: str) -> MetricView:
    found = metric_for(state, feature)
    assert found is not None, f"no {feature} meter"
    return found


def consumed(session: Session, feature: str) -> float:
    """The server's own count for the session's customer (asked directly, not via the proxy)."""
    r = httpx.get(
        f"{session.server.base_url}/v1/usage/metrics",
        params={"customer_id": session.customer_id, "feature_key": feature},
        headers=session.server.auth(),
    )
    r.raise_for_status()
    (metric,) = [m for m in r.json()["metrics"] if m["feature_key"] == feature]
    return float(metric["consumed"])


async def test_refetch_loads_the_customers_metrics(session: Session) -> None:
    await session.send(UsageMetricsState.refetch)
    state = await session.get(UsageMetricsState)
    assert not state.is_loading and not state.is_fetching and state.error == ""
    keys = {m.feature_key for m in state.metrics}
    assert {"api_calls", "ai_tokens", "seats"} <= keys
    api = meter(state, "api_calls")
    assert (api.consumed, api.limit, api.remaining) == (0, 50000, 50000)
    assert api.level == "normal" and api.resets_in_days >= 1
    assert state.data_updated_at > 0 and state.updated_at


async def test_track_updates_the_meter_and_the_server_by_exactly_the_quantity(
    session: Session,
) -> None:
    await session.send(UsageMetricsState.refetch)
    await session.send(TrackUsageState.track, feature_key="api_calls", quantity=7)
    track = await session.get(TrackUsageState)
    assert track.is_success and not track.is_error and not track.is_pending, track.error
    assert track.last_result.feature_key == "api_calls" and track.last_result.consumed == 7
    assert consumed(session, "api_calls") == 7

    async def meter_shows_seven() -> bool:
        state = await session.get(UsageMetricsState)
        return meter(state, "api_calls").consumed == 7

    await wait_until(meter_shows_seven, message="the meter never showed the tracked usage")


async def test_the_callers_idempotency_key_in_metadata_counts_once(session: Session) -> None:
    meta = {"idempotency_key": "api-call-req-42", "endpoint": "/api/data"}
    for _ in range(2):
        await session.send(
            TrackUsageState.track_with_metadata, feature_key="api_calls", quantity=1, metadata=meta
        )
    track = await session.get(TrackUsageState)
    assert track.is_success and track.last_result.duplicate
    assert consumed(session, "api_calls") == 1
    sent = [r.idempotency_key for r in session.proxy.seen(TRACK)]
    assert sent == ["api-call-req-42", "api-call-req-42"]


async def test_each_call_gets_its_own_key(session: Session) -> None:
    for _ in range(3):
        await session.send(TrackUsageState.track, feature_key="api_calls", quantity=1)
    keys = [r.idempotency_key for r in session.proxy.seen(TRACK)]
    assert len(set(keys)) == 3 and all(keys)
    assert consumed(session, "api_calls") == 3


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("negative", {"feature_key": "api_calls", "quantity": -5}, "greater than 0"),
    ("zero", {"feature_key": "api_calls", "quantity": 0}, "greater than 0"),
    ("nan", {"feature_key": "api_calls", "quantity": math.nan}, "finite"),
    ("inf", {"feature_key": "api_calls", "quantity": math.inf}, "finite"),
    ("huge", {"feature_key": "api_calls", "quantity": 10**30}, "at most"),
    ("10**400", {"feature_key": "api_calls", "quantity": 10**400}, "at most"),
    ("-10**400", {"feature_key": "api_calls", "quantity": -(10**400)}, "greater than 0"),
    ("over the rule", {"feature_key": "api_calls", "quantity": 101}, "at most 100"),
    ("fraction", {"feature_key": "api_calls", "quantity": 1.5}, "whole number"),
    ("string", {"feature_key": "api_calls", "quantity": "seven"}, "must be a number"),
    ("bool", {"feature_key": "api_calls", "quantity": True}, "must be a number"),
    ("dict", {"feature_key": "api_calls", "quantity": {"n": 1}}, "must be a number"),
    ("unknown feature", {"feature_key": "no_such", "quantity": 1}, "may not be tracked"),
    ("not allowlisted", {"feature_key": "seats", "quantity": 1}, "may not be tracked"),
    ("bad key", {"feature_key": "api calls; drop", "quantity": 1}, "letters, digits"),
    ("key not a string", {"feature_key": ["api_calls"], "quantity": 1}, "must be a string"),
    ("metadata list", {"feature_key": "api_calls", "quantity": 1, "metadata": [1]}, "object"),
    (
        "metadata too big",
        {"feature_key": "api_calls", "quantity": 1, "metadata": {"x": "y" * 3000}},
        "bytes",
    ),
    (
        "bad caller key",
        {"feature_key": "api_calls", "quantity": 1, "metadata": {"idempotency_key": 7}},
        "idempotency_key",
    ),
]


@pytest.mark.parametrize(("case", "payload", "says"), HOSTILE, ids=[c[0] for c in HOSTILE])
async def test_hostile_track_payloads_are_refused_and_count_nothing(
    session: Session, case: str, payload: dict[str, Any], says: str
) -> None:
    handler = (
        TrackUsageState.track_with_metadata if "metadata" in payload else TrackUsageState.track
    )
    await session.send(handler, **payload)
    track = await session.get(TrackUsageState)
    assert track.is_error and not track.is_success and not track.is_pending, case
    assert says in track.error, track.error
    assert session.upstream(TRACK) == 0, "a refused track must not reach the billing API"
    assert consumed(session, "api_calls") == 0


async def test_the_customer_comes_from_the_server_side_session(session: Session) -> None:
    other = session.customer_id + "_other"
    # A payload naming another customer is not an argument the handler has: nothing is tracked.
    await session.send(TrackUsageState.track, feature_key="api_calls", quantity=1, customer=other)
    track = await session.get(TrackUsageState)
    assert track.is_error and "customer: is not an argument" in track.error
    assert session.upstream(TRACK) == 0
    await session.send(TrackUsageState.track, feature_key="api_calls", quantity=2)
    (request,) = session.proxy.seen(TRACK)
    body = request.json()
    assert isinstance(body, dict) and body["customer_id"] == session.customer_id


async def test_signed_out_sessions_see_a_message_not_data(session: Session) -> None:
    await session.sign_in("")
    await session.send(UsageMetricsState.refetch)
    state = await session.get(UsageMetricsState)
    assert state.metrics == [] and "Sign in" in state.error
    await session.send(TrackUsageState.track, feature_key="api_calls", quantity=1)
    assert session.upstream(TRACK) == 0


async def test_a_hard_limit_refusal_is_an_error_and_the_meter_shows_blocked(
    session: Session,
) -> None:
    from billing_ui.server.testing import create_customer

    free = create_customer(session.server, ["free"])
    await session.sign_in(free)
    session.customer_id = free
    await session.send(UsageMetricsState.refetch)
    for _ in range(2):
        await session.send(TrackUsageState.track, feature_key="ai_tokens", quantity=5000)
    track = await session.get(TrackUsageState)
    assert track.is_success, track.error
    await session.send(TrackUsageState.track, feature_key="ai_tokens", quantity=1)
    track = await session.get(TrackUsageState)
    assert track.is_error and "Limit reached" in track.error
    assert consumed(session, "ai_tokens") == 10000

    async def blocked() -> bool:
        state = await session.get(UsageMetricsState)
        ai = meter(state, "ai_tokens")
        return ai.hard_limit and ai.blocked and ai.remaining == 0

    await wait_until(blocked, message="the hard-limited meter never showed as blocked")


async def test_billing_api_down_keeps_the_last_data_and_says_so(session: Session) -> None:
    from tests.faults import close

    await session.send(UsageMetricsState.refetch)
    session.proxy.on(METRICS, close())
    await session.send(UsageMetricsState.refetch)
    state = await session.get(UsageMetricsState)
    assert state.error == USER_MESSAGE  # neutral: the operator's advice is in the log only
    assert metric_for(state, "api_calls"), "the last good data must stay on screen"
    await session.send(UsageMetricsState.refetch)
    state = await session.get(UsageMetricsState)
    assert state.error == ""


async def test_entitlements_and_feature_checks(session: Session) -> None:
    await session.send(FeatureEntitlementsState.load)
    ent = await session.get(FeatureEntitlementsState)
    assert "priority_support" in ent.enabled_features and "sso" not in ent.enabled_features
    api = next(e for e in ent.entitlements if e.feature_key == "api_calls")
    assert api.type == "metered" and api.limit == 50000 and api.has_limit

    await session.send(FeatureEntitlementsState.check, feature_key="api_calls")
    ent = await session.get(FeatureEntitlementsState)
    check = ent.checks["api_calls"]
    assert check.has_access and check.usage == 0 and check.remaining == 50000

    # sso is not among pro's features: no access, and nothing stored or asked upstream.
    checks_sent = session.upstream("/v1/usage/check")
    await session.send(FeatureEntitlementsState.check, feature_key="sso")
    ent = await session.get(FeatureEntitlementsState)
    assert "sso" not in ent.checks and "sso" not in ent.enabled_features
    assert session.upstream("/v1/usage/check") == checks_sent

    await session.send(FeatureEntitlementsState.check, feature_key="../etc")
    ent = await session.get(FeatureEntitlementsState)
    assert "../etc" not in ent.checks and "letters, digits" in ent.error


async def test_a_track_invalidates_that_features_check(session: Session) -> None:
    await session.send(FeatureEntitlementsState.check, feature_key="api_calls")
    await session.send(TrackUsageState.track, feature_key="api_calls", quantity=3)

    async def check_shows_three() -> bool:
        ent = await session.get(FeatureEntitlementsState)
        check = ent.checks.get("api_calls")
        return check is not None and check.usage == 3

    await wait_until(check_shows_three, message="the feature check was not refreshed")


async def test_switching_customers_never_shows_the_previous_customers_data(
    session: Session,
) -> None:
    from billing_ui.server.testing import create_customer
    from billing_ui.states import reset_billing_states

    await session.send(TrackUsageState.track, feature_key="api_calls", quantity=9)
    await session.send(UsageMetricsState.refetch)
    await session.send(FeatureEntitlementsState.load)
    await session.send(FeatureEntitlementsState.check, feature_key="api_calls")

    async def api_calls() -> MetricView | None:
        return metric_for(await session.get(UsageMetricsState), "api_calls")

    async def shows_nine() -> bool:
        # A refetch right after a track's own may be coalesced (run a moment later).
        found = await api_calls()
        return found is not None and found.consumed == 9

    await wait_until(shows_nine, message="the first customer's meter never showed 9")

    enterprise = create_customer(session.server, ["enterprise"])
    await session.sign_in(enterprise)
    # Without a reset, the next refresh replaces the old customer's data and drops its checks.
    await session.send(FeatureEntitlementsState.refetch)

    async def enterprise_entitlements() -> bool:
        ent = await session.get(FeatureEntitlementsState)
        return "sso" in ent.enabled_features and ent.checks == {}

    await wait_until(enterprise_entitlements, message="enterprise's entitlements never came")
    await session.send(UsageMetricsState.refetch)

    async def enterprise_meter() -> bool:
        found = await api_calls()
        return found is not None and found.consumed == 0 and found.unlimited

    await wait_until(enterprise_meter, message="enterprise's unlimited meter never came")

    # With the reset (what a sign-in handler calls), nothing is left to render meanwhile.
    manager = session.processor._root_context.state_manager  # type: ignore[union-attr]
    from reflex.istate.manager.token import BaseStateToken

    async with manager.modify_state(
        BaseStateToken(ident=session.token, cls=UsageMetricsState)
    ) as root:
        await reset_billing_states(root)
    metrics = await session.get(UsageMetricsState)
    ent = await session.get(FeatureEntitlementsState)
    assert metrics.metrics == [] and metrics.is_loading
    assert ent.entitlements == [] and ent.checks == {}


async def test_a_burst_of_tracks_counts_each_and_refetches_once(session: Session) -> None:
    await session.send(UsageMetricsState.refetch)
    fetched = session.upstream(METRICS)
    await asyncio.gather(
        *[
            session.send(TrackUsageState.track, feature_key="api_calls", quantity=1)
            for _ in range(10)
        ]
    )
    assert consumed(session, "api_calls") == 10
    # a burst leaves partly as batch requests (billing_ui.core.batching); each event one key
    keys = [r.idempotency_key for r in session.proxy.seen(TRACK)] + [
        event["idempotency_key"]
        for r in session.proxy.seen(TRACK + "-batch")
        for event in r.json()["events"]  # type: ignore[index]
    ]
    assert len(keys) == len(set(keys)) == 10

    async def settled() -> bool:
        metrics = await session.get(UsageMetricsState)
        track = await session.get(TrackUsageState)
        return (
            session.upstream(METRICS) > fetched
            and not metrics.is_fetching
            and not track.is_pending
            and meter(metrics, "api_calls").consumed == 10
        )

    await wait_until(settled, message="the burst never settled on the server's count")
    # Each click's usage came back with its track; the refetch is for the burst, not per click.
    assert session.upstream(METRICS) - fetched == 1
    assert session.upstream("/v1/usage/check") == 0, "no check was on screen to refresh"
