"""Session tokens in BillingOS's format: signed, self-contained, short-lived.

``bos_session_{test|live}_`` + base64url(JSON payload, no padding) + ``.`` + lowercase hex
HMAC-SHA256 of everything before the dot, keyed by the secret key. The payload names one
customer (``external_user_id``), so a token can only ever see that customer's data.

Verification is pure (signature, shape, expiry against the given clock); revocation needs the
database and is checked by the caller with the token's ``jti``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from billing_ui.core import validation as V
from billing_ui.core.errors import InvalidInputError

PREFIX: Final = "bos_session_"
JTI_PATTERN: Final = re.compile(r"^tok_[0-9a-f]{32}$")
MAX_TTL_S: Final = 86_400


class TokenError(Exception):
    """The token is not valid; ``str(exc)`` is BillingOS's message for it."""


@dataclass(frozen=True, slots=True)
class SessionClaims:
    jti: str
    iat: int
    exp: int
    merchant_id: str
    external_user_id: str
    external_organization_id: str | None = None
    allowed_operations: tuple[str, ...] | None = None
    metadata: dict[str, Any] | None = None


def mode_of(secret_key: str) -> str:
    """``live`` for an ``sk_live_`` key, ``test`` for anything else (as BillingOS prefixes)."""
    return "live" if secret_key.startswith("sk_live_") else "test"


def merchant_id_for(secret_key: str) -> str:
    """A stable merchant id derived from the key, so tokens of one server name one merchant."""
    return "mer_" + hashlib.sha256(secret_key.encode()).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret_key: str, message: str) -> str:
    return hmac.new(secret_key.encode(), message.encode(), hashlib.sha256).hexdigest()


def mint(
    secret_key: str,
    *,
    external_user_id: str,
    now: datetime,
    ttl_s: int,
    external_organization_id: str | None = None,
    allowed_operations: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> tuple[str, SessionClaims]:
    """A new signed token for one customer, valid ``ttl_s`` seconds from ``now``."""
    iat = int(now.timestamp())
    claims = SessionClaims(
        jti="tok_" + secrets.token_hex(16),
        iat=iat,
        exp=iat + ttl_s,
        merchant_id=merchant_id_for(secret_key),
        external_user_id=external_user_id,
        external_organization_id=external_organization_id,
        allowed_operations=None if allowed_operations is None else tuple(allowed_operations),
        metadata=metadata,
    )
    payload: dict[str, Any] = {
        "jti": claims.jti,
        "iat": claims.iat,
        "exp": claims.exp,
        "merchant_id": claims.merchant_id,
        "external_user_id": external_user_id,
    }
    if external_organization_id is not None:
        payload["external_organization_id"] = external_organization_id
    if allowed_operations is not None:
        payload["allowed_operations"] = list(allowed_operations)
    if metadata is not None:
        payload["metadata"] = metadata
    body = (
        PREFIX
        + mode_of(secret_key)
        + "_"
        + _b64(json.dumps(payload, separators=(",", ":")).encode())
    )
    return body + "." + _sign(secret_key, body), claims


def verify(secret_key: str, token: str, *, now: datetime) -> SessionClaims:
    """Check signature, shape and expiry; raise :class:`TokenError` with BillingOS's message.

    The signature is checked first (in constant time) so nothing about an unsigned payload is
    ever trusted or echoed back.
    """
    invalid = TokenError("Invalid token signature")
    head, dot, signature = token.rpartition(".")
    expected_prefix = PREFIX + mode_of(secret_key) + "_"
    if not dot or not head.startswith(expected_prefix) or not signature.isascii():
        raise invalid
    if not hmac.compare_digest(_sign(secret_key, head).encode(), signature.encode()):
        raise invalid
    try:
        payload = json.loads(_unb64(head[len(expected_prefix) :]))
    except (ValueError, binascii.Error):
        raise invalid from None
    claims = _claims(payload)
    if claims is None:
        raise invalid
    if now.timestamp() >= claims.exp:
        raise TokenError("Token expired")
    return claims


def _claims(payload: object) -> SessionClaims | None:
    if not isinstance(payload, dict):
        return None
    jti, iat, exp = payload.get("jti"), payload.get("iat"), payload.get("exp")
    merchant, user = payload.get("merchant_id"), payload.get("external_user_id")
    org, ops, meta = (
        payload.get("external_organization_id"),
        payload.get("allowed_operations"),
        payload.get("metadata"),
    )
    if not (isinstance(jti, str) and JTI_PATTERN.fullmatch(jti)):
        return None
    if not (_is_int(iat) and _is_int(exp)):
        return None
    if not isinstance(merchant, str) or not isinstance(user, str):
        return None
    try:
        V.check_customer_id(user)
    except InvalidInputError:
        return None
    if org is not None and not isinstance(org, str):
        return None
    if ops is not None and not (isinstance(ops, list) and all(isinstance(o, str) for o in ops)):
        return None
    if meta is not None and not isinstance(meta, dict):
        return None
    assert isinstance(iat, int) and isinstance(exp, int)
    return SessionClaims(
        jti, iat, exp, merchant, user, org, None if ops is None else tuple(ops), meta
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
