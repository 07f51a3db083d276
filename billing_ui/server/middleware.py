"""A request id on every response, including errors and 500s.

Pure ASGI (not ``BaseHTTPMiddleware``, which costs a task and a queue per request): it stores
``req_<hex>`` in the request state, where the error handlers find it for the envelope's
``requestId``, and adds the ``x-request-id`` header to whatever response goes out.
"""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billing_ui.server.errors import REQUEST_ID_HEADER

_HEADER = REQUEST_ID_HEADER.encode()


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id()
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == _HEADER for name, _ in headers):
                    headers.append((_HEADER, rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
