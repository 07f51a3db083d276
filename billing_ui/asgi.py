"""The billing hooks for any ASGI app (Starlette, FastAPI): a router the app mounts, whose
endpoints a browser may call with ``fetch`` or htmx.

::

    from fastapi import FastAPI
    from billing_ui.asgi import billing_routes
    from billing_ui.core import TrackRule

    def signed_in_user(request) -> str | None:     # your auth: the session's user id
        return request.session.get("user_id")

    app = FastAPI()
    app.mount("/billing", billing_routes(
        resolve_customer=signed_in_user,
        trackable={"api_calls": TrackRule(max_quantity=10)},
    ))

==========================  =============================================================
``POST /track``             ``{"feature_key", "quantity"?, "metadata"?}`` -> 200
                            ``{"status": "recorded", "result"}``, or 202
                            ``{"status": "queued", "idempotency_key", "queued"}`` (outbox)
``GET /metrics``            ``?feature_key=`` optional -> ``{"metrics": [...]}`` (cached per
                            customer, one upstream request per interval however many tabs)
``GET /entitlements``       ``{"entitlements": [...]}``
``GET /check``              ``?feature_key=`` -> the feature check (``useFeature``)
==========================  =============================================================

What a browser may not do: name the customer (it comes from ``resolve_customer`` over the
request — its session or auth — never from the body or the query; a body field
``customer_id`` is refused like any unknown field), track a feature outside ``trackable`` or
beyond its :class:`~billing_ui.core.track_rules.TrackRule`, or post with the user's cookies
from another site (a POST carrying cookies must come from this origin or ``allowed_origins``:
its ``Origin`` header, else ``Sec-Fetch-Site: same-origin``). Every error is BillingOS's
envelope ``{"error": {"code", "message", "details"?}, "statusCode"}`` (an HTTP request for a
path or method the router does not serve too: a 404 ``RES_NOT_FOUND``, as BillingOS answers);
problems of the set-up
(a wrong secret key, an unreachable API) reach the operator's log and the browser only as
"Billing is temporarily unavailable".

With ``tracker`` (an :class:`~billing_ui.core.tracker.AsyncUsageTracker`) nothing is lost: a
track is sent at once (200, ``recorded``), and when the billing API cannot take it for a
retryable reason it is written to the durable outbox with its key and answered 202
``queued`` with the number waiting, for the tracker's worker to deliver; fail-closed features
(seats) are refused instead. Pass ``lifespan=tracker.lifespan`` to the app so it flushes on
shutdown.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketClose

from billing_ui.core import metrics
from billing_ui.core.client import AsyncBillingClient
from billing_ui.core.errors import (
    APIError,
    APIStatusError,
    AuthenticationError,
    BillingError,
    InvalidInputError,
    PermissionDeniedError,
    PoolExhaustedError,
    RateLimitError,
)
from billing_ui.core.outbox import OutboxFullError, QueuedTrack
from billing_ui.core.problems import BUSY_MESSAGE, USER_MESSAGE, ProblemLog
from billing_ui.core.queries import FEATURE_CHECK, METRICS, BillingQueries
from billing_ui.core.strict_json import check_json_content_type, loads_strict
from billing_ui.core.track_rules import TrackRule, check_browser_track
from billing_ui.core.tracker import AsyncUsageTracker
from billing_ui.core.validation import check_feature_key

__all__ = ["CustomerFromRequest", "billing_routes", "prometheus_metrics"]

CustomerFromRequest = Callable[[Request], "str | Awaitable[str | None] | None"]
"""``(request) -> customer id | None``, sync or async: the signed-in user, or None."""

MAX_BODY_BYTES = 16 * 1024
_TRACK_FIELDS = frozenset({"feature_key", "quantity", "metadata"})
_ANY_LIST: TypeAdapter[list[Any]] = TypeAdapter(list[Any])


def billing_routes(
    *,
    resolve_customer: CustomerFromRequest,
    trackable: Mapping[str, TrackRule],
    client: AsyncBillingClient | Callable[[], AsyncBillingClient] | None = None,
    queries: BillingQueries | None = None,
    tracker: AsyncUsageTracker | None = None,
    allowed_origins: Collection[str] = (),
    refresh_interval: float = 30.0,
) -> Router:
    """The router (mount it where you like). ``client``: an :class:`AsyncBillingClient` or a
    factory (default: one from ``BILLINGOS_API_URL`` / ``BILLINGOS_SECRET_KEY``, made on first
    use); or pass ``queries`` to share a cache with other code. ``refresh_interval``: seconds
    a customer's metrics and checks are served from the cache."""
    for key, rule in trackable.items():
        if not isinstance(rule, TrackRule):
            raise TypeError(f"trackable[{key!r}] must be a TrackRule, got {type(rule).__name__}")
    api = _Api(
        resolve_customer,
        dict(trackable),
        queries or BillingQueries(client or _lazy_client(), problems=ProblemLog()),
        tracker,
        frozenset(allowed_origins),
        refresh_interval,
    )
    metrics.current().watch_store(api.queries.cache)
    if tracker is not None:
        outbox = tracker.tracker.outbox
        metrics.current().watch_outbox(outbox)
        outbox.on_delivered(api.after_delivery)
    return Router(
        routes=[
            Route("/track", _Only("POST", api.track)),
            Route("/metrics", _Only("GET", api.metrics)),
            Route("/entitlements", _Only("GET", api.entitlements)),
            Route("/check", _Only("GET", api.check)),
        ],
        default=_unknown_path,
    )


def _no_route(request: Request) -> JSONResponse:
    """What BillingOS answers for a path or method it does not serve (Express, under NestJS,
    has no 405: both are a 404), in its envelope. The path is the browser's: cut short."""
    path = request.url.path[:200]
    return error_response(404, "RES_NOT_FOUND", f"Cannot {request.method} {path}")


class _Only:
    """``endpoint`` for ``method`` (and HEAD with GET); any other method: :func:`_no_route`.

    An ASGI app, not a function, so that its ``Route`` matches every method (Starlette gives
    a function endpoint GET and HEAD only): a wrong method is then answered here, in the error
    envelope, not by the host app's own 405 (FastAPI's ``{"detail": ...}``)."""

    def __init__(self, method: str, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.method, self.endpoint = method, endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        if request.method == self.method or (self.method == "GET" and request.method == "HEAD"):
            response = await self.endpoint(request)
        else:
            response = _no_route(request)
        await response(scope, receive, send)


async def _unknown_path(scope: Scope, receive: Receive, send: Send) -> None:
    """The router's answer for a path under its mount that it does not have (a WebSocket is
    closed, as Starlette's own default does)."""
    if scope["type"] == "websocket":
        await WebSocketClose()(scope, receive, send)
        return
    await _no_route(Request(scope))(scope, receive, send)


async def prometheus_metrics(request: Request) -> Response:
    """The Prometheus metrics (:mod:`billing_ui.core.metrics`), for the app to serve where
    it opts in — not inside the router, whose ``/metrics`` is the customer's usage::

        app.add_route("/metrics", prometheus_metrics)
    """
    return Response(metrics.current().render(), media_type=metrics.CONTENT_TYPE)


def _lazy_client() -> Callable[[], AsyncBillingClient]:
    made: list[AsyncBillingClient] = []

    def get() -> AsyncBillingClient:
        if not made:
            made.append(AsyncBillingClient())
        return made[0]

    return get


class _Refusal(Exception):
    """An answer in the error envelope, raised from anywhere in a handler."""

    def __init__(
        self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.response = error_response(status, code, message, details)


def error_response(
    status: int, code: str, message: str, details: Mapping[str, Any] | None = None
) -> JSONResponse:
    """BillingOS's error envelope."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = dict(details)
    return JSONResponse({"error": error, "statusCode": status}, status_code=status)


class _Api:
    def __init__(
        self,
        resolve_customer: CustomerFromRequest,
        trackable: dict[str, TrackRule],
        queries: BillingQueries,
        tracker: AsyncUsageTracker | None,
        allowed_origins: frozenset[str],
        refresh_interval: float,
    ) -> None:
        self.resolve_customer = resolve_customer
        self.trackable = trackable
        self.queries = queries
        self.tracker = tracker
        self.allowed_origins = allowed_origins
        self.interval = refresh_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._delivered_early: set[str] = set()
        """Customers whose queued tracks were delivered before this process served a request
        (after a restart): their cached reads are dropped at the first one."""

    def after_delivery(self, customers: frozenset[str]) -> None:
        """The outbox delivered tracks of these customers (called in the tracker's thread):
        drop their cached usage through the query store, so every page — on every worker,
        when the store is Redis — reads the server's numbers next."""
        loop = self._loop
        if loop is None or loop.is_closed():
            self._delivered_early |= customers
            return
        asyncio.run_coroutine_threadsafe(self._forget(customers), loop)

    async def _forget(self, customers: Collection[str]) -> None:
        for customer in customers:
            await self.queries.cache.invalidate((METRICS, customer))
            await self.queries.cache.invalidate((FEATURE_CHECK, customer))

    # -- the endpoints
    async def track(self, request: Request) -> Response:
        return await self._answer(request, self._track)

    async def metrics(self, request: Request) -> Response:
        return await self._answer(request, self._metrics)

    async def entitlements(self, request: Request) -> Response:
        return await self._answer(request, self._entitlements)

    async def check(self, request: Request) -> Response:
        return await self._answer(request, self._check)

    async def _track(self, request: Request, customer: str) -> Response:
        body = await _json_body(request)
        unknown = sorted(set(body) - _TRACK_FIELDS)
        if unknown:
            raise InvalidInputError.single(unknown[0][:64], "unknown_field", "is not a field")
        if "feature_key" not in body:
            raise InvalidInputError.single("feature_key", "required", "is required")
        key, amount, meta, idem = check_browser_track(
            self.trackable, body.get("feature_key"), body.get("quantity", 1), body.get("metadata")
        )
        if self.tracker is not None:
            outcome = await self.tracker.send_or_queue(
                customer, key, amount, metadata=meta, idempotency_key=idem
            )
            if isinstance(outcome, QueuedTrack):
                stats = await self.tracker.stats()
                body = {"status": "queued", "idempotency_key": idem, "queued": stats.depth}
                return JSONResponse(body, status_code=202)
            await self.queries.after_track(customer, outcome)
            result = outcome
        else:
            result = await self.queries.track_usage(
                customer, key, amount, metadata=meta, idempotency_key=idem
            )
        return JSONResponse({"status": "recorded", "result": _dump(result)})

    async def _metrics(self, request: Request, customer: str) -> Response:
        wanted = request.query_params.get("feature_key")
        key = None if wanted is None else check_feature_key(wanted)
        entry = await self.queries.usage_metrics(customer, stale_time=self.interval)
        metrics = [m for m in entry.data if key is None or m.feature_key == key]
        return JSONResponse({"metrics": _ANY_LIST.dump_python(metrics, mode="json", by_alias=True)})

    async def _entitlements(self, request: Request, customer: str) -> Response:
        entry = await self.queries.entitlements(customer, stale_time=self.interval * 10)
        return JSONResponse(
            {"entitlements": _ANY_LIST.dump_python(entry.data, mode="json", by_alias=True)}
        )

    async def _check(self, request: Request, customer: str) -> Response:
        key = check_feature_key(request.query_params.get("feature_key"))
        entry = await self.queries.feature_check(customer, key, stale_time=self.interval)
        return JSONResponse(_dump(entry.data))

    # -- what every endpoint does
    async def _answer(
        self, request: Request, handler: Callable[[Request, str], Awaitable[Response]]
    ) -> Response:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            early, self._delivered_early = self._delivered_early, set()
            await self._forget(early)
        try:
            if request.method == "POST":
                self._check_origin(request)
            customer = await self._customer(request)
            return await handler(request, customer)
        except _Refusal as refusal:
            return refusal.response
        except InvalidInputError as exc:
            fields = [{"field": e.field, "rule": e.rule, "message": e.message} for e in exc.errors]
            return error_response(400, "VAL_INVALID_INPUT", str(exc), {"fieldErrors": fields})
        except BillingError as exc:
            return _upstream_error(exc)

    async def _customer(self, request: Request) -> str:
        found = self.resolve_customer(request)
        if inspect.isawaitable(found):
            found = await found
        if not found:
            raise _Refusal(401, "AUTH_UNAUTHORIZED", "Sign in first: nobody is signed in.")
        return str(found)

    def _check_origin(self, request: Request) -> None:
        """CSRF: a POST that carries cookies must come from this site (or an allowed one)."""
        if "cookie" not in request.headers:
            return  # no ambient credential: a cross-site page cannot act as the user
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        origin = request.headers.get("origin")
        if origin is not None:
            if origin == own or origin in self.allowed_origins:
                return
        elif request.headers.get("sec-fetch-site") == "same-origin":
            return
        raise _Refusal(
            403, "AUTH_CSRF_REJECTED", "Cross-site request refused: post from this site's pages."
        )


async def _json_body(request: Request) -> dict[str, Any]:
    check_json_content_type(request.headers.get("content-type", ""))  # strict: core.strict_json
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _Refusal(413, "VAL_PAYLOAD_TOO_LARGE", f"body over {MAX_BODY_BYTES} bytes")
    body = loads_strict(raw)
    if not isinstance(body, dict):
        raise InvalidInputError.single("body", "json", "must be a JSON object")
    return body


def _dump(model: BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True)


def _upstream_error(exc: BillingError) -> JSONResponse:
    """What the browser may know about a failure: a refusal about its own request as the API
    said it (a quota, an unknown feature); for the set-up's problems (wrong key, API down or
    failing, the app overloaded, a full outbox) only a neutral sentence."""
    if isinstance(exc, PoolExhaustedError):
        return error_response(503, "SYS_BUSY", BUSY_MESSAGE)
    if isinstance(exc, RateLimitError):
        return error_response(429, "RATE_LIMIT_EXCEEDED", "Too many requests; slow down.")
    if (
        isinstance(exc, APIStatusError)
        and 400 <= exc.status_code < 500
        and not isinstance(exc, AuthenticationError | PermissionDeniedError)
    ):
        return error_response(
            exc.status_code, exc.code or "REQUEST_ERROR", exc.message, exc.details
        )
    if isinstance(exc, APIError | OutboxFullError):
        return error_response(503, "SYS_UNAVAILABLE", USER_MESSAGE)
    return error_response(500, "SYS_INTERNAL_ERROR", USER_MESSAGE)
