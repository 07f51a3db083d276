"""Through the real event pipeline: with a wrong secret key every tab shows the same neutral
sentence, and the operator's advice reaches the server log once (never a state var, which
the browser receives)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

import billing_ui.states as bs
from billing_ui.core import AsyncBillingClient
from billing_ui.core.problems import USER_MESSAGE
from billing_ui.states import FeatureEntitlementsState, TrackUsageState, UsageMetricsState
from billing_ui.states._runtime import queries

from .conftest import Session


async def test_a_wrong_key_shows_users_a_neutral_line_and_logs_advice_once(
    session: Session,
    configure_billing: Callable[..., bs.BillingSettings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="billing_ui.operator")
    configure_billing(
        client_factory=lambda: AsyncBillingClient(
            base_url=session.proxy.url, api_key="sk_test_not_the_key", max_retries=0
        )
    )
    queries.problems.succeeded()  # start from a healthy process, whatever ran before
    caplog.clear()
    for _ in range(10):
        await session.send(UsageMetricsState.refetch)
        await session.send(TrackUsageState.track, feature_key="api_calls", quantity=1)
        await session.send(FeatureEntitlementsState.load)
    metrics = await session.get(UsageMetricsState)
    track = await session.get(TrackUsageState)
    assert metrics.error == USER_MESSAGE and track.error == USER_MESSAGE
    for state in (metrics, track, await session.get(FeatureEntitlementsState)):
        sent = str(state.dict())  # what the browser could receive of this state
        assert "BILLINGOS" not in sent and "sk_test" not in sent
    # billing_ui's own lines only: caplog also catches other loggers' noise, e.g. asyncio's
    # "Task was destroyed but it is pending!" when an earlier test's task is collected now.
    errors = [
        r for r in caplog.records if r.levelno == logging.ERROR and r.name.startswith("billing_ui")
    ]
    assert len(errors) == 1 and "BILLINGOS_SECRET_KEY" in errors[0].getMessage()
    queries.problems.succeeded()  # leave the process-wide log healthy for later tests
