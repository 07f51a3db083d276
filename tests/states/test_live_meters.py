"""Live meters: a track in one tab moves the meter in the customer's other tabs at once, as a
state change pushed from the server, with no upstream fetch of their own.

Two tabs (two client tokens) of one customer through Reflex's real event processor, against
the real local server behind the counting proxy. The push goes through the state manager's
``modify_state``, which is what ``app.modify_state`` does before it sends the delta (no app and
no socket here: the e2e tests have those)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from reflex.istate.manager.token import BaseStateToken
from reflex_base.event.processor import BaseStateEventProcessor

from billing_ui.runtime import current
from billing_ui.server.testing import create_customer
from billing_ui.states import TrackUsageState, UsageMetricsState
from billing_ui.states.live import LiveMeters, live_meters
from billing_ui.states.metrics import metric_for
from tests.states.conftest import Session, wait_until


async def open_tab(tab: Session) -> None:
    """Sign the tab in and give its state the client token a browser's router data carries
    (a live tab is followed by it; the processor alone leaves it empty)."""
    from reflex.istate.data import RouterData

    await tab.sign_in(tab.customer_id)
    manager = tab.processor._root_context.state_manager  # type: ignore[union-attr]
    async with manager.modify_state(BaseStateToken(ident=tab.token, cls=UsageMetricsState)) as root:
        root.router_data = {"token": tab.token, "pathname": "/"}
        root.router = RouterData.from_router_data(root.router_data)
    await tab.send(UsageMetricsState.refetch)


@pytest.fixture
def live(processor: BaseStateEventProcessor) -> Iterator[LiveMeters]:
    """The installed runtime's live meters, pushing through this processor's state manager."""
    manager = processor._root_context.state_manager  # type: ignore[union-attr]
    live = live_meters(current())
    live.modify = lambda token: manager.modify_state(
        BaseStateToken(ident=token, cls=UsageMetricsState)
    )
    yield live
    live.modify = None
    for token in list(live._customer_of):
        live.unfollow(token)


Tab = Callable[[str, str], Session]


@pytest.fixture
def tab(processor: BaseStateEventProcessor, server: Any, proxy: Any, configure_billing: Any) -> Tab:
    """``tab(name, customer)``: a browser tab's session of ``customer``."""
    return lambda name, customer: Session(
        processor, token=f"{name}-{customer}", server=server, proxy=proxy, customer_id=customer
    )


async def test_a_track_in_one_tab_moves_the_meter_in_the_other(
    tab: Tab, server: Any, live: LiveMeters
) -> None:
    customer = create_customer(server, ["pro"])
    a, b = tab("a", customer), tab("b", customer)
    for t in (a, b):
        await open_tab(t)
    assert live.followers(customer) == 2
    before = metric_for(await b.get(UsageMetricsState), "api_calls")
    assert before is not None
    fetched = b.upstream("/v1/usage/metrics")

    await a.send(TrackUsageState.track, feature_key="api_calls", quantity=5)

    async def b_moved() -> bool:
        meter = metric_for(await b.get(UsageMetricsState), "api_calls")
        return meter is not None and meter.consumed == before.consumed + 5

    await wait_until(b_moved, timeout=5, message="tab B never saw tab A's track")
    assert b.upstream("/v1/usage/metrics") == fetched, "tab B fetched instead of being told"
    assert live.pushed[b.token] >= 1


async def test_a_tab_of_another_customer_is_not_told(
    tab: Tab, server: Any, live: LiveMeters
) -> None:
    one, other = create_customer(server, ["pro"]), create_customer(server, ["pro"])
    a, c = tab("a", one), tab("c", other)
    for t in (a, c):
        await open_tab(t)
    seen = metric_for(await c.get(UsageMetricsState), "api_calls")
    to_a, to_c = live.pushed[a.token], live.pushed[c.token]
    await a.send(TrackUsageState.track, feature_key="api_calls", quantity=5)
    await wait_until(lambda: live.pushed[a.token] > to_a, timeout=5, message="no push to tab A")
    assert live.pushed[c.token] == to_c
    assert metric_for(await c.get(UsageMetricsState), "api_calls") == seen
    assert live.followers(other) == 1 and live.followers(one) == 1
