"""billing_ui.core: the framework-agnostic part of billing_ui — the billing API clients, the
wire models, the typed errors and the input rules. No UI framework is imported here.

::

    from billing_ui.core import AsyncBillingClient, QuotaExceededError

    async with AsyncBillingClient() as billing:
        try:
            await billing.track_usage(customer_id="user_1", feature_key="api_calls", quantity=1)
        except QuotaExceededError:
            ...
"""

from billing_ui.core.backends import Backend, BillingOSBackend
from billing_ui.core.client import (
    AsyncBillingClient,
    AsyncCustomerView,
    BillingClient,
    CustomerView,
)
from billing_ui.core.errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BillingError,
    ConflictError,
    CustomerNotFoundError,
    FieldError,
    InternalServerError,
    InvalidInputError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PoolExhaustedError,
    QuotaExceededError,
    RateLimitError,
    RemoteFetchError,
    UnprocessableEntityError,
)
from billing_ui.core.models import (
    BatchItemError,
    BatchItemResult,
    Customer,
    FeatureCheck,
    FeatureCheckMetadata,
    FeatureEntitlement,
    HealthStatus,
    SessionToken,
    TrackUsageRequest,
    TrackUsageResult,
    UsageHistory,
    UsageHistoryPoint,
    UsageMetric,
    UsageSnapshot,
)
from billing_ui.core.outbox import Outbox, OutboxFullError, OutboxStats, QueuedTrack
from billing_ui.core.outbox_sqlite import SQLiteOutboxStore
from billing_ui.core.track_rules import TrackRule
from billing_ui.core.tracker import AsyncUsageTracker, UsageTracker

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncBillingClient",
    "AsyncCustomerView",
    "AsyncUsageTracker",
    "AuthenticationError",
    "Backend",
    "BadRequestError",
    "BatchItemError",
    "BatchItemResult",
    "BillingClient",
    "BillingError",
    "BillingOSBackend",
    "ConflictError",
    "Customer",
    "CustomerNotFoundError",
    "CustomerView",
    "FeatureCheck",
    "FeatureCheckMetadata",
    "FeatureEntitlement",
    "FieldError",
    "HealthStatus",
    "InternalServerError",
    "InvalidInputError",
    "InvalidRequestError",
    "NotFoundError",
    "Outbox",
    "OutboxFullError",
    "OutboxStats",
    "PermissionDeniedError",
    "PoolExhaustedError",
    "QueuedTrack",
    "QuotaExceededError",
    "RateLimitError",
    "RemoteFetchError",
    "SQLiteOutboxStore",
    "SessionToken",
    "TrackRule",
    "TrackUsageRequest",
    "TrackUsageResult",
    "UnprocessableEntityError",
    "UsageHistory",
    "UsageHistoryPoint",
    "UsageMetric",
    "UsageSnapshot",
    "UsageTracker",
]
