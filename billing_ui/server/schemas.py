"""Wire models for the local server's extension endpoints (not part of BillingOS).

The BillingOS shapes live in :mod:`billing_ui.core.models`, shared with the client; these are
the few the client does not need for BillingOS compatibility: customer provisioning, usage
history, health and revocation answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from billing_ui.core import validation as V
from billing_ui.server.plans import SubscriptionStatus

ProductKey = Annotated[str, BeforeValidator(V.check_feature_key)]
Bucket = Literal["hour", "day"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class UpsertCustomerRequest(_Request):
    """``PUT /v1/customers/{external_user_id}``: the customer's complete set of products."""

    products: Annotated[list[ProductKey], Field(max_length=20)]
    status: SubscriptionStatus = "active"


class CustomerResponse(_Response):
    customer_id: str
    products: list[str]
    status: SubscriptionStatus | None = None
    """The subscriptions' status; ``None`` when the customer has no product."""


class HistoryPoint(_Response):
    at: datetime
    """Start of the bucket (UTC)."""
    quantity: float
    """Usage recorded within the bucket."""
    cumulative: float
    """Usage in the period up to the end of the bucket."""


class UsageHistory(_Response):
    feature_key: str
    period_start: datetime
    period_end: datetime | None
    """``None`` for a quota that never resets."""
    bucket: Bucket
    points: list[HistoryPoint]


class Health(_Response):
    status: Literal["ok"]
    database: Literal["ok"]


class Success(_Response):
    success: bool = True


class ErrorBody(_Response):
    code: str
    message: str
    details: dict[str, Any] | None = None
    requestId: str
    timestamp: datetime


class ErrorEnvelope(_Response):
    """BillingOS's error envelope (documented in OpenAPI for every error status)."""

    error: ErrorBody
    statusCode: int
