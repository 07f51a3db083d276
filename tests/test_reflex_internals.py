"""The Reflex internals billing_ui relies on (all in billing_ui/states/_reflex_internals.py),
each pinned here so that a Reflex release that changes one fails this test loudly instead of a
tab quietly misbehaving. Run on every Reflex in the supported range by make reflex-range."""

from __future__ import annotations

import asyncio
import contextvars
import inspect

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
    assert "Object.fromEntries" in str(by_key) and "metrics" in str(by_key)
    assert "filter" in str(near)
    state = UsageMetricsState.get_full_name()
    for var in (by_key, near):
        data = var._get_all_var_data()
        assert data is not None and state in data.state
