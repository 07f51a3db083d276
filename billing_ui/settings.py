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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from billing_ui.core import AsyncBillingClient
from billing_ui.core.cache import MemoryQueryStore
from billing_ui.core.customer import CustomerResolver
from billing_ui.core.errors import InvalidInputError
from billing_ui.core.track_rules import TrackRule
from billing_ui.core.tracker import UsageTracker
from billing_ui.core.validation import check_feature_key


def _no_resolver(_state: Any) -> None:
    raise RuntimeError(
        "billing_ui has no customer resolver: call billing_ui.configure(customer_resolver=...) "
        "with a function that returns the signed-in user's id from the handler's state."
    )


@dataclass(frozen=True)
class BillingSettings:
    """Everything :func:`configure` sets. To add a setting: a field here with its docstring
    (docs/components.md's settings table is generated from these), a check in
    ``__post_init__`` if it has rules, and the same keyword in :func:`configure`; then run
    ``python scripts/gen_components_doc.py --write``. tests/components/test_docs.py keeps the
    three in step."""

    customer_resolver: CustomerResolver = _no_resolver
    """``(state) -> str | None``, sync or async: the signed-in customer's id (BillingOS's
    ``external_user_id``) from the handler's state (your auth state, cookies, headers), or
    ``None`` when nobody is signed in. Runs on the server: the browser never names the
    customer. Required."""

    trackable: Mapping[str, TrackRule] = field(default_factory=dict)
    """Which features a browser may track and how much per call:
    ``{"api_calls": TrackRule(max_quantity=10, integer_only=True, metadata_max_bytes=1024)}``.
    A browser's track of any other feature is refused. Empty: the browser may track nothing."""

    refresh_interval: float = 30.0
    """Seconds between usage refreshes while a page with ``on_load=UsageMetricsState.poll`` is
    open (the SDK's ``useUsageMetrics`` refetches every 30 s): one upstream request per
    customer per interval, however many tabs. Feature checks are reused as long."""

    entitlements_refresh_interval: float = 300.0
    """Seconds an entitlements answer (the plan's features) is reused before it is fetched
    again. Plans change rarely, so they ride on the usage loop at this slower pace."""

    client_factory: Callable[[], AsyncBillingClient] = AsyncBillingClient
    """``() -> AsyncBillingClient``, called once per event loop (an httpx client must not be
    shared across loops). The default reads ``BILLINGOS_API_URL`` and ``BILLINGOS_SECRET_KEY``
    (the local server when unset). Pass your own for another URL, key, timeout or retry
    count: ``lambda: AsyncBillingClient(base_url=..., api_key=..., timeout=5)``."""

    browser_burst: int = 30
    """How many calls one tab (Reflex session) may make in a burst to the handlers that reach
    the billing API (tracks, refetches, checks, polls). Past it, a call is refused before any
    request is made, and the tab is told "Too many requests from this page: wait a moment."
    With ``browser_rate``, a token bucket: no browser can grow the upstream traffic."""
    browser_rate: float = 5.0
    """Calls per second one tab earns back after a burst (the bucket's refill rate)."""

    track_outbox: UsageTracker | None = None
    """A :class:`~billing_ui.core.tracker.UsageTracker` whose durable outbox keeps the tracks
    the billing API could not take for a retryable reason (no answer, 5xx, 429): the button
    says "Queued, will be sent (N waiting)" and the tracker's worker delivers them with their
    keys, also after a restart. Fail-closed features (seats) are never queued. ``None``: a
    track with no answer is asked about again in memory ("not confirmed yet")."""

    metrics_path: str | None = None
    """Serve the Prometheus metrics (:mod:`billing_ui.core.metrics`: tracks by result,
    retries, outbox depth and age, upstream latency, cache hits and fetches, polling tabs) at
    this path of the backend, e.g. ``"/metrics"``, when the app is installed with
    ``billing_ui.install(app, settings)``. ``None``: not served (the default: an operator
    opts in, and keeps the path off the public internet)."""

    def __post_init__(self) -> None:
        if isinstance(self.browser_burst, bool) or not isinstance(self.browser_burst, int):
            raise InvalidInputError.single("browser_burst", "type", "must be a whole number")
        if self.browser_burst < 1:
            raise InvalidInputError.single("browser_burst", "ge", "must be at least 1")
        for name in ("customer_resolver", "client_factory"):
            if not callable(getattr(self, name)):
                raise InvalidInputError.single(name, "callable", "must be a function")
        if not isinstance(self.trackable, Mapping):
            raise InvalidInputError.single(
                "trackable", "type", "must be a mapping of feature key to TrackRule"
            )
        for key, rule in self.trackable.items():
            check_feature_key(key, field="trackable")
            if not isinstance(rule, TrackRule):
                raise InvalidInputError.single(
                    f"trackable.{key}", "type", "must be a billing_ui.TrackRule"
                )
        if self.track_outbox is not None and not isinstance(self.track_outbox, UsageTracker):
            raise InvalidInputError.single(
                "track_outbox", "type", "must be a billing_ui.core.UsageTracker or None"
            )
        path = self.metrics_path
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise InvalidInputError.single("metrics_path", "path", "must be a path like /metrics")
        rate = self.browser_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise InvalidInputError.single("browser_rate", "gt", "must be a number > 0")
        for name in ("refresh_interval", "entitlements_refresh_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidInputError.single(name, "gt", "must be a number of seconds > 0")


class _Unset:
    def __repr__(self) -> str:
        return "<unchanged>"


_UNCHANGED: Any = _Unset()


def configure(
    *,
    customer_resolver: CustomerResolver = _UNCHANGED,
    trackable: Mapping[str, TrackRule] = _UNCHANGED,
    refresh_interval: float = _UNCHANGED,
    entitlements_refresh_interval: float = _UNCHANGED,
    client_factory: Callable[[], AsyncBillingClient] = _UNCHANGED,
    browser_burst: int = _UNCHANGED,
    browser_rate: float = _UNCHANGED,
    track_outbox: UsageTracker | None = _UNCHANGED,
    metrics_path: str | None = _UNCHANGED,
) -> BillingSettings:
    """Change the settings given (each is a field of :class:`BillingSettings`, documented
    there and in docs/components.md); the others keep their value. Returns the new settings.

    Raises :class:`~billing_ui.core.errors.InvalidInputError` naming the setting and the rule
    it breaks (``refresh_interval: must be a number of seconds > 0``); nothing changes then.
    """
    given = dict(locals())  # first: only the arguments
    from billing_ui.runtime import current

    changes = {name: value for name, value in given.items() if value is not _UNCHANGED}
    runtime = current()
    runtime.reconfigure(replace(runtime.settings, **changes))
    if isinstance(runtime.store, MemoryQueryStore):  # answers made under the old settings
        runtime.store.forget_all()
    return runtime.settings


def setting_names() -> list[str]:
    """The names of every setting, in declaration order."""
    return [f.name for f in fields(BillingSettings)]


def get_settings() -> BillingSettings:
    """The installed runtime's settings (:func:`billing_ui.runtime.current`)."""
    from billing_ui.runtime import current

    return current().settings


async def close_client() -> None:
    """Close the installed runtime's client and store connections of the running event loop
    (an app's shutdown, a test's teardown): pooled connections are released instead of left to
    the garbage collector. An app that called :func:`billing_ui.install` has this done by its
    lifespan."""
    from billing_ui.runtime import current

    await current().aclose()
