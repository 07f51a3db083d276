"""The four public surfaces — BillingClient, AsyncBillingClient and their customer views — are
made from one declaration per operation, so they offer the same operations with the same
parameters (the views without ``customer_id``), and nothing else."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from billing_ui.core import AsyncBillingClient, BillingClient
from billing_ui.core.operations import OPERATIONS, Operation

LIFECYCLE = {
    "close", "aclose", "is_closed", "for_customer", "with_options",
    "base_url", "api_key", "timeout", "max_retries", "backend", "client", "customer_id",
}  # fmt: skip


def public(obj: object) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")} - LIFECYCLE


def params(method: Any) -> list[tuple[str, Any, Any, Any]]:
    return [
        (p.name, p.kind, p.default, p.annotation)
        for p in inspect.signature(method).parameters.values()
    ]


@pytest.fixture
def surfaces() -> Any:
    sync, aio = BillingClient(), AsyncBillingClient()
    yield sync, aio, sync.for_customer("cus_1"), aio.for_customer("cus_1")
    sync.close()


def test_every_surface_offers_exactly_the_declared_operations(surfaces: Any) -> None:
    sync, aio, view, aview = surfaces
    names = {op.name for op in OPERATIONS}
    bound = {op.name for op in OPERATIONS if op.customer_bound} | {"track_usage_batch"}
    assert public(sync) == public(aio) == names
    assert public(view) == public(aview) == bound


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.name)
def test_the_surfaces_have_the_same_parameters(surfaces: Any, op: Operation[Any, Any]) -> None:
    sync, aio, view, aview = surfaces
    declared = list(inspect.signature(op.run).parameters)[1:]  # without the client
    assert [p[0] for p in params(getattr(sync, op.name))] == declared
    assert params(getattr(sync, op.name)) == params(getattr(aio, op.name))
    assert inspect.iscoroutinefunction(getattr(aio, op.name))
    assert getattr(sync, op.name).__doc__ == op.run.__doc__
    if op.customer_bound:
        assert declared[0] == "customer_id"
        assert params(getattr(view, op.name)) == params(getattr(sync, op.name))[1:]
        assert params(getattr(aview, op.name)) == params(getattr(view, op.name))
        assert inspect.iscoroutinefunction(getattr(aview, op.name))


def test_the_views_batch_takes_the_clients_events(surfaces: Any) -> None:
    sync, aio, view, aview = surfaces
    assert params(view.track_usage_batch) == params(sync.track_usage_batch)
    assert params(aview.track_usage_batch) == params(aio.track_usage_batch)
