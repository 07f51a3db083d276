"""The Reflex internals billing_ui relies on (all in billing_ui/states/_reflex_internals.py),
each pinned here so that a Reflex release that changes one fails this test loudly instead of a
tab quietly misbehaving. Run on every Reflex in the supported range by make reflex-range."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from pathlib import Path

import pytest
import reflex as rx
from reflex.app import EventNamespace
from reflex.utils.token_manager import TokenManager

from billing_ui.states import _reflex_internals as internals
from billing_ui.states.metrics import UsageMetricsState


def test_the_event_namespace_keeps_a_token_manager_that_can_tell_a_live_tab() -> None:
    assert "self._token_manager" in inspect.getsource(EventNamespace.__init__)
    assert inspect.iscoroutinefunction(TokenManager.is_token_connected)
    assert list(inspect.signature(TokenManager.is_token_connected).parameters) == ["self", "token"]


def test_the_registered_app_is_found_through_the_registration_context() -> None:
    from reflex_base.registry import RegistrationContext

    assert callable(RegistrationContext.get)
    # A context where no app was registered (the registration is a ContextVar).
    assert contextvars.Context().run(internals.event_namespace) is None
    namespace = internals.event_namespace()  # other tests of this run may have registered one
    assert namespace is None or hasattr(namespace, "_token_manager")


async def test_without_an_app_a_tab_counts_as_connected() -> None:
    fresh = contextvars.Context()
    task = asyncio.get_running_loop().create_task(
        internals.is_token_connected("no-such-token"), context=fresh
    )
    assert await task is True


def test_foreach_still_counts_parameters_and_the_shim_still_satisfies_it() -> None:
    items = rx.Var.create(["a", "b"])

    def item(value: object, *, size: str = "1", tone: str = "gray") -> rx.Component:
        return rx.text(value, size=size)

    with pytest.raises(Exception, match=r"(?i)argument|parameter"):
        rx.foreach(items, item)  # Reflex refuses a render function with three parameters
    shimmed = internals.foreach_render_fn(item)
    assert rx.foreach(items, shimmed).render()  # accepted: one parameter, as Reflex sees it
    assert shimmed("x").render()  # called directly, its options still work


def test_the_derived_metric_vars_are_public_var_operations() -> None:
    by_key, near = UsageMetricsState.metrics_by_key, UsageMetricsState.near_limit
    metrics = UsageMetricsState.metrics  # the buckets merged, then their values (SplitList)
    assert "Object.assign" in str(by_key) and "meters_3" in str(by_key)
    assert "Object.values" in str(metrics) and "meters_0" in str(metrics)
    assert "filter" in str(near) and "Object.values" in str(near)
    state = UsageMetricsState.get_full_name()
    for var in (by_key, metrics, near):
        data = var._get_all_var_data()
        assert data is not None and state in data.state


def test_the_token_manager_records_which_instance_holds_each_socket() -> None:
    """``is_token_elsewhere`` reads ``token_to_socket[token].instance_id`` against the token
    manager's own ``instance_id`` (a live push skips tabs another worker serves)."""
    from reflex.utils.token_manager import LocalTokenManager, SocketRecord

    fields = {f.name for f in __import__("dataclasses").fields(SocketRecord)}
    assert {"instance_id", "sid"} <= fields
    manager = LocalTokenManager()
    assert isinstance(manager.instance_id, str) and manager.token_to_socket == {}


async def test_a_tab_is_read_without_its_lock_through_the_events_state_manager() -> None:
    """``read_tab_state`` takes the running event's context (its token and state manager) and
    asks the manager for a ``BaseStateToken``'s tree, then takes the state out of it by its
    full path."""
    import dataclasses

    from reflex.istate.manager.token import BaseStateToken
    from reflex_base.event.context import EventContext

    assert callable(EventContext.get)
    assert {"token", "state_manager"} <= {f.name for f in dataclasses.fields(EventContext)}
    assert {"ident", "cls"} <= set(inspect.signature(BaseStateToken).parameters)
    assert UsageMetricsState.get_full_name().split(".")[-1] == UsageMetricsState.get_name()


def test_chain_updates_routes_a_handlers_yields_in_the_current_event_context() -> None:
    """``route_events`` (a track finishing after its handler returned) relies on Reflex's
    ``chain_updates(events, handler_name, root_state=None)``: with no root state it emits no
    delta and routes the events through ``EventContext.get()``."""
    from reflex_base.event.processor.base_state_processor import chain_updates

    params = inspect.signature(chain_updates).parameters
    assert list(params)[:2] == ["events", "handler_name"]
    assert params["root_state"].default is None
    assert inspect.iscoroutinefunction(chain_updates)


def test_a_state_proxy_wraps_a_state_as_a_background_handlers_self() -> None:
    """``state_proxy`` (a track's send after its foreground handler returned) builds Reflex's
    ``StateProxy(state_instance)``, which re-takes the tab's lock on ``async with`` from the
    running event's context."""
    from reflex.istate.proxy import StateProxy

    params = list(inspect.signature(StateProxy.__init__).parameters)
    assert params[:2] == ["self", "state_instance"]
    assert inspect.iscoroutinefunction(StateProxy.__aenter__)
    assert inspect.iscoroutinefunction(StateProxy.__aexit__)


async def test_the_disk_state_manager_keeps_trees_in_memory_a_sweep_can_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``drop_closed_tabs`` reads the disk manager's ``states`` (cache key -> root tree),
    ``_token_last_touched`` (cache key -> (time, token)), ``_write_queue`` (token -> pending
    write) and ``_is_locked(token)``, a token's ``ident`` (the client token) and
    ``cache_key``, and breaks a dropped tree's cycles with ``_release_state_tree`` (its writes
    under ``_states_locks`` are run in the next test)."""
    from reflex.istate.manager import _release_state_tree
    from reflex.istate.manager.disk import StateManagerDisk
    from reflex.istate.manager.token import BaseStateToken

    monkeypatch.setenv("REFLEX_STATES_WORKDIR", str(tmp_path))
    manager = StateManagerDisk()
    token = BaseStateToken(ident="tab-1", cls=UsageMetricsState)
    root = await manager.get_state(token)
    assert manager.states[token.cache_key] is root
    touched, recorded = manager._token_last_touched[token.cache_key]
    assert isinstance(touched, float) and recorded.ident == "tab-1"
    assert isinstance(manager._write_queue, dict) and manager._is_locked(token) is False
    assert root.substates
    _release_state_tree(root)
    assert not root.substates
    await manager.close()


async def test_a_sweep_reports_nothing_for_the_memory_manager_or_an_app_not_started() -> None:
    """On the memory manager the trees are the only copy: :func:`drop_closed_tabs` must not
    touch them; an app whose backend has not started has no manager yet."""
    from types import SimpleNamespace

    from reflex.istate.manager.memory import StateManagerMemory

    assert internals.state_manager_mode(SimpleNamespace(_state_manager=None)) is None
    memory = SimpleNamespace(_state_manager=StateManagerMemory())
    assert internals.state_manager_mode(memory) == "memory"
    assert await internals.drop_closed_tabs(memory, 0.0) is None


async def test_a_sweep_writes_a_closed_tabs_whole_tree_then_drops_it_and_keeps_every_other_tab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a real disk state manager and Reflex's own token manager (the app around them is a
    namespace: no backend runs here): a closed, idle tab's tree leaves memory, written whole
    first, so a tab that comes back finds even a part whose file the manager had already
    deleted (it deletes files an hour old, tree in memory or not: deleting them by hand here
    stands in for that hour). An open tab, a locked one and one with a write waiting stay."""
    from types import SimpleNamespace

    from reflex.istate.manager.disk import QueueItem, StateManagerDisk
    from reflex.istate.manager.token import BaseStateToken
    from reflex.utils.token_manager import LocalTokenManager

    monkeypatch.setenv("REFLEX_STATES_WORKDIR", str(tmp_path))
    manager = StateManagerDisk()
    sockets = LocalTokenManager()
    app = SimpleNamespace(
        _state_manager=manager, event_namespace=SimpleNamespace(_token_manager=sockets)
    )
    tokens = {
        name: BaseStateToken(ident=name, cls=UsageMetricsState)
        for name in ("closed", "open", "locked", "queued")
    }
    for name, token in tokens.items():
        async with manager.modify_state(token) as root:
            metrics = await root.get_state(UsageMetricsState)
            metrics.updated_at = f"set-by-{name}"  # a var the tab set, as a sign-in is
    await manager._flush_write_queue()
    for pickle in manager.states_directory.glob("*.pkl"):
        pickle.unlink()  # the manager's purge of hour-old files, tree still in memory
    await sockets.link_token_to_sid("open", "sid-1")
    # A write waiting in the queue, as ``set_state`` leaves one (the flush emptied it).
    manager._write_queue[tokens["queued"]] = QueueItem(
        token=tokens["queued"], state=manager.states["queued"], timestamp=time.time()
    )
    lock = manager._states_locks["locked"]

    async with lock:
        swept = await internals.drop_closed_tabs(app, idle_s=0.0)

    assert swept == internals.TabStatesSwept(dropped=1, kept=3)
    assert set(manager.states) == {"open", "locked", "queued"}
    assert len(list(manager.states_directory.glob("*.pkl"))) >= 2  # root and substate(s)
    async with manager.modify_state(tokens["closed"]) as back:  # the tab comes back
        assert (await back.get_state(UsageMetricsState)).updated_at == "set-by-closed"
    manager._write_queue.clear()
    await manager.close()
