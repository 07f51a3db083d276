"""The hooks' data layer without a framework: cached, deduplicated queries and a mutation that
invalidates them — TanStack Query's contract, for any Python web UI.

``useUsageMetrics``      -> :meth:`BillingQueries.usage_metrics`
``useFeatureEntitlements`` -> :meth:`BillingQueries.entitlements`
``useFeature``           -> :meth:`BillingQueries.feature_check`
``usage_chart``          -> :meth:`BillingQueries.usage_history` (an extension endpoint)
``useTrackUsage``        -> :meth:`BillingQueries.track_usage` (patches the cached metric with the
                            usage the server returned, then invalidates what the track affects)

Metrics are fetched whole per customer and filtered here: one cache entry then serves every
filtered view, and BillingOS's server-side filter is unreliable anyway.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

from billing_ui.core.batching import batcher_for
from billing_ui.core.cache import CacheEntry, MemoryQueryStore, QueryStore
from billing_ui.core.client import AsyncBillingClient
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
    HISTORY: UsageHistory,
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
        return await self._fetch(
            (METRICS, customer_id), lambda c: c.get_usage_metrics(customer_id), stale_time
        )

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

    async def usage_history(
        self,
        customer_id: str,
        feature_key: str,
        *,
        bucket: Literal["day", "hour"] = "day",
        stale_time: float = 30.0,
    ) -> CacheEntry[UsageHistory]:
        return await self._fetch(
            (HISTORY, customer_id, feature_key, bucket),
            lambda c: c.get_usage_history(customer_id, feature_key=feature_key, bucket=bucket),
            stale_time,
        )

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
        """Patch the cached metric from the returned usage, then invalidate (TanStack's
        ``onSuccess: invalidateQueries``): the next read of any view asks the server again."""
        if result.usage is not None:
            usage = result.usage
            await self.cache.set_data(
                (METRICS, customer_id),
                lambda metrics: [
                    apply_usage(m, usage) if m.feature_key == result.feature_key else m
                    for m in metrics
                ],
            )
        await self.cache.invalidate((METRICS, customer_id))
        await self.cache.invalidate((FEATURE_CHECK, customer_id, result.feature_key))
        await self.cache.invalidate((HISTORY, customer_id, result.feature_key))


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
