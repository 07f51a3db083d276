"""What the browser sees: plain dataclasses built from the core models.

They carry only display data (never the customer's id, never a key) and are what state vars
hold, so components bind to typed fields (``metric.remaining``) instead of dict lookups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from typing import Literal

from billing_ui.core import _constants as C
from billing_ui.core.models import (
    FeatureCheck,
    FeatureEntitlement,
    TrackUsageResult,
    UsageMetric,
    percentage_used,
)

Level = Literal["normal", "near", "over", "unlimited"]


@dataclasses.dataclass
class MetricView:
    """One meter. ``limit``/``remaining`` are 0 when ``unlimited``; ``level`` picks the colour;
    ``blocked`` is true when a hard limit has been reached (tracking more is refused)."""

    feature_key: str = ""
    feature_title: str = ""
    product_name: str = ""
    consumed: float = 0.0
    limit: float = 0.0
    remaining: float = 0.0
    percentage_used: float = 0.0
    bar_percent: float = 0.0
    period_start: str = ""
    period_end: str = ""
    resets_in_days: int = 0
    unlimited: bool = False
    hard_limit: bool = False
    blocked: bool = False
    level: str = "normal"
    pending: float = 0.0
    """Usage queued in the outbox, not yet delivered: already in ``consumed`` (the meter
    moves at once), and shown as "+N pending" until the billing API has it."""


@dataclasses.dataclass
class EntitlementView:
    feature_key: str = ""
    feature_title: str = ""
    product_name: str = ""
    type: str = "boolean"
    enabled: bool = False
    limit: float = 0.0
    has_limit: bool = False


@dataclasses.dataclass
class CheckView:
    feature_key: str = ""
    has_access: bool = False
    reason: str = ""
    usage: float = 0.0
    limit: float = 0.0
    remaining: float = 0.0


@dataclasses.dataclass
class TrackResultView:
    feature_key: str = ""
    quantity: float = 0.0
    recorded_at: str = ""
    duplicate: bool = False
    consumed: float = 0.0


def level_of(metric: UsageMetric) -> Level:
    if metric.unlimited:
        return "unlimited"
    if metric.is_over_limit:
        return "over"
    return "near" if metric.is_near_limit else "normal"


def metric_views(
    metrics: Iterable[UsageMetric], hard: Collection[str], pending: Mapping[str, float]
) -> list[MetricView]:
    """The meters of one customer: ``hard`` the hard-limited features, ``pending`` the queued
    quantity per feature (:meth:`~billing_ui.core.outbox.Outbox.pending_for`)."""
    return [
        metric_view(m, hard_limit=m.feature_key in hard, pending=pending.get(m.feature_key, 0.0))
        for m in metrics
    ]


def with_pending(metric: UsageMetric, pending: float) -> UsageMetric:
    """``metric`` as it will be once ``pending`` more is delivered (the optimistic meter)."""
    consumed = metric.consumed + pending
    if metric.unlimited or metric.limit is None:
        return metric.model_copy(update={"consumed": consumed})
    return metric.model_copy(
        update={
            "consumed": consumed,
            "remaining": max(metric.limit - consumed, 0.0),
            "percentage_used": percentage_used(consumed, metric.limit),
        }
    )


def metric_view(
    metric: UsageMetric, *, hard_limit: bool = False, pending: float = 0.0
) -> MetricView:
    if pending:
        metric = with_pending(metric, pending)
    remaining = metric.remaining or 0.0
    return MetricView(
        feature_key=metric.feature_key,
        feature_title=metric.feature_title or metric.feature_key,
        product_name=metric.product_name,
        consumed=metric.consumed,
        limit=metric.limit or 0.0,
        remaining=remaining,
        percentage_used=metric.percentage_used,
        bar_percent=0.0 if metric.unlimited else min(metric.percentage_used, 100.0),
        period_start=metric.period_start.isoformat(),
        period_end=metric.period_end.isoformat() if metric.period_end else "",
        resets_in_days=(
            C.NEVER_RESETS_DAYS if metric.resets_in_days is None else metric.resets_in_days
        ),
        unlimited=metric.unlimited,
        hard_limit=hard_limit,
        blocked=hard_limit and not metric.unlimited and remaining <= 0,
        level=level_of(metric),
        pending=pending,
    )


def entitlement_view(ent: FeatureEntitlement) -> EntitlementView:
    return EntitlementView(
        feature_key=ent.feature_key,
        feature_title=ent.feature_title or ent.feature_key,
        product_name=ent.product_name,
        type=ent.type,
        enabled=ent.enabled,
        limit=ent.limit or 0.0,
        has_limit=ent.limit is not None,
    )


def check_view(check: FeatureCheck) -> CheckView:
    remaining = check.metadata.remaining if check.metadata else None
    return CheckView(
        feature_key=check.feature_key,
        has_access=check.has_access,
        reason=check.reason or "",
        usage=check.usage or 0.0,
        limit=check.limit or 0.0,
        # The SDK reads `remaining` as 0 when usage is 0; derive it from limit - usage instead.
        remaining=remaining
        if remaining is not None
        else max((check.limit or 0.0) - (check.usage or 0.0), 0.0),
    )


def track_result_view(result: TrackUsageResult) -> TrackResultView:
    return TrackResultView(
        feature_key=result.feature_key,
        quantity=result.quantity,
        recorded_at=result.recorded_at.isoformat(),
        duplicate=result.duplicate,
        consumed=result.usage.consumed_units if result.usage else 0.0,
    )
