"""The typed errors of billing_ui: one short hierarchy, as in httpx and openai-python.

::

    BillingError
    ├── InvalidInputError            bad arguments, caught before any request (also a ValueError)
    └── APIError                     anything that went wrong talking to the billing API
        ├── APIConnectionError       no response (refused, reset, DNS…)
        │   └── APITimeoutError
        └── APIStatusError           the API answered with an error status
            ├── BadRequestError          400
            │   ├── QuotaExceededError   400 ``quota_exceeded``: a hard limit refused the usage
            │   └── CustomerNotFoundError  400 ``Customer not found: …``
            ├── AuthenticationError      401
            ├── PermissionDeniedError    403
            ├── NotFoundError            404
            ├── ConflictError            409
            ├── UnprocessableEntityError 422 (and BillingOS's 400 ``VAL_INVALID_INPUT``)
            ├── RateLimitError           429
            └── InternalServerError      5xx

Every message says what happened and what to do about it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule on one field: ``quantity`` must be ``> 0``."""

    field: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class BillingError(Exception):
    """Base class of every error billing_ui raises on purpose."""


class InvalidInputError(BillingError, ValueError):
    """Arguments broke a documented rule; nothing was sent and nothing was changed.

    ``errors`` lists every broken rule; ``field`` and ``rule`` name the first one.
    """

    def __init__(self, errors: Sequence[FieldError]) -> None:
        if not errors:
            raise ValueError("InvalidInputError needs at least one FieldError")
        self.errors: tuple[FieldError, ...] = tuple(errors)
        first = self.errors[0]
        self.field: str = first.field
        self.rule: str = first.rule
        super().__init__("invalid input: " + "; ".join(str(e) for e in self.errors))

    @classmethod
    def single(cls, field: str, rule: str, message: str) -> InvalidInputError:
        return cls([FieldError(field, rule, message)])


class APIError(BillingError):
    """Something went wrong talking to the billing API."""

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request


class APIConnectionError(APIError):
    """No response arrived. Safe to retry: tracked usage carries an idempotency key."""

    def __init__(self, message: str | None = None, *, request: httpx.Request | None = None) -> None:
        super().__init__(
            message
            or "Could not reach the billing API. Check BILLINGOS_API_URL and that the server "
            "is running (the local one: python -m billing_ui.server).",
            request=request,
        )


class APITimeoutError(APIConnectionError):
    """The request timed out. Raise ``timeout=`` or check the server's health."""

    def __init__(self, *, request: httpx.Request | None = None) -> None:
        super().__init__(
            "The billing API did not answer in time; raise the client's timeout= or check "
            "the server.",
            request=request,
        )


class APIResponseValidationError(APIError):
    """A success status with a body that does not match the API's schema: the base URL
    probably points at something other than a billing API, or at an incompatible version."""

    def __init__(self, message: str, *, response: httpx.Response) -> None:
        super().__init__(message, request=response.request)
        self.response = response
        self.status_code = response.status_code


class APIStatusError(APIError):
    """The API answered with an error status; ``code`` and ``request_id`` come from its
    error envelope ``{"error": {"code", "message", "details", "requestId"}, "statusCode"}``."""

    def __init__(
        self,
        message: str,
        *,
        response: httpx.Response,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, request=response.request)
        self.response = response
        self.status_code = response.status_code
        self.code = code
        self.details: Mapping[str, Any] = details or {}
        self.request_id = request_id

    def __str__(self) -> str:
        suffix = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.status_code} {self.code or ''}: {self.message}{suffix}".replace("  ", " ")


class BadRequestError(APIStatusError):
    """400: the API refused the request as it stands."""


class QuotaExceededError(BadRequestError):
    """The feature's hard limit would be exceeded; nothing was recorded. Upgrade the plan or
    wait for the period to reset."""


class CustomerNotFoundError(BadRequestError):
    """The billing API has no customer with this id: create or subscribe it first."""


class AuthenticationError(APIStatusError):
    """401: the secret key or session token is wrong, expired or revoked."""


class PermissionDeniedError(APIStatusError):
    """403: the credential is valid but may not do this."""


class NotFoundError(APIStatusError):
    """404: no such resource (for example, no active subscription with this feature)."""


class ConflictError(APIStatusError):
    """409: the request conflicts with the current state."""


class UnprocessableEntityError(APIStatusError):
    """The API rejected the input; ``field_errors`` says which field broke which rule."""

    @property
    def field_errors(self) -> tuple[FieldError, ...]:
        raw = self.details.get("fieldErrors") or []
        out = []
        for item in raw if isinstance(raw, list) else []:
            if isinstance(item, Mapping):
                out.append(
                    FieldError(
                        str(item.get("field", "")),
                        str(item.get("rule", "")),
                        str(item.get("message", "")),
                    )
                )
        return tuple(out)


class RateLimitError(APIStatusError):
    """429: too many requests. ``retry_after`` (seconds) says when to try again."""

    @property
    def retry_after(self) -> float | None:
        from billing_ui.core._retry import parse_retry_after

        return parse_retry_after(self.response.headers)


class InternalServerError(APIStatusError):
    """5xx: the billing API failed. Retried automatically; raised when retries ran out."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_from_response(response: httpx.Response) -> APIStatusError:
    """Map an error response (BillingOS envelope or not) to its typed error."""
    code: str | None = None
    message = response.reason_phrase or "error"
    details: Mapping[str, Any] | None = None
    request_id = response.headers.get("x-request-id")
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        envelope = body.get("error")
        if isinstance(envelope, Mapping):
            code = _str_or_none(envelope.get("code"))
            message = str(envelope.get("message") or message)
            raw_details = envelope.get("details")
            details = raw_details if isinstance(raw_details, Mapping) else None
            request_id = _str_or_none(envelope.get("requestId")) or request_id
        elif isinstance(body.get("message"), str):
            message = body["message"]
    cls: type[APIStatusError]
    status = response.status_code
    if status == 400 and (message == "quota_exceeded" or code == "QUOTA_EXCEEDED"):
        cls = QuotaExceededError
    elif status == 400 and message.startswith("Customer not found"):
        cls = CustomerNotFoundError
    elif status == 400 and code == "VAL_INVALID_INPUT":
        cls = UnprocessableEntityError
    elif status >= 500:
        cls = InternalServerError
    else:
        cls = _BY_STATUS.get(status, APIStatusError)
    return cls(message, response=response, code=code, details=details, request_id=request_id)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
