"""The hottest routes handed to their endpoints without FastAPI's routing: the one-event track
(``POST /v1/usage/track``), the batch track (``POST /v1/usage/track-batch``) and the two
metrics reads (``GET /v1/usage/metrics``, ``GET /v1/features/usage-metrics``).

A one-event track is the request an app sends most (one per user action); a metrics read is
what every open usage meter polls. Measured in-process (the ASGI app called directly, SQLite,
no HTTP server), routing and FastAPI's request handling around the endpoint (matching the
path against every route, solving the app-wide dependency, the credential and query-parameter
dependencies, the exception and exit-stack layers) cost more CPU than the endpoint's own work,
database write or read included. For a 1,000-event batch, whose own work is far larger,
FastAPI's part is still CPU that ``bench/db_ceiling.py`` counts against the database's
ceiling (measured in process with a canned answer, on a loaded machine: 0.21-0.39 ms of CPU
per batch request through FastAPI, 0.11-0.21 ms through this route).

:class:`HotRoute` is pure ASGI and sits inside the observability and request-id middleware, so
the request still gets its request id, log record and metrics, and CORS (outermost) still
applies. It takes only the plainest form of a route (:class:`Hot`): its method, exactly its
path, and a query string naming only the parameters the route reads, each at most once, valid
UTF-8 once percent-decoded (so the app-wide URL check,
:func:`~billing_ui.server.urls.strict_utf8_url`, has nothing to refuse, and the values are
the ones FastAPI would parse). Anything else goes down the full stack unchanged. The endpoint
runs the route's own code (credential, query and body rules, validation); an exception is
answered by the handler the app registered for its type (the error envelope), and anything
with no handler of its own propagates to the 500 handler exactly as from a route.

``served`` counts the requests it served, by path, in the process (never on the wire): the
tests that compare both ways need to know that the hot way was taken, since a route that
silently fell through to the full stack would answer alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[..., Awaitable[Response]]
"""Called with the request and the query parameters present, as keywords."""
Handler = Callable[[Request, Exception], Awaitable[Response]]


@dataclass(frozen=True)
class Hot:
    """A route served by :class:`HotRoute`: ``endpoint`` (the route's own function when
    ``None``) for ``method path``, reading the query parameters named in ``query``, of which
    those in ``required`` must be there (else FastAPI's refusal says which is missing)."""

    method: str
    path: str
    endpoint: Endpoint | None = None
    query: frozenset[str] = frozenset()
    required: frozenset[str] = frozenset()


class HotRoute:
    """Serve the plainest form of each :class:`Hot` route of ``routes_of`` straight from its
    endpoint, counting each in ``served`` (by path)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes_of: FastAPI,
        hot: Sequence[Hot],
        served: Counter[str] | None = None,
    ) -> None:
        self.app = app
        self.served: Counter[str] = served if served is not None else Counter()
        # Built with the middleware stack, at the first request: every route exists by then.
        self.routes: dict[tuple[str, str], tuple[Hot, APIRoute, Endpoint]] = {}
        for h in hot:
            route = _find_route(routes_of, h.method, h.path)
            self.routes[(h.method, h.path)] = (h, route, h.endpoint or route.endpoint)
        self.handlers: dict[Any, Handler] = dict(routes_of.exception_handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.routes.get((scope.get("method", ""), scope.get("path", "")))
        if scope["type"] != "http" or found is None:
            await self.app(scope, receive, send)
            return
        hot, route, endpoint = found
        params = _plain_query(scope.get("query_string", b""), hot.query, hot.required)
        if params is None:
            await self.app(scope, receive, send)
            return
        self.served[hot.path] += 1
        scope["endpoint"] = route.endpoint  # what routing would set (the log's operation)
        scope["route"] = route
        scope.setdefault("path_params", {})
        request = Request(scope, receive, send)
        request._headers = IndexedHeaders(scope)  # what request.headers would build, indexed
        try:
            response = await endpoint(request, **params)
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


class IndexedHeaders(Headers):
    """Starlette's request :class:`Headers`, looked up in a dict rather than by a scan of the
    list: a hot route reads four or five headers (credential, content type and length,
    idempotency key), and each scan lower-cases its name and compares it with every header
    (about 0.4 µs each on the track route). Same answers: names are lower-case in ASGI, and
    the first of a repeated header wins, as in the scan."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        first: dict[bytes, bytes] = {}
        for name, value in reversed(self._list):
            first[name] = value
        self._first = first

    def __getitem__(self, key: str) -> str:
        return self._first[key.lower().encode("latin-1")].decode("latin-1")

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, str) and key.lower().encode("latin-1") in self._first

    def get(self, key: str, default: Any = None) -> Any:
        value = self._first.get(key.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")


def _plain_query(
    raw: bytes, names: frozenset[str], required: frozenset[str]
) -> dict[str, str] | None:
    """The parameters of query string ``raw`` (parsed as Starlette does), or ``None`` when it
    is not plain: a name outside ``names``, a name twice, one of ``required`` missing, or
    bytes that are not UTF-8 once percent-decoded."""
    if not raw:
        return None if required else {}
    if not names:
        return None
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        return None
    params = dict(pairs)
    if len(params) != len(pairs) or not required <= params.keys() <= names:
        return None
    return params


def _find_route(app: FastAPI, method: str, path: str) -> APIRoute:
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            return route
    raise LookupError(f"no route {method} {path}")
