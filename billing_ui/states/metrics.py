"""``useUsageMetrics(featureKey?)`` as a Reflex state: the customer's meters, kept fresh.

A page that shows live usage registers the refresh loop as its ``on_load``::

    app.add_page(dashboard, on_load=UsageMetricsState.poll)

Why ``on_load`` and a background task (measured on Reflex 0.10, see docs/architecture.md): Reflex
runs a page's ``on_load`` chain once per tab, cancels it when the tab disconnects or navigates,
and starts it again after a reconnect. So the loop runs while the tab is open, stops within one
interval after it closes, and never runs twice for one tab. A generation counter and a
connection check guard the rest (a client calling ``poll`` by hand).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from reflex.vars import ArrayVar, FunctionStringVar, ObjectVar, Var

from billing_ui.core.customer import NoCustomerError
from billing_ui.core.errors import BillingError
from billing_ui.core.metrics import polling_tab
from billing_ui.settings import get_settings
from billing_ui.states import _runtime as rt
from billing_ui.states.base import BillingState, billing_event
from billing_ui.states.entitlements import FeatureEntitlementsState
from billing_ui.states.history import UsageHistoryState
from billing_ui.states.live import live_meters
from billing_ui.states.status import (
    ERROR,
    PENDING,
    SIGNED_OUT,
    STALE,
    SUCCESS,
    retry_delay,
    show_failure,
    show_success,
)
from billing_ui.states.views import MetricView, metric_views


class UsageMetricsState(BillingState):
    """Vars: ``metrics`` (all of the customer's meters), ``metrics_by_key``, ``status`` (see
    :mod:`billing_ui.states.status`), ``is_loading`` (no data yet), ``is_fetching`` (a refresh
    in flight), ``error`` (last failure; the last good data stays, ``status`` "stale"),
    ``updated_at`` / ``data_updated_at`` (when the data shown was fetched; a refresh that finds
    the same data does not move them, so it sends nothing — they catch up to the last
    successful fetch when the status leaves ``success``, the one time the UI shows them)."""

    metrics: list[MetricView] = []  # noqa: RUF012 - Reflex vars are declared this way
    status: str = PENDING
    is_loading: bool = True
    is_fetching: bool = False
    error: str = ""
    updated_at: str = ""
    data_updated_at: float = 0.0
    _confirmed_at: float = 0.0  # the last successful fetch (see status.stamp)
    _poll_generation: int = 0
    _keep_on_customer_change: ClassVar[tuple[str, ...]] = ("_poll_generation",)

    # Derived in the browser from `metrics` (see _derive below), so the meters cross the wire
    # once: a computed var would send every metric a second time on each update.
    metrics_by_key: ClassVar[ObjectVar[dict[str, MetricView]]]
    """Frontend var: the metrics by feature key, e.g. ``metrics_by_key["api_calls"].remaining``."""
    near_limit: ClassVar[ArrayVar[list[MetricView]]]
    """Frontend var: metrics at >= 80 % of their limit (the upgrade nudge's trigger)."""

    @billing_event
    async def poll(self) -> None:
        """Refresh now and then every ``refresh_interval`` seconds while the tab is open."""
        async with self:
            self._poll_generation += 1
            generation = self._poll_generation
        interval = get_settings().refresh_interval
        failures = 0
        with polling_tab():  # billing_ui_polling_tabs, down again however the loop ends
            while True:
                ok = await self._refresh(force=False)
                failures = 0 if ok else failures + 1
                await asyncio.sleep(retry_delay(failures, interval))
                async with self:
                    superseded = self._poll_generation != generation
                if superseded or not await rt.is_tab_connected(self):
                    live_meters().unfollow(self.router.session.client_token)
                    return

    @billing_event
    async def refetch(self) -> None:
        """Fetch now, bypassing the cache's freshness: coalesced per tab (one in flight, at
        most one more after it, ``MIN_REFETCH_INTERVAL`` apart)."""
        await self._coalesced("metrics", lambda: self._refresh(force=True))

    @billing_event
    async def retry_all(self) -> AsyncIterator[Any]:
        """The page's Retry: refetch everything the billing states show (meters, entitlements,
        charts), not only the meters."""
        yield FeatureEntitlementsState.refetch
        yield UsageHistoryState.refetch_all
        await self._coalesced("metrics", lambda: self._refresh(force=True))

    async def _refresh(self, *, force: bool) -> bool:
        """One refresh; False when the billing API failed (the poll then retries sooner)."""
        settings = get_settings()
        async with self:
            try:
                ticket = await self._begin()
            except NoCustomerError as exc:
                self.status, self.error, self.is_loading = SIGNED_OUT, rt.message_for(exc), False
                return True
            if force or self.status != SUCCESS:  # a background tick shows no spinner
                self.is_fetching = True
            shown = {m.feature_key: m.pending for m in self.metrics if m.pending}
        customer = ticket.customer
        pending = await rt.pending_usage(customer)
        if any(pending.get(key, 0.0) < was for key, was in shown.items()):
            force = True  # queued usage was delivered: the server's numbers, not the cache's
        if force:
            await rt.queries.cache.invalidate((rt.METRICS, customer))
        started = rt.queries.cache.clock()
        try:
            entry = await rt.queries.usage_metrics(
                # A tab's own next tick always finds its data older than one interval (it
                # sleeps a full interval after storing it), so it refetches; the other tabs of
                # the customer within that interval share the entry: one request per interval.
                customer,
                stale_time=settings.refresh_interval,
            )
            hard = await _hard_limited_features(customer)
        except BillingError as exc:
            async with self:
                await self._confirm(ticket)
                show_failure(self, rt.message_for(exc), has_data=bool(self.metrics))
            return False
        # The cache's entry, not the one returned: a track answered while this fetch was in
        # flight has patched the cache with newer usage than the fetch saw.
        entry = await rt.queries.cache.peek((rt.METRICS, customer)) or entry
        async with self:
            await self._confirm(ticket)
            views = metric_views(entry.data, hard, pending)
            changed = views != self.metrics
            self.metrics = views  # an equal list is not assigned (BillingState): no delta
            # Served from the cache while other requests find the API down: say so now, not
            # when this entry expires.
            outage = rt.outage_message() if entry.fetched_at < started else ""
            if entry.fetched_at >= started:
                rt.api_answered()  # fetched just now: queued tracks need not wait their backoff
            show_success(self, entry.updated_at, changed=changed, outage=outage)
            # Entitlements ride on this loop at their slower interval (no loop of their own).
            ent = await self.get_state(FeatureEntitlementsState)
            due = (
                time.time() - ent._confirmed_at >= settings.entitlements_refresh_interval
                or ent.status in (STALE, ERROR)  # recovered: they retry with the meters
            )
        # From now on this tab gets the customer's meters as soon as they change (live.py).
        await live_meters().follow(self.router.session.client_token, customer)
        if due:
            await FeatureEntitlementsState.refresh_for(self)
        return not outage


def _derive(js_function: str) -> Var:  # type: ignore[type-arg]
    """A frontend var computed in the browser from ``metrics`` (public API: a JS function var
    called with the state var, which carries the state's var data along)."""
    return FunctionStringVar.create(js_function).call(UsageMetricsState.metrics)


UsageMetricsState.metrics_by_key = _derive(
    "(ms) => Object.fromEntries((ms ?? []).map((m) => [m.feature_key, m]))"
).to(ObjectVar, dict[str, MetricView])
UsageMetricsState.near_limit = _derive(
    '(ms) => (ms ?? []).filter((m) => m.level === "near" || m.level === "over")'
).to(ArrayVar, list[MetricView])


def metric_for(state: UsageMetricsState, feature_key: str) -> MetricView | None:
    """Backend-side lookup of one meter (handlers and tests; the UI uses ``metrics_by_key``)."""
    return next((m for m in state.metrics if m.feature_key == feature_key), None)


async def _hard_limited_features(customer: str) -> set[str]:
    entry = await rt.queries.entitlements(
        customer, stale_time=get_settings().entitlements_refresh_interval
    )
    return {e.feature_key for e in entry.data if (e.properties or {}).get("hard_limit")}
