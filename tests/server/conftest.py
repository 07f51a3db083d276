"""Fixtures for the server tests: a server on a ManualClock at a fixed instant, a client
with the secret key, and factories for customers and session tokens.

Every test that uses a server (or ``database``) runs twice, once per store: ``[sqlite]`` on a
fresh file, ``[postgres]`` on a fresh database of the session's throwaway cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing_ui.server.clock import ManualClock
from billing_ui.server.testing import (
    RunningServer,
    create_customer,
    mint_session_token,
    running_server,
)

T0 = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
"""A Sunday in the middle of a month: far from every period boundary."""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


STORE_KINDS = ("sqlite", "postgres")


@pytest.fixture(scope="module", params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def new_database(request: pytest.FixtureRequest, kind: str, folder: Path) -> dict[str, Any]:
    """``running_server`` keyword arguments for a fresh, empty database of ``kind``, dropped
    when the requesting fixture's scope ends."""
    if kind == "postgres":
        cluster = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database()
        request.addfinalizer(lambda: cluster.drop_database(url))
        return {"database_url": url}
    return {"db_path": folder / "billing.db"}


@pytest.fixture
def database(request: pytest.FixtureRequest, store_kind: str, tmp_path: Path) -> dict[str, Any]:
    """A fresh database for one test: ``running_server(**database, ...)``."""
    return new_database(request, store_kind, tmp_path)


@pytest.fixture
def server(database: dict[str, Any], clock: ManualClock) -> Iterator[RunningServer]:
    with running_server(**database, clock=clock) as srv:
        yield srv


@pytest.fixture
def api(server: RunningServer) -> Iterator[httpx.Client]:
    """httpx client with the secret key."""
    with server.client() as client:
        yield client


@pytest.fixture
def customer(server: RunningServer) -> Callable[..., str]:
    """``customer("free")`` -> the id of a new customer subscribed to those products."""

    def make(*products: str, status: str = "active", customer_id: str | None = None) -> str:
        return create_customer(server, products or ("pro",), status=status, customer_id=customer_id)

    return make


@pytest.fixture
def session(server: RunningServer) -> Iterator[Callable[..., httpx.Client]]:
    """``session(customer_id)`` -> an httpx client holding a session token for it."""
    clients: list[httpx.Client] = []

    def make(customer_id: str, expires_in: int = 3600) -> httpx.Client:
        client = server.client(mint_session_token(server, customer_id, expires_in))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def track(
    api: httpx.Client, customer_id: str, feature_key: str, quantity: Any, **extra: Any
) -> httpx.Response:
    body = {"customer_id": customer_id, "feature_key": feature_key, "quantity": quantity, **extra}
    return api.post("/v1/usage/track", json=body)


def metric(api: httpx.Client, customer_id: str, feature_key: str) -> dict[str, Any]:
    response = api.get(
        "/v1/usage/metrics", params={"customer_id": customer_id, "feature_key": feature_key}
    )
    assert response.status_code == 200, response.text
    (only,) = response.json()["metrics"]
    return dict(only)


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is a BillingOS envelope with this status and code; returns ``error``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["statusCode"] == status
    error = body["error"]
    assert error["code"] == code, body
    assert error["requestId"] == response.headers["x-request-id"]
    assert error["requestId"].startswith("req_")
    assert error["timestamp"].endswith("Z")
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)
