"""The runtime instead of module globals: two runtimes live side by side, settings come from
``BILLING_UI_*`` environment variables, the lifespan closes what the runtime opened.

Against the real local billing server over loopback (and the session's real Redis)."""

from __future__ import annotations

import contextvars

import pytest
from pydantic import ValidationError

from billing_ui.core import AsyncBillingClient
from billing_ui.core.cache import MemoryQueryStore
from billing_ui.core.queries import METRICS
from billing_ui.runtime import BillingRuntime, EnvSettings, current, install
from billing_ui.server.testing import RunningServer
from billing_ui.settings import BillingSettings


def settings_for(server: RunningServer) -> BillingSettings:
    return BillingSettings(
        client_factory=lambda: AsyncBillingClient(base_url=server.base_url, api_key=server.api_key)
    )


async def test_a_second_runtime_shares_nothing_with_the_first(
    billing_server: RunningServer, fresh_customer: str
) -> None:
    installed = current()
    first = BillingRuntime(settings_for(billing_server))
    second = BillingRuntime(settings_for(billing_server), store=MemoryQueryStore(max_entries=5))
    try:
        entry = await first.queries.usage_metrics(fresh_customer)
        assert entry.data, "the customer's meters, from the real server"
        assert await first.store.peek((METRICS, fresh_customer)) is not None
        assert await second.store.peek((METRICS, fresh_customer)) is None
        assert first.client() is not second.client()
        await second.queries.usage_metrics(fresh_customer)
        assert first.store.stats.fetches == second.store.stats.fetches == 1
    finally:
        await first.aclose()
        await second.aclose()
    assert current() is installed, "building runtimes touched no global"


async def test_the_lifespan_closes_the_loops_client(billing_server: RunningServer) -> None:
    runtime = BillingRuntime(settings_for(billing_server))
    async with runtime.lifespan():
        client = runtime.client()
        assert runtime.client() is client  # one per loop
    assert client.is_closed


def test_settings_come_from_the_environment_with_one_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BILLING_UI_REFRESH_INTERVAL", "12")
    monkeypatch.setenv("BILLING_UI_QUERY_MAX_ENTRIES", "50")
    runtime = BillingRuntime()
    assert runtime.settings.refresh_interval == 12
    assert isinstance(runtime.store, MemoryQueryStore) and runtime.store.max_entries == 50
    # A value given in code wins over the environment.
    assert BillingRuntime(BillingSettings(refresh_interval=7)).settings.refresh_interval == 7


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_UI_REFRESH_INTERVAL", "-1")
    with pytest.raises(ValidationError, match="refresh_interval"):
        EnvSettings()


async def test_a_redis_url_in_the_environment_puts_the_store_in_redis(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    from billing_ui.core.redis_cache import RedisQueryStore

    monkeypatch.setenv("BILLING_UI_REDIS_URL", redis_url)
    runtime = BillingRuntime()
    try:
        assert isinstance(runtime.store, RedisQueryStore)
        assert await runtime.store.size() >= 0  # it answers
    finally:
        await runtime.aclose()


def test_install_registers_the_lifespan_and_becomes_current(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import reflex as rx

    import billing_ui.runtime as runtime_module

    monkeypatch.setattr(runtime_module, "_current", runtime_module._current)
    # An app of its own, in a fresh context: Reflex's registry allows one App per context.
    app = contextvars.Context().run(rx.App)
    runtime = install(app, BillingSettings(refresh_interval=9))
    assert current() is runtime and runtime.settings.refresh_interval == 9
    assert runtime.lifespan in app.get_lifespan_tasks()


def test_install_with_metrics_path_serves_this_runtimes_metrics_on_the_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The transformer ``install`` adds to a real ``rx.App`` (Reflex applies it to its backend
    at start), applied here to a stand-in backend served by uvicorn on loopback: ``GET
    /metrics`` answers with this runtime's registry, every other request reaches the backend.
    Polling tabs move the gauge of that registry, not another runtime's."""
    import httpx
    import reflex as rx
    from prometheus_client.parser import text_string_to_metric_families
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    import billing_ui.runtime as runtime_module
    from billing_ui.core import metrics
    from billing_ui.server.testing import serve_asgi

    monkeypatch.setattr(runtime_module, "_current", runtime_module._current)
    monkeypatch.setattr(metrics, "_current", metrics._current)
    app = contextvars.Context().run(rx.App)
    runtime = install(app, BillingSettings(metrics_path="/metrics"))
    other = BillingRuntime()  # a second runtime: its own registry
    backend = Starlette(routes=[Route("/ping", lambda _: PlainTextResponse("pong"))])
    (transform,) = (
        app.api_transformer if isinstance(app.api_transformer, list) else [app.api_transformer]
    )

    def tabs(url: str) -> float:
        text = httpx.get(f"{url}/metrics").text
        (family,) = [
            f for f in text_string_to_metric_families(text) if f.name == "billing_ui_polling_tabs"
        ]
        return float(family.samples[0].value)

    with serve_asgi(transform(backend), name="metrics-backend") as url:
        assert httpx.get(f"{url}/ping").text == "pong"
        assert tabs(url) == 0
        with metrics.polling_tab(), metrics.polling_tab():
            assert tabs(url) == 2
        assert tabs(url) == 0
        other.metrics.polling_tabs.inc()
        assert tabs(url) == 0
    assert runtime.metrics is metrics.current()


def test_a_metrics_path_that_is_not_a_path_is_refused() -> None:
    from billing_ui.core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="metrics_path"):
        BillingSettings(metrics_path="metrics")
