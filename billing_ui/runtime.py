"""The billing runtime: what an app's billing states share, in one object instead of module
globals: the settings (customer resolver included), one billing client per event loop, the
query store (in memory, or Redis to share it between workers) and the query layer on them.

Why an object: an app installs one (:func:`install`), its lifespan closes the clients and the
store at shutdown, and a test (or a second app in the same process) builds its own without
saving and restoring anything. The states reach the installed one through
:func:`current`; ``billing_ui.configure()`` stays as the short path that changes its settings.

Scalar settings also come from environment variables with one prefix (``BILLING_UI_``):
``BILLING_UI_REFRESH_INTERVAL=10``, ``BILLING_UI_REDIS_URL=redis://127.0.0.1:6379/0`` (see
:class:`EnvSettings`). Values given in code win over the environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import weakref
from collections.abc import AsyncIterator
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from billing_ui.core import metrics
from billing_ui.core.cache import MemoryQueryStore, QueryStore
from billing_ui.core.client import AsyncBillingClient
from billing_ui.core.metrics import BillingMetrics, serve_metrics
from billing_ui.core.problems import ProblemLog
from billing_ui.core.queries import QUERY_TYPES, BillingQueries
from billing_ui.settings import BillingSettings

ENV_PREFIX = "BILLING_UI_"


class EnvSettings(BaseSettings):
    """The settings an operator may set from the environment (prefix ``BILLING_UI_``); the
    customer resolver, the trackable features and the client factory are code, given to
    :func:`install` in a :class:`BillingSettings`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    refresh_interval: float | None = Field(default=None, gt=0)
    entitlements_refresh_interval: float | None = Field(default=None, gt=0)
    browser_burst: int | None = Field(default=None, ge=1)
    browser_rate: float | None = Field(default=None, gt=0)
    redis_url: str | None = None
    """Keep the query store in this Redis (``redis://host:port/db``), shared by every worker.
    Unset: in this process's memory."""
    query_max_entries: int = Field(default=10_000, ge=1)
    """The in-memory store's size limit (keys); least recently used ones go first."""
    query_gc_time: float = Field(default=300.0, gt=0)
    """Seconds an unread key stays in the in-memory store (TanStack Query's ``gcTime``)."""
    query_ttl: float = Field(default=600.0, gt=0)
    """Seconds a Redis entry lives after its last write."""
    metrics_path: str | None = None
    """Serve Prometheus metrics at this path of the app's backend (``/metrics``)."""
    namespace: str = "billing_ui"
    """The prefix of every Redis key and channel (apps sharing one Redis use different ones)."""

    def apply(self, settings: BillingSettings) -> BillingSettings:
        """``settings`` with the values set in the environment and left at their defaults in
        code (code wins)."""
        defaults = BillingSettings()
        changes = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(BillingSettings)
            if f.name in type(self).model_fields
            and getattr(self, f.name) is not None
            and getattr(settings, f.name) == getattr(defaults, f.name)
        }
        return dataclasses.replace(settings, **changes)

    def store(self) -> QueryStore:
        """The query store these settings name."""
        if self.redis_url:
            from billing_ui.core.redis_cache import RedisQueryStore

            return RedisQueryStore(
                self.redis_url, namespace=self.namespace, ttl=self.query_ttl, types=QUERY_TYPES
            )
        return MemoryQueryStore(max_entries=self.query_max_entries, gc_time=self.query_gc_time)


class BillingRuntime:
    """Settings, per-loop clients, the query store and the query layer of one app."""

    def __init__(
        self,
        settings: BillingSettings | None = None,
        *,
        store: QueryStore | None = None,
        env: EnvSettings | None = None,
    ) -> None:
        env = env if env is not None else EnvSettings()
        self.settings: BillingSettings = env.apply(settings or BillingSettings())
        self.store: QueryStore = store if store is not None else env.store()
        self.problems = ProblemLog()
        self.metrics = BillingMetrics()
        """This runtime's Prometheus metrics (a registry of its own; current once installed)."""
        self.metrics.watch_store(self.store)
        if self.settings.track_outbox is not None:
            self.metrics.watch_outbox(self.settings.track_outbox.outbox)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncBillingClient] = (
            weakref.WeakKeyDictionary()
        )
        self.queries = BillingQueries(self.client, self.store, self.problems)

    def client(self) -> AsyncBillingClient:
        """The billing client of the running event loop, created on first use (an httpx client
        must not be shared across loops)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self.settings.client_factory()
        return client

    def reconfigure(self, settings: BillingSettings) -> None:
        """New settings (``configure()``); clients made by an older factory are dropped."""
        if settings.client_factory is not self.settings.client_factory:
            self._clients.clear()
        if settings.track_outbox is not None:
            self.metrics.watch_outbox(settings.track_outbox.outbox)
        self.settings = settings

    async def aclose(self) -> None:
        """Close the running loop's client and the store's connections on it."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
        await self.store.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """For the app's lifespan: nothing at start, :meth:`aclose` at shutdown."""
        try:
            yield
        finally:
            await self.aclose()


_current: BillingRuntime | None = None


def current() -> BillingRuntime:
    """The installed runtime; a default one (settings from the environment) until an app
    installs its own."""
    global _current
    if _current is None:
        _current = BillingRuntime()
        metrics.use(_current.metrics)
    return _current


def install(
    app: Any = None,
    settings: BillingSettings | None = None,
    *,
    store: QueryStore | None = None,
) -> BillingRuntime:
    """Make a runtime the one the billing states use, and register its lifespan with ``app``
    (a Reflex ``rx.App``, or anything with ``register_lifespan_task``) so its clients and store
    are closed at shutdown. Returns the runtime::

        app = rx.App()
        billing_ui.install(app, billing_ui.BillingSettings(customer_resolver=current_user_id))
    """
    global _current
    runtime = BillingRuntime(settings, store=store)
    register = getattr(app, "register_lifespan_task", None)
    if callable(register):
        register(runtime.lifespan)
    path = runtime.settings.metrics_path
    if path is not None and app is not None:
        expose_metrics(app, path)
    metrics.use(runtime.metrics)
    _current = runtime
    return runtime


def expose_metrics(app: Any, path: str = "/metrics") -> None:
    """Serve the Prometheus metrics of the current runtime at ``path`` of a Reflex app's
    backend (what ``install`` does when ``metrics_path`` is set; for an app that configures
    with ``configure()`` instead). Added to the app's ``api_transformer`` (None, one, or a
    sequence of them), which Reflex applies to its backend when it starts."""
    transformer = functools.partial(serve_metrics, path=path)
    existing = getattr(app, "api_transformer", None)
    if existing is None:
        app.api_transformer = transformer
    elif isinstance(existing, list | tuple):
        app.api_transformer = [*existing, transformer]
    else:
        app.api_transformer = [existing, transformer]
