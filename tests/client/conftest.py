"""Fixtures for the client tests: both clients against the real local server over loopback.

Every client test runs twice, once with :class:`BillingClient` and once with
:class:`AsyncBillingClient`, through :class:`Api`: one awaitable face for both (the sync
client's calls run in a worker thread, which also exercises its thread safety). Customers are
fresh per test, so most tests share one server; tests that move the server's clock or turn on
its rate limiter get their own (``billing_server``).
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from faults import FaultProxy

from billing_ui.core import AsyncBillingClient, BillingClient
from billing_ui.core._constants import ENV_BASE_URL, ENV_SECRET_KEY
from billing_ui.server.testing import RunningServer


class Api:
    """A client (or a customer view) with every method awaitable, whichever client it is."""

    def __init__(self, target: Any) -> None:
        self.target = target

    @property
    def kind(self) -> str:
        return "async" if self.is_async else "sync"

    @property
    def is_async(self) -> bool:
        client = getattr(self.target, "client", self.target)
        return isinstance(client, AsyncBillingClient)

    def for_customer(self, customer_id: Any) -> Api:
        return Api(self.target.for_customer(customer_id))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.target, name)
        if not callable(attr) or inspect.iscoroutinefunction(attr):
            return attr

        async def in_thread(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(attr, *args, **kwargs)

        return in_thread


MakeApi = Callable[..., Api]


@pytest.fixture(autouse=True)
def _no_billing_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own BILLINGOS_* settings must not point the tests elsewhere."""
    monkeypatch.delenv(ENV_BASE_URL, raising=False)
    monkeypatch.delenv(ENV_SECRET_KEY, raising=False)


@pytest.fixture(params=["sync", "async"])
async def make_api(request: pytest.FixtureRequest) -> AsyncIterator[MakeApi]:
    """``make_api(base_url, **options)``: a client of this test's kind, closed afterwards.
    Backoff is shortened (10-50 ms) so retry tests do not idle; a test may override it."""
    made: list[BillingClient | AsyncBillingClient] = []

    def make(base_url: str, **options: Any) -> Api:
        options.setdefault("retry_initial_delay", 0.01)
        options.setdefault("retry_max_delay", 0.05)
        cls = BillingClient if request.param == "sync" else AsyncBillingClient
        client = cls(base_url=base_url, **options)
        made.append(client)
        return Api(client)

    yield make
    for client in made:
        if isinstance(client, AsyncBillingClient):
            await client.aclose()
        else:
            client.close()


@pytest.fixture
def server(shared_billing_server: RunningServer) -> RunningServer:
    return shared_billing_server


@pytest.fixture
def api(make_api: MakeApi, server: RunningServer) -> Api:
    """A client straight to the shared server."""
    return make_api(server.base_url)


@pytest.fixture
def proxy(server: RunningServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the shared server (forwarding until scripted)."""
    with FaultProxy(server.base_url) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def proxied(make_api: MakeApi, proxy: FaultProxy) -> Api:
    """A client that talks to the shared server through ``proxy``."""
    return make_api(proxy.url)


@pytest.fixture(scope="session")
def admin(shared_billing_server: RunningServer) -> Iterator[httpx.Client]:
    """One raw HTTP client with the secret key for test set-up (creating a client per call
    costs more than the call)."""
    with shared_billing_server.client() as client:
        yield client


@pytest.fixture
def customer(admin: httpx.Client) -> Callable[..., str]:
    """``customer("free")``: a fresh customer on the shared server with those products."""

    def make(*products: str, status: str = "active") -> str:
        cid = f"cus_client_{uuid.uuid4().hex[:12]}"
        body = {"products": list(products or ("pro",)), "status": status}
        admin.put(f"/v1/customers/{cid}", json=body).raise_for_status()
        return cid

    return make
