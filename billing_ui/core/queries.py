"""The hooks' data layer without a framework: cached, deduplicated queries and a mutation that
invalidates them — TanStack Query's contract, for any Python web UI.

``useUsageMetrics``      -> :meth:`BillingQueries.usage_metrics`
``useFeatureEntitlements`` -> :meth:`BillingQueries.entitlements`
``useFeature``           -> :meth:`BillingQueries.feature_check`
``usage_chart``          -> :meth:`BillingQueries.usage_samples` (the meters' own values, kept as
                            samples: any BillingOS) and :meth:`BillingQueries.history_backfill`
                            (the local server's history endpoint, when there is one)
``useTrackUsage``        -> :meth:`BillingQueries.track_usage` (patches the cached metric with the
                            usage the server returned, then invalidates what the track affects)

Metrics are fetched whole per customer and filtered here: one cache entry then serves every
filtered view, and BillingOS's server-side filter is unreliable anyway.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from billing_ui.core.batching import batcher_for
from billing_ui.core.cache import CacheEntry, MemoryQueryStore, QueryStore
from billing_ui.core.client import AsyncBillingClient
from billing_ui.core.errors import BadRequestError, NotFoundError
from billing_ui.core.models import (
    FeatureCheck,
    FeatureEntitlement,
    TrackUsageResult,
    UsageHistory,
    UsageMetric,
    UsageSnapshot,
    percentage_used,
)
from billing_ui.core.problems import ProblemLog
from billing_ui.core.samples import SAMPLES, UsageSamples, record

log = logging.getLogger("billing_ui.queries")
SAMPLES_KEEPALIVE = 60.0
"""Seconds after which unchanged samples are written again anyway: a store that expires
entries by the time of their last write (Redis, ``ttl``) keeps a watched customer's samples
however long its usage stays the same."""

T = TypeVar("T")
ENV_BATCH_TRACKS = "BILLING_UI_BATCH_TRACKS"

METRICS = "usage-metrics"
ENTITLEMENTS = "entitlements"
FEATURE_CHECK = "feature-check"
HISTORY = "usage-history"

QUERY_TYPES: dict[str, Any] = {
    METRICS: list[UsageMetric],
    ENTITLEMENTS: list[FeatureEntitlement],
    FEATURE_CHECK: FeatureCheck,
    HISTORY: UsageHistory | None,  # None: this server has no history for the feature
    SAMPLES: UsageSamples,
}
"""The data type of each query, by its key's first part: a store that keeps answers outside
this process (:class:`~billing_ui.core.redis_cache.RedisQueryStore`) reads them back as these."""


class BillingQueries:
    """Cached reads and invalidating writes over an :class:`AsyncBillingClient`.

    ``client`` is a client or a zero-argument callable returning one (so a framework can keep one
    client per event loop). ``cache`` is the :class:`~billing_ui.core.cache.QueryStore` holding
    the answers (in this process by default; Redis to share them between workers).
    Every upstream call's outcome goes to ``problems``, which logs a
    wrong key or an unreachable API once for the operator (see :mod:`billing_ui.core.problems`).
    """

    def __init__(
        self,
        client: AsyncBillingClient | Callable[[], AsyncBillingClient],
        cache: QueryStore | None = None,
        problems: ProblemLog | None = None,
        *,
        batch_tracks: bool | None = None,
    ) -> None:
        self._client = client
        if batch_tracks is None:  # default on; BILLING_UI_BATCH_TRACKS=0 for a measurement
            batch_tracks = os.environ.get(ENV_BATCH_TRACKS, "1").strip() not in ("0", "false")
        self.batch_tracks = batch_tracks
        """Concurrent tracks leave together as batch requests (:mod:`billing_ui.core.batching`;
        one by one at low load, or when the backend has no batch endpoint)."""
        self.cache: QueryStore = cache if cache is not None else MemoryQueryStore()
        self.problems = problems if problems is not None else ProblemLog()

    async def _watched(self, call: Awaitable[T]) -> T:
        """Await one upstream call, reporting its outcome to ``problems``."""
        try:
            result = await call
        except Exception as exc:
            self.problems.failed(exc)
            raise
        self.problems.succeeded()
        return result

    @property
    def client(self) -> AsyncBillingClient:
        return self._client if isinstance(self._client, AsyncBillingClient) else self._client()

    async def _fetch(
        self,
        key: tuple[str, ...],
        call: Callable[[AsyncBillingClient], Awaitable[T]],
        stale_time: float,
    ) -> CacheEntry[T]:
        """One cached query: ``call`` runs (watched) only when the entry is missing or stale."""
        client = self.client
        return await self.cache.fetch(
            key, lambda: self._watched(call(client)), stale_time=stale_time
        )

    async def usage_metrics(
        self, customer_id: str, *, stale_time: float = 30.0
    ) -> CacheEntry[list[UsageMetric]]:
        async def fetch(c: AsyncBillingClient) -> list[UsageMetric]:
            metrics = await c.get_usage_metrics(customer_id)
            await self.record_samples(customer_id, metrics)
            return metrics

        return await self._fetch((METRICS, customer_id), fetch, stale_time)

    async def usage_samples(self, customer_id: str) -> UsageSamples | None:
        """The customer's usage samples (:mod:`billing_ui.core.samples`), shared by its tabs."""
        entry = await self.cache.peek((SAMPLES, customer_id))
        return entry.data if entry is not None else None

    async def record_samples(
        self, customer_id: str, metrics: list[UsageMetric], at: float | None = None
    ) -> None:
        """Keep ``metrics``' consumed values as samples (after each upstream fetch of the
        metrics and each track). Never fails the caller: a chart point is not worth a meter."""
        at = time.time() if at is None else at
        key = (SAMPLES, customer_id)
        try:
            entry = await self.cache.peek(key)
            unchanged = entry is not None and record(entry.data, metrics, at) is entry.data
            if unchanged and entry is not None and at - entry.updated_at < SAMPLES_KEEPALIVE:
                return  # nothing new, and written recently: no write
            await self.cache.set_data(
                key, lambda samples: record(samples, metrics, at), create=UsageSamples
            )
        except Exception:
            log.exception("billing_ui: recording usage samples failed")

    async def entitlements(
        self, customer_id: str, *, stale_time: float = 300.0
    ) -> CacheEntry[list[FeatureEntitlement]]:
        return await self._fetch(
            (ENTITLEMENTS, customer_id), lambda c: c.get_entitlements(customer_id), stale_time
        )

    async def feature_check(
        self, customer_id: str, feature_key: str, *, stale_time: float = 30.0
    ) -> CacheEntry[FeatureCheck]:
        return await self._fetch(
            (FEATURE_CHECK, customer_id, feature_key),
            lambda c: c.check_feature(customer_id, feature_key=feature_key),
            stale_time,
        )

    async def history_backfill(
        self,
        customer_id: str,
        feature_key: str,
        *,
        bucket: Literal["day", "hour"] = "day",
        stale_time: float = 300.0,
    ) -> CacheEntry[UsageHistory | None]:
        """The history endpoint's answer (a local-server extension) to back-fill a chart, or
        None where there is none: a BillingOS without the endpoint (404), or a feature it has
        no history for (400). None is cached like an answer, so a server without the endpoint
        is asked once per ``stale_time``, not on every refresh."""

        async def fetch(c: AsyncBillingClient) -> UsageHistory | None:
            try:
                return await c.get_usage_history(
                    customer_id, feature_key=feature_key, bucket=bucket
                )
            except (NotFoundError, BadRequestError):
                return None

        return await self._fetch((HISTORY, customer_id, feature_key, bucket), fetch, stale_time)

    async def track_usage(
        self,
        customer_id: str,
        feature_key: str,
        quantity: float,
        *,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TrackUsageResult:
        result = await self._watched(
            (batcher_for(self.client) if self.batch_tracks else self.client).track_usage(
                customer_id=customer_id,
                feature_key=feature_key,
                quantity=quantity,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
        )
        await self.after_track(customer_id, result)
        return result

    async def after_track(self, customer_id: str, result: TrackUsageResult) -> None:
        """Patch the cached metric from the returned usage and keep it as a usage sample, then
        invalidate (TanStack's ``onSuccess: invalidateQueries``): the next read of any view asks
        the server again. The history back-fill is not invalidated: the samples carry the
        track, and the back-fill only covers what came before them."""
        if result.usage is not None:
            usage = result.usage
            await self.cache.set_data(
                (METRICS, customer_id),
                lambda metrics: [
                    apply_usage(m, usage) if m.feature_key == result.feature_key else m
                    for m in metrics
                ],
            )
            patched = await self.cache.peek((METRICS, customer_id))
            if patched is not None:
                await self.record_samples(customer_id, patched.data)
        await self.cache.invalidate((METRICS, customer_id))
        await self.cache.invalidate((FEATURE_CHECK, customer_id, result.feature_key))


def apply_usage(metric: UsageMetric, usage: UsageSnapshot) -> UsageMetric:
    """The metric as it is after a track, from the usage the server returned with it.

    Usage only grows within a period, so an answer showing less than the cache already has is
    an older one that arrived late (concurrent tracks answered out of order): it is ignored,
    unless it belongs to a newer period (the counter was reset).
    """
    newer_period = usage.period_start is not None and usage.period_start > metric.period_start
    if usage.consumed_units < metric.consumed and not newer_period:
        return metric
    if metric.unlimited:
        return metric.model_copy(update={"consumed": usage.consumed_units})
    limit = metric.limit or 0.0
    consumed = usage.consumed_units
    return metric.model_copy(
        update={
            "consumed": consumed,
            "remaining": max(limit - consumed, 0.0),
            "percentage_used": percentage_used(consumed, limit),
        }
    )
