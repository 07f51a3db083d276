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
from billing_ui.server.errors import unauthorized
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
    """The endpoint is for the app's backend: only the secret key opens it."""
    credential = _bearer(request)
    if credential.startswith(tokens.PREFIX):
        raise unauthorized("This endpoint needs the secret key (sk_...), not a session token")
    expected: str = request.app.state.api_key
    if not hmac.compare_digest(credential.encode(), expected.encode()):
        raise unauthorized("Invalid API key")


async def require_session(request: Request) -> SessionClaims:
    """The endpoint is for one customer: only a valid, unrevoked session token opens it."""
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
    if await reads.read(service.store, service.is_revoked, claims.jti):
        raise unauthorized("Token not found or revoked")
    note(request, customer=claims.external_user_id)  # the log record's customer
    return claims


SecretKey = Annotated[None, Depends(require_secret_key)]
Session = Annotated[SessionClaims, Depends(require_session)]
