"""Live meters: a track in one tab moves the meter in the customer's other tabs at once, as a
state change pushed from the server, with no upstream fetch of their own.

Two tabs (two client tokens) of one customer through Reflex's real event processor, against
the real local server behind the counting proxy. The push goes through the state manager's
``modify_state``, which is what ``app.modify_state`` does before it sends the delta (no app and
no socket here: the e2e tests have those). On both query stores: in memory, and in a real Redis
(the session's throwaway redis-server), where the news makes the round trip through Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from reflex.istate.manager.token import BaseStateToken
from reflex_base.event.processor import BaseStateEventProcessor

from billing_ui.core import BillingClient
from billing_ui.core.queries import METRICS
from billing_ui.core.tracker import UsageTracker
from billing_ui.runtime import BillingRuntime, current
from billing_ui.server.testing import create_customer
from billing_ui.states import TrackUsageState, UsageMetricsState
from billing_ui.states.live import LiveMeters, live_meters
from billing_ui.states.metrics import metric_for
from tests.faults import close
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


@pytest.fixture(params=["memory", "redis"])
async def live(
    request: pytest.FixtureRequest,
    processor: BaseStateEventProcessor,
    configure_billing: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[LiveMeters]:
    """The live meters of a runtime with the test's settings, on either store (with Redis the
    change goes out to Redis and comes back through its channel), pushing through this
    processor's state manager."""
    import billing_ui.runtime as runtime_module

    store = None
    if request.param == "redis":
        from billing_ui.core.queries import QUERY_TYPES
        from billing_ui.core.redis_cache import RedisQueryStore

        url = request.getfixturevalue("redis_url")
        store = RedisQueryStore(url, namespace=f"live{uuid.uuid4().hex[:8]}", types=QUERY_TYPES)
    runtime = BillingRuntime(current().settings, store=store)
    monkeypatch.setattr(runtime_module, "_current", runtime)
    manager = processor._root_context.state_manager  # type: ignore[union-attr]
    live = live_meters(runtime)
    live.modify = lambda token: manager.modify_state(
        BaseStateToken(ident=token, cls=UsageMetricsState)
    )
    yield live
    await runtime.aclose()


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


async def test_usage_queued_in_one_tab_shows_pending_in_the_other(
    tab: Tab, server: Any, proxy: Any, live: LiveMeters, configure_billing: Any, tmp_path: Path
) -> None:
    """The billing API is down (the fault proxy closes the track connections): tab A's track
    goes to the outbox and its meter shows "+N pending"; tab B of the same customer is told at
    once, through the live push, not at its next refresh, and fetches nothing for it."""
    customer = create_customer(server, ["pro"])
    client = BillingClient(base_url=proxy.url, max_retries=0, timeout=2.0)
    tracker = UsageTracker(client, outbox_path=tmp_path / "outbox.db", flush_interval=0.1)
    configure_billing(track_outbox=tracker)
    try:
        a, b = tab("a", customer), tab("b", customer)
        for t in (a, b):
            await open_tab(t)
        before = metric_for(await b.get(UsageMetricsState), "api_calls")
        assert before is not None and before.pending == 0
        fetched = b.upstream("/v1/usage/metrics")
        proxy.on("/v1/usage/track", *[close()] * 100)
        proxy.on("/v1/usage/track-batch", *[close()] * 100)

        await a.send(TrackUsageState.track, feature_key="api_calls", quantity=3)
        assert (await a.get(TrackUsageState)).queued_feature == "api_calls"

        async def b_shows_pending() -> bool:
            meter = metric_for(await b.get(UsageMetricsState), "api_calls")
            return meter is not None and (meter.pending, meter.consumed) == (
                3,
                before.consumed + 3,
            )

        await wait_until(b_shows_pending, timeout=5, message="tab B never saw the queued usage")
        assert b.upstream("/v1/usage/metrics") == fetched, "tab B fetched instead of being told"
    finally:
        proxy.clear()
        tracker.shutdown()
        client.close()


async def test_changes_while_a_push_waits_for_the_tab_queue_no_more_pushes(
    tab: Tab, server: Any, live: LiveMeters, processor: BaseStateEventProcessor
) -> None:
    """At most one push waits per tab, however many changes come while it waits for the tab's
    lock (held here as a tab busy with its own events holds it). The waiting push reads the
    newest meters once it runs. Before, every change queued one more push at the lock (4,856
    for 201 tabs in a 200 x 20 flood), each run after its tab had closed, and a second flood
    on the same backend collapsed (issue 8)."""
    customer = create_customer(server, ["pro"])
    a, b = tab("a", customer), tab("b", customer)
    for t in (a, b):
        await open_tab(t)
    before = metric_for(await b.get(UsageMetricsState), "api_calls")
    assert before is not None
    pushed, changes = live.pushed[b.token], 6
    manager = processor._root_context.state_manager  # type: ignore[union-attr]
    async with manager.modify_state(BaseStateToken(ident=b.token, cls=UsageMetricsState)):
        for _ in range(changes):  # each track patches the cached meters: a change
            await a.send(TrackUsageState.track, feature_key="api_calls", quantity=1)
        assert live.pushed[b.token] == pushed  # tab B's lock is held: nothing ran yet

    async def b_moved() -> bool:
        meter = metric_for(await b.get(UsageMetricsState), "api_calls")
        return meter is not None and meter.consumed == before.consumed + changes

    await wait_until(b_moved, timeout=10, message="tab B never saw the newest meters")
    await wait_until(lambda: not live._tasks, timeout=10, message="pushes still running")
    assert live.pushed[b.token] - pushed <= 2, live.pushed[b.token] - pushed


async def test_a_change_between_a_tabs_fetch_and_its_follow_still_reaches_it(
    tab: Tab, server: Any, live: LiveMeters, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tab follows its customer only after its first fetch has shown the meters. A track
    whose change was published in between (the tab read the meters before it, and was not yet
    following when it came) must still reach the tab: else its meter stays behind until its
    next tick, a whole refresh interval (the e2e two-workers test: tab B, reloaded to land on
    the other worker, showed its hydrated meter, and tab A's first track came before tab B's
    on_load refresh followed; its meter never moved in 40 s)."""
    customer = create_customer(server, ["pro"])
    a, b = tab("a", customer), tab("b", customer)
    await open_tab(a)
    before = metric_for(await a.get(UsageMetricsState), "api_calls")
    assert before is not None
    real_follow = live.follow
    raced: list[str] = []

    async def follow_late(token: str, customer_id: str, *args: Any, **kwargs: Any) -> None:
        if token == b.token and not raced:
            raced.append(token)
            told = live.pushed[a.token]
            # The track's change, published before tab B follows (tab A hears of it).
            await live._runtime.queries.track_usage(customer, "api_calls", 5)
            await wait_until(
                lambda: live.pushed[a.token] > told, timeout=5, message="the change was not told"
            )
        await real_follow(token, customer_id, *args, **kwargs)

    monkeypatch.setattr(live, "follow", follow_late)
    await open_tab(b)
    assert raced, "tab B's refresh did not follow"

    async def b_caught_up() -> bool:
        meter = metric_for(await b.get(UsageMetricsState), "api_calls")
        return meter is not None and meter.consumed == before.consumed + 5

    try:
        await wait_until(b_caught_up, timeout=10, message="tab B missed the earlier track")
    except AssertionError:
        state = await b.get(UsageMetricsState)
        entry = await live._runtime.store.peek((METRICS, customer))
        raise AssertionError(
            f"B {metric_for(state, 'api_calls')} confirmed {state._confirmed_at} "
            f"data {state.data_updated_at}; entry {entry and entry.updated_at} "
            f"{entry and entry.data}; pushed {dict(live.pushed)} queued {live._queued} "
            f"tasks {live._tasks} before {before}"
        ) from None
    assert live.followers(customer) == 2


async def test_a_tab_no_longer_followed_leaves_nothing_behind(
    tab: Tab, server: Any, live: LiveMeters
) -> None:
    """A tab whose loop ended (its socket gone: the poll loop and a push to a closed tab both
    unfollow it) keeps no entry in the live meters, its push count included: before, every tab
    the worker ever pushed to stayed in ``pushed`` for good (a 200-tab flood left 200 of them,
    among the objects that kept the flood's memory). The other tab is still told."""
    customer = create_customer(server, ["pro"])
    a, b = tab("a", customer), tab("b", customer)
    for t in (a, b):
        await open_tab(t)
    told = live.pushed[b.token]
    await a.send(TrackUsageState.track, feature_key="api_calls", quantity=1)
    await wait_until(lambda: live.pushed[b.token] > told, timeout=5, message="no push to tab B")
    await wait_until(lambda: not live._tasks, timeout=10, message="pushes still running")

    live.unfollow(b.token)  # what tab B's loop does once its socket is gone
    assert b.token not in live.pushed and b.token not in live._customer_of
    assert live.followers(customer) == 1
    to_a = live.pushed[a.token]
    await b.send(TrackUsageState.track, feature_key="api_calls", quantity=1)
    await wait_until(lambda: live.pushed[a.token] > to_a, timeout=5, message="no push to tab A")
    await wait_until(lambda: not live._tasks, timeout=10, message="pushes still running")
    assert b.token not in live.pushed, "a tab no longer followed was pushed to"
