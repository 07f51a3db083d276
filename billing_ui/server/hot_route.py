"""The hottest route, ``POST /v1/usage/track``, handed to its endpoint without FastAPI's routing.

A one-event track is the request an app sends most (one per user action). Measured in-process
(the ASGI app called directly, SQLite, no HTTP server), routing and FastAPI's request handling
around the endpoint (matching the path against every route, solving the app-wide dependency,
the exception and exit-stack layers) cost more CPU than the endpoint's own work, database
write included.

:class:`HotRoute` is pure ASGI and sits inside the observability and request-id middleware, so
the request still gets its request id, log record and metrics, and CORS (outermost) still
applies. It takes only the plainest form of the route: method ``POST``, exactly that path, no
query string (so the app-wide URL check, :func:`~billing_ui.server.urls.strict_utf8_url`, has
nothing to refuse). Anything else goes down the full stack unchanged. The endpoint is the
route's own function, so authentication, body rules and validation are the same code; an
exception is answered by the handler the app registered for its type (the error envelope),
and anything with no handler of its own propagates to the 500 handler exactly as from a route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


class HotRoute:
    """Serve ``method path`` (no query string) of ``routes_of`` straight from its endpoint."""

    def __init__(self, app: ASGIApp, *, routes_of: FastAPI, method: str, path: str) -> None:
        self.app = app
        self.method = method
        self.path = path
        # Built with the middleware stack, at the first request: every route exists by then.
        self.route = _find_route(routes_of, method, path)
        self.endpoint = cast(Endpoint, self.route.endpoint)
        self.handlers: dict[Any, Handler] = dict(routes_of.exception_handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != self.method
            or scope["path"] != self.path
            or scope.get("query_string")
        ):
            await self.app(scope, receive, send)
            return
        scope["endpoint"] = self.endpoint  # what routing would set (the log's operation)
        scope["route"] = self.route
        scope.setdefault("path_params", {})
        request = Request(scope, receive, send)
        try:
            response = await self.endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise  # the 500 handler's, as from a route
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Handler | None:
        """The handler registered for ``exc``'s class or its nearest base, except the
        catch-all ``Exception`` one (ServerErrorMiddleware runs that, outside)."""
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in self.handlers:
                return self.handlers[cls]
        return None


def _find_route(app: FastAPI, method: str, path: str) -> APIRoute:
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no route {method} {path}")
