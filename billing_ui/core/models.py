"""The schema of the billing API, on both sides of the wire (pydantic v2).

Field names follow BillingOS (and the React SDK's types), so the same models parse a hosted
BillingOS and the embedded local server. Request bodies forbid unknown fields (BillingOS
rejects them); responses ignore unknown fields so that a newer server does not break an older
client. Validation happens here, at the edge; code inside the package trusts these objects.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_serializer,
    model_serializer,
    model_validator,
)

from billing_ui.core import validation as V

CheckReason = Literal["no_active_subscription", "subscription_not_active", "quota_exceeded"]
"""Why a feature check denied access."""

Bucket = Literal["hour", "day"]
"""The width of a usage-history bucket."""

FeatureType = Literal["boolean_flag", "usage_quota", "numeric_limit"]
"""BillingOS's feature types."""

SimpleFeatureType = Literal["boolean", "metered", "static"]
"""The same, in the words a UI uses: a flag, a metered quota, a fixed numeric limit."""

_SIMPLE_TYPE: dict[str, SimpleFeatureType] = {
    "boolean_flag": "boolean",
    "usage_quota": "metered",
    "numeric_limit": "static",
}
ACTIVE_STATUSES = frozenset({"active", "trialing"})
"""Subscription statuses that grant their features."""

FeatureKey = Annotated[str, BeforeValidator(V.check_feature_key)]
CustomerId = Annotated[str, BeforeValidator(V.check_customer_id)]
Quantity = Annotated[float, BeforeValidator(V.check_quantity)]
IdempotencyKey = Annotated[str | None, BeforeValidator(V.check_idempotency_key)]
Metadata = Annotated[dict[str, Any] | None, BeforeValidator(V.check_metadata)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


# --- requests ---------------------------------------------------------------------------
class TrackUsageRequest(_Request):
    """``POST /v1/usage/track`` (secret key): usage of one feature by one customer."""

    customer_id: CustomerId
    feature_key: FeatureKey
    quantity: Quantity
    idempotency_key: IdempotencyKey = None
    metadata: Metadata = None


class SessionTrackUsageRequest(_Request):
    """``POST /v1/features/track-usage`` (session token): the customer comes from the token.

    ``timestamp`` is accepted for compatibility and ignored, as BillingOS does.
    """

    feature_key: FeatureKey
    quantity: Quantity
    idempotency_key: IdempotencyKey = None
    metadata: Metadata = None
    timestamp: str | None = None


SubscriptionStatus = Literal[
    "active",
    "trialing",
    "past_due",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "unpaid",
    "paused",
]
"""Stripe's (and BillingOS's) subscription statuses."""

ProductKey = Annotated[str, BeforeValidator(V.check_feature_key)]
"""A product (plan) key follows the feature-key rule."""


class UpsertCustomerRequest(_Request):
    """``PUT /v1/customers/{external_user_id}`` (a billing_ui extension, local server only):
    create a customer or re-subscribe it to these products."""

    products: Annotated[list[ProductKey], Field(max_length=20)]
    status: SubscriptionStatus | None = None
    """``None`` leaves it to the server (``active``)."""


class TrackUsageBatchRequest(_Request):
    """``POST /v1/usage/track-batch`` (a billing_ui extension): up to 1,000 events, each with
    its own idempotency key, so a retried batch never counts an event twice."""

    events: Annotated[list[TrackUsageRequest], Field(min_length=1, max_length=1000)]


class CreateSessionTokenRequest(_Request):
    """``POST /v1/session-tokens`` (secret key), in BillingOS's camelCase."""

    externalUserId: CustomerId
    externalOrganizationId: str | None = None
    allowedOperations: list[str] | None = None
    expiresIn: Annotated[int, Field(ge=60, le=86400, strict=True)] = 3600
    metadata: Metadata = None


# --- responses --------------------------------------------------------------------------
class _MaybeUnlimited(_Response):
    """A response whose ``unlimited`` flag is read from the wire's convention for it (each
    endpoint has its own, as BillingOS does) and is never sent back."""

    unlimited: Annotated[bool, Field(exclude=True)] = False

    @model_validator(mode="before")
    @classmethod
    def _read_unlimited(cls, data: Any) -> Any:
        if isinstance(data, dict) and (data.get("unlimited") or "unlimited" not in data):
            fields = cls._when_unlimited(data)
            if fields is not None:
                return {**data, **fields, "unlimited": True}
        return data

    @classmethod
    def _when_unlimited(cls, data: dict[str, Any]) -> dict[str, Any] | None:
        """The fields as they are for an unlimited feature, if ``data`` describes one."""
        raise NotImplementedError


class UsageSnapshot(_MaybeUnlimited):
    """A feature's usage in the current period, as returned after a track.

    An unlimited quota has ``limit_units`` and ``remaining_units`` ``null`` on the wire (the
    quota's stored limit, as BillingOS sends it); ``unlimited`` says so on the Python side.
    ``period_end`` is ``None`` for a quota that never resets.
    """

    consumed_units: float
    limit_units: float | None = None
    remaining_units: float | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None

    @classmethod
    def _when_unlimited(cls, data: dict[str, Any]) -> dict[str, Any] | None:
        return {"remaining_units": None} if data.get("limit_units") is None else None


class TrackUsageResult(_Response):
    """What a track returns. ``duplicate`` is true when the idempotency key had been seen:
    the original event's result is returned and nothing was counted again."""

    success: bool = True
    feature_key: str
    quantity: float
    recorded_at: datetime
    usage: UsageSnapshot | None = None
    duplicate: bool = False
    idempotency_key: str | None = None


class BatchItemError(_Response):
    code: str
    message: str


class BatchItemResult(_Response):
    """One event of a batch: ``result`` when it was recorded (or replayed), else ``error``."""

    index: int
    result: TrackUsageResult | None = None
    error: BatchItemError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class TrackUsageBatchResult(_Response):
    results: list[BatchItemResult]


class UsageMetric(_MaybeUnlimited):
    """One feature's usage in its current period (``useUsageMetrics``).

    ``limit`` and ``remaining`` are ``None`` for an unlimited feature. BillingOS reports an
    unlimited quota as ``limit: 0`` (and ``remaining: 0``): that is read as unlimited, and
    written back the same way; ``unlimited`` is never sent. ``period_end`` and
    ``resets_in_days`` are ``None`` for a quota that never resets (BillingOS has no such quota:
    every usage record ends with its subscription's period).
    """

    feature_key: str
    feature_title: str = ""
    product_name: str = ""
    consumed: float
    limit: float | None
    remaining: float | None
    percentage_used: float
    period_start: datetime
    period_end: datetime | None
    resets_in_days: int | None

    @classmethod
    def _when_unlimited(cls, data: dict[str, Any]) -> dict[str, Any] | None:
        if data.get("unlimited") or data.get("limit") in (0, None):
            return {"limit": None, "remaining": None}
        return None

    @field_serializer("limit", "remaining")
    def _write_unlimited(self, value: float | None) -> float:
        return 0.0 if value is None else value

    @property
    def is_near_limit(self) -> bool:
        """At least 80 % used: when the SDK's ``UpgradeNudge`` appears."""
        return not self.unlimited and self.percentage_used >= 80

    @property
    def is_over_limit(self) -> bool:
        return not self.unlimited and self.percentage_used >= 100


def percentage_used(consumed: float, limit: float | None) -> float:
    """``consumed / limit * 100`` as a whole number, halves up (BillingOS's ``Math.round``);
    0 without a limit. May exceed 100 for a soft limit."""
    return float(math.floor(consumed / limit * 100 + 0.5)) if limit else 0.0


class UsageMetricsResponse(_Response):
    metrics: list[UsageMetric]
    customer_id: str | None = None
    external_user_id: str | None = None


class FeatureEntitlement(_Response):
    """A feature the customer's subscriptions grant (``useFeatureEntitlements``)."""

    feature_key: str
    feature_title: str = ""
    feature_type: FeatureType
    granted_at: datetime | None = None
    product_name: str = ""
    subscription_status: str = "active"
    properties: dict[str, Any] | None = None

    @property
    def type(self) -> SimpleFeatureType:
        return _SIMPLE_TYPE[self.feature_type]

    @property
    def enabled(self) -> bool:
        return self.subscription_status in ACTIVE_STATUSES

    @property
    def limit(self) -> float | None:
        """The quota or numeric limit from ``properties``; ``None`` for flags and unlimited."""
        value = (self.properties or {}).get("limit")
        return float(value) if isinstance(value, int | float) and value > 0 else None

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.properties or {})


class EntitlementsResponse(_Response):
    entitlements: list[FeatureEntitlement]
    customer_id: str | None = None
    external_user_id: str | None = None


class FeatureCheckMetadata(_Response):
    """What BillingOS knows beyond yes/no; a key it does not know is left out, not ``null``."""

    remaining: float | None = None
    resets_at: datetime | None = None
    type: str | None = None

    @model_serializer(mode="wrap")
    def _leave_out_unknown(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class FeatureCheck(_MaybeUnlimited):
    """``useFeature`` / ``useFeatureGate``: may the customer use the feature now, and why not.

    An unlimited quota has ``limit: 0`` on the wire (as BillingOS's check sends a quota without
    a stored limit); it is read as ``limit=None, unlimited=True``. ``reason`` is also
    ``"Customer not found"`` for a session token whose customer does not exist (yet).
    """

    feature_key: str
    has_access: bool
    reason: CheckReason | str | None = None  # a str: a reason newer than this client
    limit: float | None = None
    usage: float | None = None
    metadata: FeatureCheckMetadata | None = None

    @classmethod
    def _when_unlimited(cls, data: dict[str, Any]) -> dict[str, Any] | None:
        meta = data.get("metadata")
        quota = isinstance(meta, dict) and meta.get("type") == "usage_quota"
        return (
            {"limit": None} if data.get("unlimited") or (quota and data.get("limit") == 0) else None
        )

    @field_serializer("limit")
    def _write_unlimited(self, value: float | None) -> float | None:
        return 0.0 if self.unlimited else value


class SessionToken(_Response):
    session_token: Annotated[str, Field(alias="sessionToken")]
    expires_at: Annotated[datetime, Field(alias="expiresAt")]


class UsageHistoryPoint(_Response):
    """Usage in one bucket (hour or day) of the current period; ``cumulative`` is the running
    total since ``period_start``, so a chart needs no client-side summing."""

    at: datetime
    """Start of the bucket (UTC)."""
    quantity: float
    """Usage recorded within the bucket."""
    cumulative: float
    """Usage in the period up to the end of the bucket."""


class UsageHistory(_Response):
    """``GET /v1/usage/history`` (a billing_ui extension): a feature's usage over the current
    period in buckets, for a usage chart."""

    feature_key: str
    period_start: datetime
    period_end: datetime | None
    bucket: Bucket
    points: list[UsageHistoryPoint]


class Customer(_Response):
    """What ``PUT /v1/customers/{id}`` (local server) answers: the customer and its products."""

    customer_id: str
    products: list[str]
    status: SubscriptionStatus | str | None = None  # a str: a status newer than this client
    """The subscriptions' status; ``None`` when the customer has no product."""


class Success(_Response):
    """What a call with nothing else to say answers (revoking a session token)."""

    success: bool = True


class HealthStatus(_Response):
    """``GET /health`` (a billing_ui extension)."""

    status: str
    database: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class ErrorBody(_Response):
    code: str
    message: str
    details: dict[str, Any] | None = None
    requestId: str
    timestamp: datetime


class ErrorEnvelope(_Response):
    """BillingOS's error envelope, on every error status (the client reads it in
    :func:`billing_ui.core.errors.error_from_response`)."""

    error: ErrorBody
    statusCode: int
