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
from typing import Any, ClassVar, Final

from reflex.vars import ArrayVar, FunctionStringVar, Var

from billing_ui.core.customer import NoCustomerError
from billing_ui.core.errors import BillingError
from billing_ui.core.metrics import polling_tab
from billing_ui.settings import get_settings
from billing_ui.states import _reflex_internals as internals
from billing_ui.states import _runtime as rt
from billing_ui.states.base import BillingState, Ticket, _owner_of, billing_event
from billing_ui.states.entitlements import FeatureEntitlementsState
from billing_ui.states.history import UsageHistoryState
from billing_ui.states.live import live_meters
from billing_ui.states.split_map import SplitList, SplitMap
from billing_ui.states.status import (
    ERROR,
    PENDING,
    SIGNED_OUT,
    STALE,
    SUCCESS,
    retry_delay,
    show_failure,
    show_success,
    shows_fetching,
)
from billing_ui.states.views import MetricView, metric_views

METER_BUCKETS: Final = 4
"""Bucket vars of the meters: fewer than the checks' 8, for the state-size budget (bench
``states_fanout``: all five billing states of a customer with 10 meters and 10 entitlements,
goal <= 8,000 bytes). Each bucket costs its name in every hydrate even when empty
(``,"meters_7_rx_state_":{}``, 24 bytes), and each meter its key once more (``"metric_0":``).
Measured with that bench's ``state_size`` (30 Nov 2026): one list 7,740 bytes; 2 buckets 7,885;
4 buckets 7,932; 8 buckets 8,029 (past the goal). With 4, one changed meter sends at most
``ceil(n / 4)`` meters of ``n`` (3 of 10, 8 of 30) instead of all of them."""
METERS: Final = SplitMap[MetricView](buckets=METER_BUCKETS, prefix="meters")
"""The meters by feature key, in ``meters_0`` ... ``meters_3``: a track or a live push that
moves one meter sends its bucket, not every meter (issue 8, part 3)."""


class UsageMetricsState(BillingState):
    """Vars: ``metrics`` (all of the customer's meters, in the API's order; a
    :class:`~billing_ui.states.split_map.SplitList` over the buckets ``meters_0`` ...
    ``meters_3``: read and assign it as one list), ``metrics_by_key``, ``status`` (see
    :mod:`billing_ui.states.status`), ``is_loading`` (no data yet), ``is_fetching`` (a refresh
    in flight), ``error`` (last failure; the last good data stays, ``status`` "stale"),
    ``updated_at`` / ``data_updated_at`` (when the data shown was fetched; a refresh that finds
    the same data does not move them, so it sends nothing — they catch up to the last
    successful fetch when the status leaves ``success``, the one time the UI shows them)."""

    meters_0: dict[str, MetricView] = {}  # noqa: RUF012 - Reflex vars are declared this way
    meters_1: dict[str, MetricView] = {}  # noqa: RUF012
    meters_2: dict[str, MetricView] = {}  # noqa: RUF012
    meters_3: dict[str, MetricView] = {}  # noqa: RUF012
    metrics_by_key = METERS
    """The meters by feature key, e.g. ``metrics_by_key["api_calls"].remaining`` (the browser
    merges the buckets; on the backend a merged copy)."""
    metrics = SplitList(METERS, key=lambda m: m.feature_key)
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
        token = self.router.session.client_token
        memo = internals.TabMemo()  # this loop's last read of its tab (Redis: one MGET a tick)
        customer = ""  # the customer the tab showed at the last tick
        with polling_tab():  # billing_ui_polling_tabs, down again however the loop ends
            ok = await self._refresh(force=False)
            while True:
                failures = 0 if ok else failures + 1
                await asyncio.sleep(retry_delay(failures, interval))
                # The tab as stored, read without its lock: a tick that finds nothing new
                # takes no lock and writes nothing (issue 10: on Redis each `async with self`
                # is a lock, a load and a fenced save, several round trips). On Redis the
                # read of the meters rides with it (one round trip for both).
                async with rt.reading_ahead(customer, interval) as ride:
                    shown = await internals.read_tab_state(UsageMetricsState, memo, ride)
                    superseded = shown._poll_generation != generation
                    if superseded or not await rt.is_tab_connected(self):
                        live_meters().unfollow(token)
                        return
                    owner = _owner_of(shown)
                    customer = owner._customer if owner is not None else ""
                    ok = await self._refresh(force=False, shown=shown)

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

    async def _refresh(self, *, force: bool, shown: UsageMetricsState | None = None) -> bool:
        """One refresh; False when the billing API failed (the poll then retries sooner).

        ``shown``: the tab's state read without the lock (a poll tick). When it shows the
        signed-in customer's meters in ``success`` and the fetch brings the same meters, the
        refresh ends there: no lock, no write, no delta. Anything else (no data yet, an error
        shown, another customer, pending usage delivered, new data, entitlements due) goes
        through the lock as before."""
        settings = get_settings()
        ticket = None
        if shown is not None and not force and _settled(shown):
            ticket = await shown._begin_unlocked()
        if ticket is not None and shown is not None:
            pending_shown = {m.feature_key: m.pending for m in shown.metrics if m.pending}
        else:
            shown = None
            async with self:
                try:
                    ticket = await self._begin()
                except NoCustomerError as exc:
                    message = rt.message_for(exc)
                    self.status, self.error, self.is_loading = SIGNED_OUT, message, False
                    return True
                if shows_fetching(self.status, force=force):  # not on a background tick
                    self.is_fetching = True
                pending_shown = {m.feature_key: m.pending for m in self.metrics if m.pending}
        customer = ticket.customer
        pending = await rt.pending_usage(customer)
        if any(pending.get(key, 0.0) < was for key, was in pending_shown.items()):
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
        except BillingError as exc:
            return await self._failed(ticket, exc, pending)
        # (A track answered while this fetch was in flight patched the store with newer usage
        # than the fetch saw: the store then returns its entry, not the answer; QueryStore.fetch.)
        # Served from the cache while other requests find the API down: say so now, not when
        # this entry expires.
        outage = rt.outage_message() if entry.fetched_at < started else ""
        if entry.fetched_at >= started:
            rt.api_answered()  # fetched just now: queued tracks need not wait their backoff
        token = self.router.session.client_token
        if shown is not None and not force and not outage:
            ent = await shown.get_state(FeatureEntitlementsState)
            # The hard-limit flags the tab shows, not the entitlements entry's (one read less
            # per tick on Redis): a tab takes new flags with its own entitlements, when they
            # are due (or with any change of its meters), as its entitlements panel does.
            shown_hard = {m.feature_key for m in shown.metrics if m.hard_limit}
            if not _entitlements_due(ent) and (
                metric_views(entry.data, shown_hard, pending) == shown.metrics
            ):
                # Nothing the browser sees would change. The fetch time stays in the store's
                # entry (a failure later shows it, see _confirmed_by), not in the tab's state.
                await live_meters().follow(token, customer, entry.updated_at)
                return True
        try:
            hard = await _hard_limited_features(customer)
        except BillingError as exc:
            return await self._failed(ticket, exc, pending)
        views = metric_views(entry.data, hard, pending)
        async with self:
            await self._confirm(ticket)
            changed = views != self.metrics
            self.metrics = views  # only the buckets that change are assigned (SplitList)
            show_success(self, entry.updated_at, changed=changed, outage=outage)
            # Entitlements ride on this loop at their slower interval (no loop of their own).
            due = _entitlements_due(await self.get_state(FeatureEntitlementsState))
        # From now on this tab gets the customer's meters as soon as they change (live.py).
        await live_meters().follow(token, customer, entry.updated_at)
        if due:
            await FeatureEntitlementsState.refresh_for(self)
        return not outage

    async def _failed(self, ticket: Ticket, exc: BillingError, pending: dict[str, float]) -> bool:
        """Show a failed refresh (the last good meters stay, ``stale``); False."""
        last = await rt.queries.cache.peek((rt.METRICS, ticket.customer))
        async with self:
            await self._confirm(ticket)
            _confirmed_by(self, last, pending)
            show_failure(self, rt.message_for(exc), has_data=bool(self.metrics))
        return False


def _settled(shown: UsageMetricsState) -> bool:
    """The tab shows meters and nothing else: ``success``, nothing loading or in flight, no
    error (what a refresh that finds the same meters would leave as it is)."""
    return shown.status == SUCCESS and not (shown.error or shown.is_fetching or shown.is_loading)


def _entitlements_due(ent: FeatureEntitlementsState) -> bool:
    return (
        time.time() - ent._confirmed_at >= get_settings().entitlements_refresh_interval
        or ent.status in (STALE, ERROR)  # recovered: they retry with the meters
    )


def _confirmed_by(state: UsageMetricsState, last: Any, pending: dict[str, float]) -> None:
    """Before showing a failure: when the tab shows exactly the store's last good meters,
    they were confirmed when that entry was fetched (a quiet tick does not write it down)."""
    if last is None or not state.metrics:
        return
    hard = {m.feature_key for m in state.metrics if m.hard_limit}
    if metric_views(last.data, hard, pending) == state.metrics:
        state._confirmed_at = max(state._confirmed_at, last.updated_at)


def _derive(js_function: str) -> Var:  # type: ignore[type-arg]
    """A frontend var computed in the browser from ``metrics`` (public API: a JS function var
    called with the state var, which carries the state's var data along)."""
    return FunctionStringVar.create(js_function).call(UsageMetricsState.metrics)


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
