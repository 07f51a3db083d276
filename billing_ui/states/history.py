"""A feature's consumption over the current period, for ``usage_chart`` (an extension of the
BillingOS API: ``GET /v1/usage/history``; a hosted BillingOS answers it with an error, which the
chart shows instead of a graph).

Histories go through the shared query layer like the other queries
(:meth:`~billing_ui.core.queries.BillingQueries.usage_history`: one upstream request per
customer, feature and interval, however many tabs; a track of the feature invalidates it).
A chart registers its history with ``load(history_id)`` on mount; the page's
``on_load=UsageHistoryState.poll`` keeps every registered one fresh. A history is also
refetched early when its last cumulative total no longer matches the customer's metric (usage
recorded elsewhere, which the meters' refresh saw first), so the chart follows the meters.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import ClassVar, Final

from billing_ui.core.customer import NoCustomerError
from billing_ui.core.errors import BillingError, InvalidInputError
from billing_ui.core.models import UsageHistory, UsageMetric
from billing_ui.core.queries import HISTORY
from billing_ui.core.validation import check_feature_key
from billing_ui.settings import get_settings
from billing_ui.states import _runtime as rt
from billing_ui.states.base import BillingState, billing_event

BUCKETS: Final = ("day", "hour")
MAX_WATCHED: Final = 16
"""Features one tab may chart at once: ``load`` is public, so the list must be bounded."""


@dataclasses.dataclass
class HistoryPointView:
    label: str = ""
    at: str = ""
    quantity: float = 0.0
    cumulative: float = 0.0


@dataclasses.dataclass
class HistoryView:
    feature_key: str = ""
    bucket: str = "day"
    period_start: str = ""
    period_end: str = ""
    total: float = 0.0
    points: list[HistoryPointView] = dataclasses.field(default_factory=list)


def history_id(feature_key: str, bucket: str = "day") -> str:
    """The key of a chart's data in ``UsageHistoryState.histories``: the feature key for daily
    buckets, ``"key@hour"`` for hourly ones ('@' cannot occur in a feature key)."""
    return feature_key if bucket == "day" else f"{feature_key}@{bucket}"


def parse_history_id(value: object) -> tuple[str, str]:
    """``history_id`` reversed, validating both parts (the id comes from the browser)."""
    if not isinstance(value, str):
        raise InvalidInputError.single("history", "type", "must be a string")
    key, _, bucket = value.partition("@")
    bucket = bucket or "day"
    if bucket not in BUCKETS:
        raise InvalidInputError.single("bucket", "one_of", f"must be one of {', '.join(BUCKETS)}")
    return check_feature_key(key), bucket


def history_view(history: UsageHistory) -> HistoryView:
    fmt = "%H:%M" if history.bucket == "hour" else "%b %d"
    points = [
        HistoryPointView(
            label=p.at.strftime(fmt),
            at=p.at.isoformat(),
            quantity=p.quantity,
            cumulative=p.cumulative,
        )
        for p in history.points
    ]
    return HistoryView(
        feature_key=history.feature_key,
        bucket=history.bucket,
        period_start=history.period_start.isoformat(),
        period_end=history.period_end.isoformat() if history.period_end else "",
        total=points[-1].cumulative if points else 0.0,
        points=points,
    )


async def fetch_history(
    customer: str, feature_key: str, bucket: str, *, force: bool
) -> UsageHistory:
    """The history through the shared query layer (a track of the feature invalidates it);
    refetched early when forced or when it disagrees with the cached metric of the same
    feature (usage recorded elsewhere, seen by the meters' refresh first)."""
    key = (HISTORY, customer, feature_key, bucket)
    cached = await rt.queries.cache.peek(key)
    if force or (cached is not None and await _behind(cached.data, customer, feature_key)):
        await rt.queries.cache.invalidate(key)
    entry = await rt.queries.usage_history(
        customer,
        feature_key,
        bucket="hour" if bucket == "hour" else "day",
        stale_time=get_settings().refresh_interval * 0.9,
    )
    return entry.data


async def _behind(history: UsageHistory, customer: str, feature_key: str) -> bool:
    metrics = await rt.queries.cache.peek((rt.METRICS, customer))
    if metrics is None:
        return False
    metric: UsageMetric | None = next(
        (m for m in metrics.data if m.feature_key == feature_key), None
    )
    total = history.points[-1].cumulative if history.points else 0.0
    return metric is not None and abs(metric.consumed - total) > 1e-9


class UsageHistoryState(BillingState):
    """Vars: ``histories`` and ``errors`` by :func:`history_id` (the feature key for daily
    buckets), ``loading`` (ids without data yet), ``signed_out``."""

    histories: dict[str, HistoryView] = {}  # noqa: RUF012 - Reflex vars are declared this way
    errors: dict[str, str] = {}  # noqa: RUF012
    loading: list[str] = []  # noqa: RUF012
    signed_out: bool = False
    _watched: list[str] = []  # noqa: RUF012
    _poll_generation: int = 0
    _keep_on_customer_change: ClassVar[tuple[str, ...]] = ("_watched", "_poll_generation")

    @billing_event
    async def load(self, history: str) -> None:
        """Chart ``history`` (a :func:`history_id`; validated, as it comes from the browser)
        and fetch it now."""
        try:
            ident = history_id(*parse_history_id(history))
        except InvalidInputError:
            return
        async with self:
            if ident not in self._watched:
                if len(self._watched) >= MAX_WATCHED:
                    return
                self._watched = [*self._watched, ident]
        # ``loading`` is set by the refresh, once the id is known to be the customer's: a
        # load refused by the token bucket must not leave a browser-chosen id in a public var.
        await self._refresh([ident], force=False)

    @billing_event
    async def refetch(self, history: str) -> None:
        try:
            ident = history_id(*parse_history_id(history))
        except InvalidInputError:
            return
        await self._coalesced(f"history:{ident}", lambda: self._refresh([ident], force=True))

    @billing_event
    async def refetch_all(self) -> None:
        """Refetch every history this tab charts (the page's Retry)."""

        async def run() -> None:
            async with self:
                watched = list(self._watched)
            await self._refresh(watched, force=True)

        await self._coalesced("history:*", run)

    @billing_event
    async def poll(self) -> None:
        """Page ``on_load``: refresh every charted history each ``refresh_interval`` seconds
        while the tab is open (same lifecycle as ``UsageMetricsState.poll``)."""
        async with self:
            self._poll_generation += 1
            generation = self._poll_generation
        interval = get_settings().refresh_interval
        while True:
            await asyncio.sleep(interval)
            async with self:
                superseded = self._poll_generation != generation
                watched = list(self._watched)
            if superseded or not await rt.is_tab_connected(self):
                return
            await self._refresh(watched, force=False)

    async def _refresh(self, idents: list[str], *, force: bool) -> None:
        async with self:
            try:
                ticket = await self._begin()
            except NoCustomerError:
                self.signed_out = True
                return
            self.signed_out = False
        try:
            known = await rt.known_features(ticket.customer)
        except BillingError:
            known = frozenset(parse_history_id(i)[0] for i in idents)  # decided on next refresh
        async with self:
            await self._confirm(ticket)
            # A feature the customer does not have is not charted, stored or fetched.
            self._watched = [i for i in self._watched if parse_history_id(i)[0] in known]
            idents = [i for i in idents if i in self._watched]
            self.loading = [
                i for i in self._watched if i not in self.histories and i not in self.errors
            ]
        for ident in idents:
            try:
                history = await fetch_history(
                    ticket.customer, *parse_history_id(ident), force=force
                )
            except BillingError as exc:
                async with self:
                    await self._confirm(ticket)
                    self.errors = {**self.errors, ident: rt.message_for(exc)}
                    self.loading = [k for k in self.loading if k != ident]
                continue
            async with self:
                await self._confirm(ticket)
                self.histories = {**self.histories, ident: history_view(history)}
                self.errors = {k: v for k, v in self.errors.items() if k != ident}
                self.loading = [k for k in self.loading if k != ident]
