"""Drive the billing states through Reflex's real event pipeline, against the real local server.

``BaseStateEventProcessor`` is what a Reflex backend runs for every websocket event: it looks up
the handler by name, coerces the payload, locks the session's state, runs background tasks and
chains the events they yield. Here it runs in-process with Reflex's in-memory state manager, so
a test sends exactly what a browser would send (an event name and a JSON payload) and then reads
the session's state. The billing server is the real one, over loopback HTTP, behind the counting
proxy from tests/faults.py (forwarding only: it counts the upstream requests).

Every test that configures the states (``configure_billing``) runs twice, once per query
store: in memory and in Redis (the session's throwaway ``redis-server``, a fresh namespace per
test). Without redis-server the Redis half is skipped locally and fails in CI (``CI=true``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import reflex as rx
from reflex.istate.manager.token import BaseStateToken
from reflex_base.event import Event
from reflex_base.event.processor import BaseStateEventProcessor

import billing_ui.states as bs
from billing_ui import runtime
from billing_ui import settings as billing_settings
from billing_ui.core import AsyncBillingClient
from billing_ui.core.cache import MemoryQueryStore, QueryStore
from billing_ui.core.queries import QUERY_TYPES
from billing_ui.core.redis_cache import RedisQueryStore
from billing_ui.server.testing import RunningServer, create_customer, running_server
from billing_ui.states.track import _TrackTurn
from tests.faults import FaultProxy

S = TypeVar("S", bound=rx.State)


class AuthTestState(rx.State):
    """The app's own auth state: a backend-only var the browser can neither see nor set."""

    _customer_id: str = ""

    @rx.event
    @bs.switches_customer
    def switch_to(self, customer_id: str) -> None:
        """An app's sign-in handler (test only: takes the id as given), with the billing reset
        in the same event."""
        self._customer_id = customer_id


async def resolve_from_auth_state(state: rx.State) -> str | None:
    auth = await state.get_state(AuthTestState)
    return auth._customer_id or None


@dataclass
class Session:
    """One browser tab's session, driven through the real event processor."""

    processor: BaseStateEventProcessor
    token: str
    server: RunningServer
    proxy: FaultProxy
    customer_id: str
    sent: list[str] = field(default_factory=list)

    async def send(self, handler: Any, **payload: Any) -> None:
        """Send the event a browser would send for ``handler`` and wait for it to finish, and
        for the tracks it handed to tasks of their own (a track's handler returns once the
        track is in line: ``states/track.py``'s ``_TrackTurn.later``; a track still waiting
        for its turn is not waited for)."""
        before = set(_TrackTurn._running)
        await asyncio.gather(*await self.start(handler, **payload))
        while started := _TrackTurn._running - before:
            await asyncio.wait(started)

    async def start(self, handler: Any, **payload: Any) -> list[asyncio.Future[Any]]:
        """Send the event a browser would send for ``handler``; don't wait (a poll loop)."""
        name = f"{handler.state_full_name}.{handler.fn.__name__}"
        self.sent.append(name)
        event = Event(name=name, payload=payload)
        return list(await self.processor.enqueue_many(self.token, event))

    async def get(self, cls: type[S]) -> S:
        manager = self.processor._root_context.state_manager  # type: ignore[union-attr]
        root = await manager.get_state(BaseStateToken(ident=self.token, cls=cls))
        return await root.get_state(cls)

    async def sign_in(self, customer_id: str) -> None:
        manager = self.processor._root_context.state_manager  # type: ignore[union-attr]
        async with manager.modify_state(
            BaseStateToken(ident=self.token, cls=AuthTestState)
        ) as root:
            auth = await root.get_state(AuthTestState)
            auth._customer_id = customer_id

    def upstream(self, path: str) -> int:
        return len(self.proxy.seen(path))


async def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 10.0, message: str = ""
) -> Any:
    """Poll an async-or-sync predicate until truthy; fail with ``message`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message}")
        await asyncio.sleep(0.02)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(db_path=tmp_path / "billing.db", seed=True) as srv:
        yield srv


@pytest.fixture
def proxy(server: RunningServer) -> Iterator[FaultProxy]:
    with FaultProxy(server.base_url) as p:
        yield p


@pytest.fixture(params=["memory", "redis"])
async def query_store(request: pytest.FixtureRequest) -> AsyncIterator[QueryStore]:
    """A fresh runtime on this test's query store (memory, or Redis); the previous runtime is
    installed again afterwards."""
    if request.param == "redis":
        store: QueryStore = RedisQueryStore(
            request.getfixturevalue("redis_url"),
            namespace=f"states{uuid.uuid4().hex[:12]}",
            types=QUERY_TYPES,
        )
    else:
        store = MemoryQueryStore()
    before = runtime.current()
    installed = runtime.install(None, before.settings, store=store)
    yield store
    await installed.aclose()  # its client and store connections, on this test's loop
    runtime._current = before  # what install() replaced (no public "uninstall")


@pytest.fixture
def configure_billing(
    server: RunningServer, proxy: FaultProxy, query_store: QueryStore
) -> Iterator[Callable[..., bs.BillingSettings]]:
    """Point the states at the proxied server; restore the defaults afterwards."""
    before = bs.get_settings()

    def apply(**overrides: Any) -> bs.BillingSettings:
        options: dict[str, Any] = {
            "customer_resolver": resolve_from_auth_state,
            "trackable": {
                "api_calls": bs.TrackRule(max_quantity=100),
                "ai_tokens": bs.TrackRule(max_quantity=5000),
                "storage_gb": bs.TrackRule(max_quantity=10, integer_only=False),
            },
            "client_factory": lambda: AsyncBillingClient(
                base_url=proxy.url, api_key=server.api_key, max_retries=0
            ),
            "refresh_interval": 30.0,
            "track_outbox": None,  # a test that wants one says so
        }
        options.update(overrides)
        return bs.configure(**options)

    apply()
    yield apply
    bs.configure(**{f: getattr(before, f) for f in before.__dataclass_fields__})


@pytest.fixture
async def processor() -> AsyncIterator[BaseStateEventProcessor]:
    proc = BaseStateEventProcessor().configure()
    async with proc:
        yield proc
    await billing_settings.close_client()


@pytest.fixture
async def session(
    processor: BaseStateEventProcessor,
    server: RunningServer,
    proxy: FaultProxy,
    configure_billing: Callable[..., bs.BillingSettings],
) -> Session:
    """A signed-in tab of a fresh customer on the Pro plan."""
    customer = create_customer(server, ["pro"])
    s = Session(
        processor, token=f"tab-{customer}", server=server, proxy=proxy, customer_id=customer
    )
    await s.sign_in(customer)
    return s
