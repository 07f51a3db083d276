"""The seam between the client and one billing service's HTTP API.

The clients never spell a URL: each operation declares its :class:`Endpoint` once (method, path,
credential, request and response models, retryable / idempotent; in
:mod:`billing_ui.core.operations`), and a *backend* turns it into a :class:`Call` — method, path,
query, JSON body, credential, parser — that the client runs with its shared retry, credential
and error machinery. :class:`BillingOSBackend` is the BillingOS HTTP API (``docs/api.md``),
spoken identically by a hosted BillingOS and by the embedded local server: it sends each
endpoint as declared.

Why the seam: a different usage-billing service (Autumn, OpenMeter, Lago, …) is one more class
with the methods of :class:`Backend` whose ``build`` maps each operation (``endpoint.name``)
onto its own endpoints (OpenMeter: ``POST /api/v1/events`` with a CloudEvents body for a
track, …) and its error envelope onto :mod:`billing_ui.core.errors`. Retries, idempotency keys,
session-token caching, validation and the sync/async split come for free. Pass it as
``BillingClient(backend=...)``; an operation a service lacks may raise
:class:`NotImplementedError` from ``build``. A hosted BillingOS answers the **(ext)** endpoints
with an error status, which the client raises.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from billing_ui.core import _constants as C
from billing_ui.core._retry import is_retryable_status
from billing_ui.core.errors import APIStatusError, error_from_response, is_stale_session

__all__ = [
    "Backend",
    "BillingOSBackend",
    "Call",
    "Credential",
    "Endpoint",
    "SessionTokenInfo",
]

T = TypeVar("T")
B = TypeVar("B", bound=BaseModel)

Credential = Literal["secret", "session", "none"]
"""Which credential a call presents: the secret key, a session token minted for the call's
customer (the client mints and caches it), or none."""


@dataclass(frozen=True, slots=True)
class Endpoint(Generic[B, T]):
    """Where and how one operation goes over the wire (declared once, in
    :mod:`billing_ui.core.operations`): the BillingOS method and path (``{name}`` placeholders
    are filled from ``path_args``), the credential, the request model (body or query), the
    response model and the part of it the operation returns, and whether another attempt is
    safe (``retryable``) and changes nothing more (``idempotent``)."""

    name: str
    method: str
    path: str
    credential: Credential
    request: type[BaseModel] | None
    response: type[B]
    unwrap: Callable[[B], T]
    retryable: bool = True
    idempotent: bool = True

    def parse(self, response: httpx.Response) -> T:
        """A 2xx body read straight into the response model (pydantic parses in Rust)."""
        return self.unwrap(self.response.model_validate_json(response.content))


class CallParts(TypedDict, total=False):
    """What an operation adds to its endpoint to make one call."""

    path_args: Mapping[str, str]
    params: Mapping[str, str]
    json: Any
    headers: Mapping[str, str]
    customer_id: str


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
    retryable: bool = True
    operation: str = ""
    """The operation's name (``track_usage``), for logs and metrics."""


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

    def build(self, endpoint: Endpoint[Any, T], **parts: Unpack[CallParts]) -> Call[T]:
        """The call for one operation (``endpoint.name`` says which)."""
        ...

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

    def build(self, endpoint: Endpoint[Any, T], **parts: Unpack[CallParts]) -> Call[T]:
        """The endpoint as declared: BillingOS is what the declarations describe."""
        path_args = parts.get("path_args") or {}
        path = endpoint.path.format_map({k: quote(v, safe="") for k, v in path_args.items()})
        return Call(
            endpoint.method,
            path,
            endpoint.parse,
            params=parts.get("params"),
            json=parts.get("json"),
            credential=endpoint.credential,
            customer_id=parts.get("customer_id"),
            headers=parts.get("headers") or {},
            retryable=endpoint.retryable,
            operation=endpoint.name,
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
