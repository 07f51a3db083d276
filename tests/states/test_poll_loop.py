"""The metrics poll loop (what a page's ``on_load`` starts) keeps refreshing every interval.

Its ticks read the tab without the tab's lock (issue 10's cheap tick). They once read it by
``router.session.client_token``, which only Reflex's socket handler fills in: driven by the
event processor directly (these tests, ``bench/states_fanout``) every tick read an empty tab,
took the loop for superseded and ended it after the first fetch (the benchmark counted 0
requests per interval). Now a tick reads the event's own tab, as ``async with self`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from reflex_base.registry import RegistrationContext

import billing_ui as bs
from tests.states.conftest import Session, wait_until

METRICS = "/v1/usage/metrics"


@pytest.fixture
def no_registered_app() -> Iterator[None]:
    """This harness drives the event processor without a socket layer, so a loop asks the
    registered app whether its tab still has a socket. An app that an earlier test registered
    by importing the demo (tests/states/test_browser_errors.py) has never seen this tab and
    says no, which ends the loop after one fetch; with no app the answer is "cannot tell",
    and the loop keeps going, as it does for a browser that is still connected."""
    context = RegistrationContext.get()
    registered = context._app
    object.__setattr__(context, "_app", None)
    try:
        yield
    finally:
        object.__setattr__(context, "_app", registered)


async def test_the_poll_loop_fetches_again_every_interval(
    session: Session, configure_billing: Callable[..., Any], no_registered_app: None
) -> None:
    configure_billing(refresh_interval=0.5)
    await session.start(bs.UsageMetricsState.poll)
    await wait_until(
        lambda: session.upstream(METRICS) >= 4,
        timeout=15,
        message="the loop fetched the meters at least 4 times (one per 0.5 s interval)",
    )
    metrics = await session.get(bs.UsageMetricsState)
    assert metrics.status == "success" and metrics.metrics
