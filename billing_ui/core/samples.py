"""Usage history from the meters themselves: the consumed values the metrics queries fetch
anyway, kept as samples, so a usage chart works against any BillingOS.

Why: BillingOS has no history endpoint (only the local server has ``/v1/usage/history``), but
every open tab already refreshes its customer's metrics each interval, and every track returns
the new usage. Each of those answers is one sample of the running total ``consumed`` at a moment.
Kept per customer and feature, they are the chart; the local server's history endpoint, when it
exists, only back-fills what happened before the samples began (:func:`merge`).

The samples live in the query store (:class:`~billing_ui.core.cache.QueryStore`) under
``(SAMPLES, customer)``: every tab of the customer shares them, in this process
(``MemoryQueryStore``) or across workers (``RedisQueryStore``, which reads them back as
:class:`UsageSamples`). The store bounds the total (its LRU and ``gc_time``: a customer nobody
watches is forgotten); here each series is bounded to one point per hour
(:data:`MAX_POINTS`) and each customer to :data:`MAX_FEATURES` series.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from pydantic import BaseModel, Field

from billing_ui.core.models import Bucket, UsageHistory, UsageMetric

SAMPLES: Final = "usage-samples"
"""The first part of a samples key in the query store: ``(SAMPLES, customer)``."""
MAX_POINTS: Final = 800
"""Points kept per feature: one per hour over a 31-day period is 744."""
MAX_FEATURES: Final = 64
"""Features kept per customer (a customer's metrics come from the billing API)."""
MAX_BUCKETS: Final = {"hour": 48, "day": 62}
"""At most this many buckets reach a chart (a never-resetting feature's period is unbounded)."""
SPAN: Final = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


class UsageSeries(BaseModel):
    """One feature's samples in its current period: ``points`` are ``(epoch seconds, consumed)``
    in time order, at most one per hour (a later sample in the same hour replaces the earlier:
    a bucket keeps its last value)."""

    period_start: datetime
    points: list[tuple[float, float]] = Field(default_factory=list)


class UsageSamples(BaseModel):
    """A customer's series, by feature key."""

    series: dict[str, UsageSeries] = Field(default_factory=dict)


def record(samples: UsageSamples, metrics: Iterable[UsageMetric], at: float) -> UsageSamples:
    """``samples`` with one sample of each metric at ``at`` (epoch seconds). Returns the same
    object when nothing changed (same value: the chart carries the last one forward), so a
    caller can skip the write. A new period starts a new series; a value lower than the last in
    the same period is a late answer and is ignored (usage only grows within a period)."""
    series = dict(samples.series)
    changed = False
    for metric in metrics:
        old = series.get(metric.feature_key)
        value = metric.consumed
        if old is None or metric.period_start > old.period_start:
            if old is None and len(series) >= MAX_FEATURES:
                continue
            series[metric.feature_key] = UsageSeries(
                period_start=metric.period_start, points=[(at, value)]
            )
            changed = True
            continue
        if metric.period_start < old.period_start or not old.points:
            continue  # an answer from a previous period, late
        last_at, last_value = old.points[-1]
        if value <= last_value:
            continue
        points = list(old.points)
        if math.floor(last_at / 3600) == math.floor(at / 3600):
            points[-1] = (max(at, last_at), value)
        else:
            points.append((at, value))
        series[metric.feature_key] = UsageSeries(
            period_start=old.period_start, points=points[-MAX_POINTS:]
        )
        changed = True
    return UsageSamples(series=series) if changed else samples


def bucket_floor(moment: datetime, bucket: Bucket) -> datetime:
    """The start (UTC) of the bucket holding ``moment``: the hour, or the day."""
    moment = moment.astimezone(UTC)
    if bucket == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def merge(
    metric: UsageMetric,
    series: UsageSeries | None,
    backfill: UsageHistory | None,
    bucket: Bucket,
    now: datetime,
) -> tuple[datetime, list[float]]:
    """The chart of one feature: the start of its first bucket and the running total at the end
    of each bucket up to ``now``'s (the last one is the metric's ``consumed``).

    Per bucket, the largest total known from the back-fill (the history endpoint: complete, but
    fetched less often) and the samples (recent); between known buckets the total is carried
    forward. Buckets before anything is known are left out, not drawn as zero: with no back-fill
    the chart starts at the first sample."""
    known: dict[datetime, float] = {}
    period = metric.period_start
    if backfill is not None and backfill.period_start == period:
        for point in backfill.points:
            at = bucket_floor(point.at, bucket)
            known[at] = max(known.get(at, 0.0), point.cumulative)
    if series is not None and series.period_start == period:
        for at_s, value in series.points:
            at = bucket_floor(datetime.fromtimestamp(at_s, UTC), bucket)
            known[at] = max(known.get(at, 0.0), value)
    last = bucket_floor(now, bucket)
    known[last] = max(known.get(last, 0.0), metric.consumed)
    span = SPAN[bucket]
    first = max(min(known), bucket_floor(period, bucket), last - span * (MAX_BUCKETS[bucket] - 1))
    values: list[float] = []
    running = max((v for at, v in known.items() if at < first), default=0.0)
    at = first
    while at <= last:
        running = max(running, known.get(at, running))
        values.append(running)
        at += span
    return first, values


def series_of(samples: UsageSamples | None, feature_key: str) -> UsageSeries | None:
    return samples.series.get(feature_key) if samples is not None else None


def metric_of(metrics: Sequence[UsageMetric], feature_key: str) -> UsageMetric | None:
    return next((m for m in metrics if m.feature_key == feature_key), None)
