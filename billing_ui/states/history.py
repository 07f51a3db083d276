"""A feature's consumption over the current period, for ``usage_chart``, against any BillingOS.

The points are the usage samples the app keeps from the meters' own fetches and tracks
(:mod:`billing_ui.core.samples`, shared by every tab of the customer through the query store);
the local server's history endpoint (an extension BillingOS does not have) only back-fills the
time before the samples began, and its absence is not an error. A chart registers its history
with ``load(history_id)`` on mount; the page's ``on_load=UsageHistoryState.poll`` keeps every
registered one fresh. The public shape is compact (:class:`HistoryView`): the samples stay in
the store, and the browser takes the last point and the total from the meter itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import ClassVar, Final

from billing_ui.core import samples
from billing_ui.core.customer import NoCustomerError
from billing_ui.core.errors import BillingError, InvalidInputError
from billing_ui.core.models import Bucket, UsageHistory, UsageMetric
from billing_ui.core.queries import HISTORY
from billing_ui.core.samples import UsageSeries
from billing_ui.core.validation import check_feature_key
from billing_ui.settings import get_settings
from billing_ui.states import _runtime as rt
from billing_ui.states.base import BillingState, Ticket, billing_event
from billing_ui.states.split_map import SplitMap

BUCKETS: Final = ("day", "hour")
MAX_WATCHED: Final = 16
"""Features one tab may chart at once: ``load`` is public, so the list must be bounded."""


@dataclasses.dataclass
class HistoryView:
    """A chart's data, compact (it crosses the wire on every refresh): ``start`` is the first
    bucket's start (epoch milliseconds, UTC), ``points`` the running total at the end of each
    bucket after it (a day or an hour apart). The browser draws the last value as the meter's
    ``consumed``, so the chart moves with the meter (``usage_chart``). ``partial``: the samples
    began after the period did, and no back-fill covers the start."""

    start: float = 0.0
    points: list[float] = dataclasses.field(default_factory=list)
    partial: bool = False


def history_id(feature_key: str, bucket: str = "day") -> str:
    """The key of a chart's data in ``UsageHistoryState.histories``: the feature key for daily
    buckets, ``"key@hour"`` for hourly ones ('@' cannot occur in a feature key)."""
    return feature_key if bucket == "day" else f"{feature_key}@{bucket}"


def parse_history_id(value: object) -> tuple[str, Bucket]:
    """``history_id`` reversed, validating both parts (the id comes from the browser)."""
    if not isinstance(value, str):
        raise InvalidInputError.single("history", "type", "must be a string")
    key, _, bucket = value.partition("@")
    if (bucket or "day") == "hour":
        return check_feature_key(key), "hour"
    if bucket not in ("", "day"):
        raise InvalidInputError.single("bucket", "one_of", f"must be one of {', '.join(BUCKETS)}")
    return check_feature_key(key), "day"


def chart_view(
    metric: UsageMetric,
    series: UsageSeries | None,
    backfill: UsageHistory | None,
    bucket: Bucket,
    now: datetime | None = None,
) -> HistoryView:
    """The chart of ``metric`` from its samples and the back-fill (:func:`samples.merge`)."""
    now = now or datetime.now(UTC)
    first, values = samples.merge(metric, series, backfill, bucket, now)
    span = samples.SPAN[bucket]
    last = samples.bucket_floor(now, bucket)
    earliest = max(
        samples.bucket_floor(metric.period_start, bucket),
        last - span * (samples.MAX_BUCKETS[bucket] - 1),
    )
    return HistoryView(
        start=first.timestamp() * 1000,
        points=[int(v) if float(v).is_integer() else v for v in values],
        partial=first > earliest,
    )


class NothingToChart(BillingError):
    """The customer has no metric for the feature (a feature without usage, or none yet)."""

    def __init__(self) -> None:
        super().__init__("No usage to chart for this feature.")


async def fetch_chart(
    customer: str,
    feature_key: str,
    bucket: Bucket,
    metrics: list[UsageMetric],
    *,
    force: bool = False,
) -> HistoryView:
    """The chart's data from the customer's ``metrics`` (the meters' entry, which the caller
    reads once for all its charts: its fetch also records the samples), its samples, and the
    history endpoint's back-fill where the server has one. Works against any BillingOS: a
    server without the endpoint gives no back-fill, and the chart starts at the first sample.
    ``force`` (a Retry) asks for the back-fill again."""
    settings = get_settings()
    if force:
        await rt.queries.cache.invalidate((HISTORY, customer, feature_key, bucket))
    metric = samples.metric_of(metrics, feature_key)
    if metric is None:
        raise NothingToChart()
    try:
        backfill = (
            await rt.queries.history_backfill(
                customer,
                feature_key,
                bucket=bucket,
                stale_time=settings.entitlements_refresh_interval,
            )
        ).data
    except BillingError:
        # The samples still chart; the back-fill is asked again next refresh. (An outage is
        # said by the metrics entry's own fetch or, served from the cache, by the caller.)
        backfill = None
    kept = await rt.queries.usage_samples(customer)
    return chart_view(metric, samples.series_of(kept, feature_key), backfill, bucket)


HISTORIES: Final = SplitMap[HistoryView]()
"""In bucket vars (:mod:`billing_ui.states.split_map`): refreshing one chart sends its bucket
(at most 2 of the 16 charts), not every chart of the tab. ``errors`` stays one var: at most 16
one-line messages, sent only when a chart fails, smaller than the empty buckets would add to
every hydrate."""


class UsageHistoryState(BillingState):
    """Vars: ``histories`` and ``errors`` by :func:`history_id` (the feature key for daily
    buckets; ``histories`` is a :class:`~billing_ui.states.split_map.SplitMap`, read as one map),
    ``loading`` (ids without data yet), ``signed_out``."""

    histories_0: dict[str, HistoryView] = {}  # noqa: RUF012
    histories_1: dict[str, HistoryView] = {}  # noqa: RUF012
    histories_2: dict[str, HistoryView] = {}  # noqa: RUF012
    histories_3: dict[str, HistoryView] = {}  # noqa: RUF012
    histories_4: dict[str, HistoryView] = {}  # noqa: RUF012
    histories_5: dict[str, HistoryView] = {}  # noqa: RUF012
    histories_6: dict[str, HistoryView] = {}  # noqa: RUF012
    histories_7: dict[str, HistoryView] = {}  # noqa: RUF012
    errors: dict[str, str] = {}  # noqa: RUF012
    histories = HISTORIES
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
        if not idents:
            return
        # One read of the meters' entry for every chart (the store's entry even when a track
        # patched newer usage in while this fetch was in flight: QueryStore.fetch). Its
        # failure reaches every chart in one update: a chart apiece used to retry it in turn,
        # and a page showed one chart "Not up to date" and the next one still plain.
        started = rt.queries.cache.clock()
        try:
            entry = await rt.queries.usage_metrics(
                ticket.customer, stale_time=get_settings().refresh_interval
            )
        except BillingError as exc:
            await self._show_errors(ticket, dict.fromkeys(idents, rt.message_for(exc)))
            return
        # Served from the cache while other requests find the API down: the charts are not up
        # to date, and say so now, as the meters do (metrics.py), not when the entry expires.
        outage = rt.outage_message() if entry.fetched_at < started else ""
        for ident in idents:
            try:
                view = await fetch_chart(
                    ticket.customer, *parse_history_id(ident), entry.data, force=force
                )
            except BillingError as exc:
                await self._show_errors(ticket, {ident: rt.message_for(exc)})
                continue
            async with self:
                await self._confirm(ticket)
                HISTORIES.put(self, ident, view)
                errors = {k: v for k, v in self.errors.items() if k != ident}
                self.errors = {**errors, ident: outage} if outage else errors
                self.loading = [k for k in self.loading if k != ident]

    async def _show_errors(self, ticket: Ticket, failed: dict[str, str]) -> None:
        """Show each chart's error (a chart with data keeps it: "Not up to date")."""
        async with self:
            await self._confirm(ticket)
            self.errors = {**self.errors, **failed}
            self.loading = [k for k in self.loading if k not in failed]
