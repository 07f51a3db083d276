"""Every path, query parameter and JSON field of the billing API, in one module.

The clients (:mod:`billing_ui.core.client`) never spell a URL or a wire field name. They ask a
*backend* for a :class:`Call` — the HTTP method, the path, the query, the JSON body, which
credential to present, and how to turn the response into a model — and then run it with their
shared retry, credential and error machinery. :class:`BillingOSBackend` is the BillingOS HTTP API
(``docs/api.md``), spoken identically by a hosted BillingOS and by the embedded local server.

Why the seam: a different usage-billing service (Autumn, OpenMeter, Lago, …) is one more class
with the methods of :class:`Backend`, mapping the same operations onto its own endpoints
(OpenMeter: ``POST /api/v1/events`` with a CloudEvents body for a track, ``GET
/api/v1/entitlements`` …) and its error envelope onto :mod:`billing_ui.core.errors`. Retries,
idempotency keys, session-token caching, validation and the sync/async split come for free.
Pass it as ``BillingClient(backend=...)``.

Operations a service lacks may raise :class:`NotImplementedError` from the builder; a hosted
BillingOS answers the **(ext)** endpoints with an error status, which the client raises.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from billing_ui.core import _constants as C
from billing_ui.core._retry import is_retryable_status
from billing_ui.core.errors import APIStatusError, error_from_response, is_stale_session
from billing_ui.core.models import (
    BatchItemResult,
    CreateSessionTokenRequest,
    Customer,
    EntitlementsResponse,
    FeatureCheck,
    FeatureEntitlement,
    HealthStatus,
    SessionToken,
    TrackUsageBatchResult,
    TrackUsageRequest,
    TrackUsageResult,
    UpsertCustomerRequest,
    UsageHistory,
    UsageMetric,
    UsageMetricsResponse,
)

__all__ = [
    "Backend",
    "BillingOSBackend",
    "Call",
    "Credential",
    "SessionTokenInfo",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

Credential = Literal["secret", "session", "none"]
"""Which credential a call presents: the secret key, a session token minted for the call's
customer (the client mints and caches it), or none."""


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One HTTP exchange, described without doing it: what to send and how to read the answer.

    ``parse`` receives only 2xx responses; error statuses go to
    :meth:`Backend.error_from_response`. ``customer_id`` says whose session token to present
    when ``credential == "session"``.
    """

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    json: Any = None
    credential: Credential = "secret"
    customer_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SessionTokenInfo:
    """What a client may read from a session token without verifying it (it cannot: the
    signature is keyed by the server's secret). Used to cache the token for its lifetime and to
    revoke it by ``jti``."""

    jti: str
    issued_at: float
    expires_at: float
    customer_id: str | None

    @property
    def lifetime(self) -> float:
        """Seconds between issue and expiry, by the server's own clock — so a client whose
        clock disagrees with the server's still caches the token for the right length."""
        return max(0.0, self.expires_at - self.issued_at)


class Backend(Protocol):
    """What the clients need from a billing service. See the module docstring."""

    max_batch_size: int
    """Events per batch request; the client splits bigger batches."""

    def default_headers(self) -> Mapping[str, str]: ...

    def auth_headers(self, credential: str) -> Mapping[str, str]: ...

    def track_usage(self, request: TrackUsageRequest) -> Call[TrackUsageResult]: ...

    def track_usage_batch(
        self, events: Sequence[TrackUsageRequest]
    ) -> Call[list[BatchItemResult]]: ...

    def usage_metrics(
        self, customer_id: str, feature_key: str | None
    ) -> Call[list[UsageMetric]]: ...

    def entitlements(self, customer_id: str) -> Call[list[FeatureEntitlement]]: ...

    def check_feature(self, customer_id: str, feature_key: str) -> Call[FeatureCheck]: ...

    def usage_history(
        self, customer_id: str, feature_key: str, bucket: str
    ) -> Call[UsageHistory]: ...

    def create_session_token(self, request: CreateSessionTokenRequest) -> Call[SessionToken]: ...

    def revoke_session_token(self, jti: str) -> Call[None]: ...

    def upsert_customer(
        self, customer_id: str, request: UpsertCustomerRequest
    ) -> Call[Customer]: ...

    def health(self) -> Call[HealthStatus]: ...

    def session_token_info(self, token: str) -> SessionTokenInfo | None:
        """Decode a session token's public claims, or ``None`` if it is not this service's."""
        ...

    def is_stale_session(self, error: APIStatusError) -> bool:
        """Whether ``error`` means "this session token expired or was revoked" — the one case
        in which the client mints a new token and tries once more."""
        ...

    def error_from_response(self, response: httpx.Response) -> APIStatusError: ...

    def is_retryable(self, error: APIStatusError) -> bool:
        """Whether another identical attempt may succeed (the status policy of
        :func:`~billing_ui.core._retry.is_retryable_status`, refined by the service's codes)."""
        ...


def _model(cls: type[M]) -> Callable[[httpx.Response], M]:
    """A parser reading the body straight into ``cls`` (pydantic parses the JSON in Rust)."""

    def parse(response: httpx.Response) -> M:
        return cls.model_validate_json(response.content)

    return parse


def _track_body(event: TrackUsageRequest) -> dict[str, Any]:
    # Built by hand rather than model_dump(): this runs once per tracked event, and only set
    # optional fields are sent (BillingOS rejects unknown fields, and null is not "absent").
    body: dict[str, Any] = {
        "customer_id": event.customer_id,
        "feature_key": event.feature_key,
        "quantity": event.quantity,
    }
    if event.idempotency_key is not None:
        body["idempotency_key"] = event.idempotency_key
    if event.metadata is not None:
        body["metadata"] = event.metadata
    return body


def _parse_metrics(response: httpx.Response) -> list[UsageMetric]:
    return UsageMetricsResponse.model_validate_json(response.content).metrics


def _parse_entitlements(response: httpx.Response) -> list[FeatureEntitlement]:
    return EntitlementsResponse.model_validate_json(response.content).entitlements


def _parse_batch(response: httpx.Response) -> list[BatchItemResult]:
    return TrackUsageBatchResult.model_validate_json(response.content).results


def _parse_nothing(response: httpx.Response) -> None:
    return None


class BillingOSBackend:
    """The BillingOS HTTP API (``docs/api.md``): hosted BillingOS or the local server.

    Secret-key endpoints wherever BillingOS has them (``/v1/usage/*``); entitlements exist only
    as a session endpoint, so that one call presents a session token minted for the customer.
    """

    max_batch_size: int = C.MAX_BATCH_SIZE
    _SESSION_PREFIXES = ("bos_session_test_", "bos_session_live_")

    def default_headers(self) -> Mapping[str, str]:
        return {C.API_VERSION_HEADER: C.API_VERSION, "Accept": "application/json"}

    def auth_headers(self, credential: str) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {credential}"}

    # --- secret key -------------------------------------------------------------------
    def track_usage(self, request: TrackUsageRequest) -> Call[TrackUsageResult]:
        headers = {}
        if request.idempotency_key is not None:
            headers[C.IDEMPOTENCY_HEADER] = request.idempotency_key
        return Call(
            "POST",
            "/v1/usage/track",
            _model(TrackUsageResult),
            json=_track_body(request),
            headers=headers,
        )

    def track_usage_batch(self, events: Sequence[TrackUsageRequest]) -> Call[list[BatchItemResult]]:
        # (ext) Every event carries its own key in the body; there is no batch-level header
        # because one key cannot describe a batch that the server applies event by event.
        return Call(
            "POST",
            "/v1/usage/track-batch",
            _parse_batch,
            json={"events": [_track_body(event) for event in events]},
        )

    def usage_metrics(self, customer_id: str, feature_key: str | None) -> Call[list[UsageMetric]]:
        params = {"customer_id": customer_id}
        if feature_key is not None:
            params["feature_key"] = feature_key
        return Call("GET", "/v1/usage/metrics", _parse_metrics, params=params)

    def check_feature(self, customer_id: str, feature_key: str) -> Call[FeatureCheck]:
        return Call(
            "GET",
            "/v1/usage/check",
            _model(FeatureCheck),
            params={"customer_id": customer_id, "feature_key": feature_key},
        )

    def usage_history(self, customer_id: str, feature_key: str, bucket: str) -> Call[UsageHistory]:
        return Call(
            "GET",
            "/v1/usage/history",
            _model(UsageHistory),
            params={"customer_id": customer_id, "feature_key": feature_key, "bucket": bucket},
        )

    def create_session_token(self, request: CreateSessionTokenRequest) -> Call[SessionToken]:
        return Call(
            "POST",
            "/v1/session-tokens",
            _model(SessionToken),
            json=request.model_dump(mode="json", exclude_none=True),
        )

    def revoke_session_token(self, jti: str) -> Call[None]:
        return Call("DELETE", f"/v1/session-tokens/{quote(jti, safe='')}", _parse_nothing)

    def upsert_customer(self, customer_id: str, request: UpsertCustomerRequest) -> Call[Customer]:
        return Call(
            "PUT",
            f"/v1/customers/{quote(customer_id, safe='')}",
            _model(Customer),
            json=request.model_dump(mode="json", exclude_none=True),
        )

    def health(self) -> Call[HealthStatus]:
        return Call("GET", "/health", _model(HealthStatus), credential="none")

    # --- session token ----------------------------------------------------------------
    def entitlements(self, customer_id: str) -> Call[list[FeatureEntitlement]]:
        return Call(
            "GET",
            "/v1/features/entitlements",
            _parse_entitlements,
            credential="session",
            customer_id=customer_id,
        )

    def session_token_info(self, token: str) -> SessionTokenInfo | None:
        """Read ``bos_session_{test|live}_{base64url(JSON)}.{hex HMAC}`` without verifying it."""
        prefix = next((p for p in self._SESSION_PREFIXES if token.startswith(p)), None)
        if prefix is None:
            return None
        encoded, dot, _signature = token[len(prefix) :].partition(".")
        if not dot:
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(claims, dict):
            return None
        jti, iat, exp = claims.get("jti"), _number(claims.get("iat")), _number(claims.get("exp"))
        if not isinstance(jti, str) or iat is None or exp is None:
            return None
        user = claims.get("external_user_id")
        return SessionTokenInfo(
            jti=jti,
            issued_at=iat,
            expires_at=exp,
            customer_id=user if isinstance(user, str) else None,
        )

    def is_stale_session(self, error: APIStatusError) -> bool:
        return is_stale_session(error)

    def error_from_response(self, response: httpx.Response) -> APIStatusError:
        return error_from_response(response)

    def is_retryable(self, error: APIStatusError) -> bool:
        # A 409 is usually transient (another request holds the key right now), but the local
        # server's IDEMPOTENCY_KEY_REUSED — the key already names a different event — is final.
        if error.code == "IDEMPOTENCY_KEY_REUSED":
            return False
        return is_retryable_status(error.status_code)


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
