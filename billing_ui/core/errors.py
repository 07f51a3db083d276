"""The typed errors of billing_ui: one short hierarchy, as in httpx and openai-python.

::

    BillingError
    ├── InvalidInputError            bad arguments, caught before any request (also a ValueError)
    └── APIError                     anything that went wrong talking to the billing API
        ├── APIConnectionError       no response (refused, reset, DNS…): the API may be down
        │   └── APITimeoutError
        ├── PoolExhaustedError       not sent: every connection of this app was busy (overload)
    ├── RemoteFetchError         another worker's shared fetch failed (its kind is carried)
        └── APIStatusError           the API answered with an error status
            ├── BadRequestError          400
            │   ├── InvalidRequestError  400 ``VAL_INVALID_INPUT``: the input broke a rule
            │   │   ├── QuotaExceededError   message ``quota_exceeded``: a hard limit refused it
            │   │   └── CustomerNotFoundError  message ``Customer not found[: …]``
            ├── AuthenticationError      401
            ├── PermissionDeniedError    403
            ├── NotFoundError            404
            ├── ConflictError            409
            ├── UnprocessableEntityError 422 (not BillingOS's: it sends 400; other servers may)
            ├── RateLimitError           429
            └── InternalServerError      5xx

Every message says what happened and what to do about it.

Errors are classified by status and the envelope's ``error.code``. BillingOS sends one code for
several cases (every 400 is ``VAL_INVALID_INPUT``, every 401 ``AUTH_INVALID_TOKEN``); only
there does the message decide, and only in :func:`refine_by_message`, against the exact
messages BillingOS sends (:class:`BillingOSMessage`).
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


class PoolExhaustedError(APIError):
    """No connection to the billing API came free in time: this app has more calls in flight
    than its pool serves (a burst, or an API slower than the browsers). The API itself may be
    fine — this is the app's own overload, so it is not an :class:`APIConnectionError` and is
    not retried (retrying would only lengthen the queue).

    ``request_sent`` is ``False`` when no attempt of the call reached the API, so nothing was
    recorded; ``True`` when an earlier attempt was sent and its outcome is unknown.
    """

    def __init__(self, *, request: httpx.Request | None = None, request_sent: bool = False) -> None:
        super().__init__(
            "Every connection to the billing API was busy: this app is sending more calls than "
            "its pool serves. Try again in a moment; if it persists, raise the pool size or the "
            "pool timeout, or send fewer calls.",
            request=request,
        )
        self.request_sent = request_sent


class RemoteFetchError(APIError):
    """The worker that fetched this key for every worker (the Redis query store's
    single-flight) got an error; this caller waited for that fetch. The failure crosses
    workers as data, so its *kind* travels with it: ``problem`` (the operator problem of
    :func:`billing_ui.core.problems.classify`: ``"unreachable"``, ``"credentials"``…, or None
    for an ordinary answer), ``status_code`` and ``api_message`` when the API answered with an
    error. The UI then shows the same sentence as on the worker that fetched (the neutral
    outage sentence, not "Something went wrong"). The caller's own data is untouched."""

    def __init__(
        self,
        message: str,
        *,
        problem: str | None = None,
        status_code: int | None = None,
        api_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.problem = problem
        self.status_code = status_code
        self.api_message = api_message


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


class _FieldErrors(APIStatusError):
    @property
    def field_errors(self) -> tuple[FieldError, ...]:
        """Which field broke which rule: the local server's ``details.fieldErrors`` list of
        ``{field, rule, message}``, or BillingOS's object ``{field: [message, …]}``."""
        raw = self.details.get("fieldErrors") or []
        out: list[FieldError] = []
        if isinstance(raw, Mapping):
            for name, messages in raw.items():
                for message in messages if isinstance(messages, list) else [messages]:
                    out.append(FieldError(str(name), "", str(message)))
        elif isinstance(raw, list):
            for item in raw:
                if isinstance(item, Mapping):
                    out.append(
                        FieldError(
                            str(item.get("field", "")),
                            str(item.get("rule", "")),
                            str(item.get("message", "")),
                        )
                    )
        return tuple(out)


class BadRequestError(APIStatusError):
    """400: the API refused the request as it stands."""


class InvalidRequestError(BadRequestError, _FieldErrors):
    """400 ``VAL_INVALID_INPUT``: the request broke a rule (``field_errors`` names the field when
    the server says), or was refused as it stands ("Feature is not a usage quota type")."""


class QuotaExceededError(InvalidRequestError):
    """The feature's hard limit would be exceeded; nothing was recorded. Upgrade the plan or
    wait for the period to reset."""


class CustomerNotFoundError(InvalidRequestError):
    """The billing API has no customer with this id: create or subscribe it first."""


class AuthenticationError(APIStatusError):
    """401: the secret key or session token is wrong, expired or revoked."""


class PermissionDeniedError(APIStatusError):
    """403: the credential is valid but may not do this."""


class NotFoundError(APIStatusError):
    """404: no such resource (for example, no active subscription with this feature)."""


class ConflictError(APIStatusError):
    """409: the request conflicts with the current state."""


class UnprocessableEntityError(_FieldErrors):
    """422 from a server other than BillingOS (which sends 400 ``VAL_INVALID_INPUT``);
    ``field_errors`` says which field broke which rule."""


class RateLimitError(APIStatusError):
    """429: too many requests. ``retry_after`` (seconds) says when to try again."""

    @property
    def retry_after(self) -> float | None:
        from billing_ui.core._retry import parse_retry_after

        return parse_retry_after(self.response.headers)


class InternalServerError(APIStatusError):
    """5xx: the billing API failed. Retried automatically; raised when retries ran out."""


class BillingOSMessage:
    """The exact messages BillingOS sends where one code covers several cases (from its public
    source). The local server sends the same; :func:`refine_by_message` reads them."""

    QUOTA_EXCEEDED = "quota_exceeded"
    CUSTOMER_NOT_FOUND = "Customer not found"
    """Session endpoints say exactly this; secret-key endpoints add ``: <customer id>``."""
    NOT_USAGE_QUOTA = "Feature is not a usage quota type"
    NO_SUBSCRIPTION = "No active subscription with this feature"
    TOKEN_EXPIRED = "Token expired"
    TOKEN_REVOKED = "Token not found or revoked"
    TOKEN_INVALID = "Invalid token signature"


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}
_BY_CODE: dict[tuple[int, str], type[APIStatusError]] = {
    (400, "VAL_INVALID_INPUT"): InvalidRequestError,
}


def classify(status: int, code: str | None, message: str) -> type[APIStatusError]:
    """The error class for a status and ``error.code``, refined by the message only where
    BillingOS shares one code between cases."""
    cls = _BY_CODE.get((status, code or "")) or _BY_STATUS.get(status)
    if cls is None:
        cls = InternalServerError if status >= 500 else APIStatusError
    return refine_by_message(cls, message)


def refine_by_message(cls: type[APIStatusError], message: str) -> type[APIStatusError]:
    """The one place that reads error messages: BillingOS's 400 ``VAL_INVALID_INPUT`` is also
    its quota refusal and its unknown customer."""
    if cls is InvalidRequestError:
        if message == BillingOSMessage.QUOTA_EXCEEDED:
            return QuotaExceededError
        if message == BillingOSMessage.CUSTOMER_NOT_FOUND or message.startswith(
            BillingOSMessage.CUSTOMER_NOT_FOUND + ": "
        ):
            return CustomerNotFoundError
    return cls


def is_stale_session(error: APIStatusError) -> bool:
    """Whether a 401 means "this session token expired or was revoked" — the one case in
    which a client mints a new token and tries once more. Not "Invalid token signature": a
    token minted a moment ago would be refused again. BillingOS sends ``AUTH_INVALID_TOKEN``
    for all three, so the message decides (here, the only other place that reads one)."""
    return isinstance(error, AuthenticationError) and error.message in (
        BillingOSMessage.TOKEN_EXPIRED,
        BillingOSMessage.TOKEN_REVOKED,
    )


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
    cls = classify(response.status_code, code, message)
    return cls(message, response=response, code=code, details=details, request_id=request_id)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
