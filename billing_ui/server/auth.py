"""Who is calling: the secret key (the app's backend) or a session token (one customer).

Two FastAPI dependencies, one per kind of endpoint. A credential of the wrong kind is refused
with a message saying which one the endpoint needs, because that mistake (a secret key in a
browser, a session token on a backend route) is the one people actually make.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from billing_ui.server import reads, tokens
from billing_ui.server.errors import ApiProblem, unauthorized
from billing_ui.server.observability import note
from billing_ui.server.tokens import SessionClaims


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise unauthorized(
            "Missing credentials: send Authorization: Bearer <secret key or session token>"
        )
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise unauthorized("Authorization must be: Bearer <secret key or session token>")
    return credential


async def require_secret_key(request: Request) -> None:
    """The endpoint is for the app's backend: only the secret key opens it. The header a
    backend sends (exactly ``Bearer <key>``) is checked by one constant-time comparison; any
    other form is parsed, and refused with the message that says what is wrong."""
    header = request.headers.get("authorization")
    expected: str = request.app.state.api_key
    if header is not None and hmac.compare_digest(
        header.encode("latin-1"), b"Bearer " + expected.encode()
    ):
        return
    credential = _bearer(request)
    if credential.startswith(tokens.PREFIX):
        raise unauthorized("This endpoint needs the secret key (sk_...), not a session token")
    if not hmac.compare_digest(credential.encode(), expected.encode()):
        raise unauthorized("Invalid API key")


async def verify_session(request: Request) -> SessionClaims:
    """A session token's signature, expiry and kind, checked without the database. The
    caller must then check revocation itself (:func:`refused_revoked`), in its own read.
    (``async`` though it never awaits: FastAPI runs a plain ``def`` dependency in its thread
    pool, the very hop the metrics read avoids.)"""
    credential = _bearer(request)
    if credential.startswith("sk_"):
        raise unauthorized(
            "This endpoint needs a session token (bos_session_...), not the secret key; "
            "mint one with POST /v1/session-tokens"
        )
    service = request.app.state.service
    try:
        claims = tokens.verify(request.app.state.api_key, credential, now=service.clock.now())
    except tokens.TokenError as exc:
        raise unauthorized(str(exc)) from None
    note(request, customer=claims.external_user_id)  # the log record's customer
    return claims


def refused_revoked() -> ApiProblem:
    """The refusal of a revoked session token."""
    return unauthorized("Token not found or revoked")


async def require_session(request: Request) -> SessionClaims:
    """The endpoint is for one customer: only a valid, unrevoked session token opens it."""
    claims = await verify_session(request)
    service = request.app.state.service
    if await reads.read(service.store, service.is_revoked, claims.jti):
        raise refused_revoked()
    return claims


SecretKey = Annotated[None, Depends(require_secret_key)]
Session = Annotated[SessionClaims, Depends(require_session)]
SignedSession = Annotated[SessionClaims, Depends(verify_session)]
"""A session token not yet checked against revocations: for a route whose one database read
checks that too (a metrics read: one round trip, not two)."""
