"""App-level settings of the billing states: the client, the customer resolver, the refresh
intervals, and what a browser may track.

Held at module level, never in a state var: every public state var is sent to the browser, and
the client holds the secret key. Configure once, at import time of the app::

    import billing_ui

    billing_ui.configure(
        customer_resolver=current_user_id,            # (state) -> str | None, sync or async
        trackable={"api_calls": billing_ui.TrackRule(max_quantity=10)},
        refresh_interval=30.0,
    )
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from billing_ui.core import AsyncBillingClient
from billing_ui.core.cache import QueryCache
from billing_ui.core.customer import CustomerResolver
from billing_ui.core.validation import check_feature_key


@dataclass(frozen=True, slots=True)
class TrackRule:
    """What a browser may track for one feature in one call."""

    max_quantity: float = 100.0
    integer_only: bool = True
    metadata_max_bytes: int = 1024


def _no_resolver(_state: Any) -> None:
    raise RuntimeError(
        "billing_ui has no customer resolver: call billing_ui.configure(customer_resolver=...) "
        "with a function that returns the signed-in user's id from the handler's state."
    )


@dataclass(frozen=True)
class BillingSettings:
    """See the module docstring. ``client_factory`` makes one client per event loop (an
    ``httpx.AsyncClient`` must not be shared across loops); by default it reads
    ``BILLINGOS_API_URL`` and ``BILLINGOS_SECRET_KEY``."""

    customer_resolver: CustomerResolver = _no_resolver
    trackable: Mapping[str, TrackRule] = field(default_factory=dict)
    refresh_interval: float = 30.0
    entitlements_refresh_interval: float = 300.0
    client_factory: Callable[[], AsyncBillingClient] = AsyncBillingClient

    def __post_init__(self) -> None:
        for key in self.trackable:
            check_feature_key(key, field="trackable")
        if not self.refresh_interval > 0 or not self.entitlements_refresh_interval > 0:
            raise ValueError("refresh intervals must be greater than 0 seconds")


_settings = BillingSettings()
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncBillingClient] = (
    weakref.WeakKeyDictionary()
)
cache = QueryCache()
"""The process-wide query cache shared by every session (see billing_ui.core.cache)."""


def configure(**changes: Any) -> BillingSettings:
    """Change the settings (fields of :class:`BillingSettings`); returns the new settings."""
    global _settings
    _settings = replace(_settings, **changes)
    if "client_factory" in changes:
        _clients.clear()
    cache.clear()
    return _settings


def get_settings() -> BillingSettings:
    return _settings


def get_client() -> AsyncBillingClient:
    """The billing client of the running event loop, created on first use."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = _settings.client_factory()
    return client


async def close_client() -> None:
    """Close the running event loop's client, if one was made (an app's shutdown, a test's
    teardown): its pooled connections are released instead of left to the garbage collector."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
