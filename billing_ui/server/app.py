"""The HTTP routes of the local billing server (FastAPI), as docs/api.md lays them out.

Each route does the same four things in the same order: authenticate (dependency), read the
body (dependency, after authentication), validate it with the shared request model, and hand a
typed command to :class:`~billing_ui.server.service.BillingService`. Responses are the shared
response models, serialised once; OpenAPI is generated from the same models.

Routes that write are plain ``def``: FastAPI runs them in its thread pool, so concurrent
tracks really are concurrent and the store's transactions (not the event loop) keep them
correct, and a long batch does not hold up the event loop. Routes that only read are
``async def``: on SQLite a read is a few primary-key lookups (tens of microseconds) on the loop
thread's own WAL reader connection, cheaper than the hop to a worker thread and back; on
PostgreSQL it is a network round trip, so it runs in the thread pool instead
(:mod:`billing_ui.server.reads`) and never stalls the event loop, except the metrics read,
which waits for its one statement on the loop itself (``UsageStore.customer_usage_async``).
The one-event track, the batch track and the two metrics reads, in their plain form, skip
FastAPI's routing (:mod:`billing_ui.server.hot_route`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from enum import Enum
from typing import Annotated, Any, Final, ParamSpec, TypeVar, cast

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

from billing_ui.core import validation as V
from billing_ui.core._constants import IDEMPOTENCY_HEADER, LOCAL_SECRET_KEY
from billing_ui.core.errors import BillingOSMessage, FieldError, InvalidInputError
from billing_ui.core.metrics import CONTENT_TYPE
from billing_ui.core.models import (
    Bucket,
    CreateSessionTokenRequest,
    Customer,
    EntitlementsResponse,
    FeatureCheck,
    HealthStatus,
    SessionToken,
    SessionTrackUsageRequest,
    Success,
    TrackUsageBatchRequest,
    TrackUsageBatchResult,
    TrackUsageRequest,
    TrackUsageResult,
    UpsertCustomerRequest,
    UsageHistory,
    UsageMetricsResponse,
)
from billing_ui.server import batch_body, reads, tokens
from billing_ui.server.auth import (
    SecretKey,
    Session,
    SignedSession,
    refused_revoked,
    require_secret_key,
    require_session,
    verify_session,
)
from billing_ui.server.bodies import JsonBody, RawJsonBody, json_body, parse, raw_json_body
from billing_ui.server.clock import Clock, SystemClock, from_micros
from billing_ui.server.errors import (
    ApiProblem,
    customer_not_found,
    install_error_handlers,
    invalid_input,
)
from billing_ui.server.group_commit import GroupCommit
from billing_ui.server.hot_route import Hot, HotRoute
from billing_ui.server.observability import ObservabilityMiddleware, ServerMetrics, count_tracks
from billing_ui.server.openapi import build_openapi, error_responses, request_body
from billing_ui.server.options import CorsPolicy, WireOptions
from billing_ui.server.plans import Plans
from billing_ui.server.service import BillingService, TrackCommand, Tracked
from billing_ui.server.store import UsageStore
from billing_ui.server.tokens import SessionClaims
from billing_ui.server.urls import strict_utf8_url

log = logging.getLogger("billing_ui.server")

_REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    CreateSessionTokenRequest,
    TrackUsageRequest,
    TrackUsageBatchRequest,
    SessionTrackUsageRequest,
    UpsertCustomerRequest,
)
P = ParamSpec("P")
T = TypeVar("T")
_BACKEND: list[str | Enum] = ["backend (secret key)"]
_FRONTEND: list[str | Enum] = ["frontend (session token)"]
_OPERATIONS: list[str | Enum] = ["operations"]
TRACK_PATH = "/v1/usage/track"
TRACK_BATCH_PATH = "/v1/usage/track-batch"
METRICS_PATH = "/v1/usage/metrics"
SESSION_METRICS_PATH = "/v1/features/usage-metrics"
_NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)
"""FastAPI's own OpenTelemetry (recent versions) off: it asks the global OTel providers
whether to trace on every request, a cost on the hottest path of a server that has its own
log records and Prometheus metrics (:mod:`billing_ui.server.observability`)."""


def create_app(
    *,
    store: UsageStore,
    plans: Plans,
    clock: Clock | None = None,
    api_key: str = LOCAL_SECRET_KEY,
    rate_limit_per_minute: int = 0,
    options: WireOptions | None = None,
    cors: CorsPolicy | None = None,
) -> FastAPI:
    """The billing API over ``store`` and ``plans``. The caller owns (and closes) the store.

    ``options``: departures from BillingOS (none by default); ``cors``: which browser origins
    may call (none by default; the CLI and ``running_server`` pick by the bound host)."""
    if not api_key:
        raise ValueError("api_key must not be empty")
    app = FastAPI(
        dependencies=[Depends(strict_utf8_url)],
        lifespan=_lifespan,
        title="billing_ui local billing server",
        version="1.0.0",
        description="A BillingOS-compatible billing API (SQLite or PostgreSQL). See docs/api.md.",
        **_NO_NATIVE_TELEMETRY,
    )
    app.state.service = BillingService(
        store,
        plans,
        clock or SystemClock(),
        rate_limit_per_minute=rate_limit_per_minute,
        options=options,
    )
    app.state.group_commit = GroupCommit(app.state.service)
    app.state.api_key = api_key
    app.state.metrics = ServerMetrics()
    app.state.metrics.watch_group_commit(app.state.group_commit)
    install_error_handlers(app)
    # innermost: the hot routes still get their log record, metrics and request id
    app.state.hot_route_served = Counter[str]()  # by path; read in-process by the tests
    app.add_middleware(HotRoute, routes_of=app, hot=_HOT_ROUTES, served=app.state.hot_route_served)
    # the request id (the log record's, the envelope's, x-request-id), log record, metrics
    app.add_middleware(ObservabilityMiddleware, metrics=app.state.metrics)
    (cors or CorsPolicy()).install(app)  # outermost: preflights never reach the routes
    _routes(app)
    app.openapi = lambda: build_openapi(app, _REQUEST_MODELS)  # type: ignore[method-assign]
    return app


PRUNE_INTERVAL_S = 3600.0
READY_TIMEOUT_S = 2.0


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Prune expired idempotency keys at start-up and every hour while serving, so a
    long-running server's key table holds about one day of keys; at the end, release the
    store's connections of this event loop (:meth:`UsageStore.close_async`)."""
    service: BillingService = app.state.service

    async def prune_forever() -> None:
        while True:
            try:
                await run_in_threadpool(service.prune_expired)
            except Exception:  # a locked or broken database must not kill the server
                log.exception("pruning idempotency keys failed")
            await asyncio.sleep(PRUNE_INTERVAL_S)

    task = asyncio.create_task(prune_forever())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await service.store.close_async()


# --- helpers ----------------------------------------------------------------------------
def _service(request: Request) -> BillingService:
    return cast(BillingService, request.app.state.service)


def _json(
    model: BaseModel,
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    include: set[str] | None = None,
    exclude: set[str] | None = None,
) -> Response:
    return Response(
        model.model_dump_json(by_alias=True, include=include, exclude=exclude),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _count_track(request: Request, tracked: Tracked) -> None:
    if tracked.data["duplicate"]:
        count_tracks(request, duplicate=1)
    else:
        count_tracks(request, recorded=1)


async def _read(request: Request, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A service read from an ``async`` route, off the event loop when it is a round trip."""
    return await reads.read(_service(request).store, call, *args, **kwargs)


async def _track(request: Request, cmd: TrackCommand) -> Response:
    """One track: counted against the rate limit on the event loop, then recorded with the
    other tracks that arrive meanwhile, in one transaction (group commit:
    :mod:`billing_ui.server.group_commit`)."""
    headers = _service(request).admit(cmd.customer_id)
    writer: GroupCommit = request.app.state.group_commit
    tracked = await writer.record(cmd, headers)
    _count_track(request, tracked)
    return _raw(tracked.body(), headers=tracked.rate_headers)


def _raw(body: bytes, headers: dict[str, str] | None = None) -> Response:
    """An answer already encoded (the track routes: :mod:`billing_ui.server.wire_json`)."""
    return _RawJson(body, headers)


class _RawJson(Response):
    """A 200 with a JSON body already encoded: the headers ``Response`` would give it
    (``headers``' own, then ``content-length`` and ``content-type``, the same bytes), built
    directly instead of through ``init_headers``' general case (the track routes' answer,
    once per request). ``headers`` are rate-limit headers: never a length or a type."""

    media_type = "application/json"

    def __init__(self, body: bytes, headers: dict[str, str] | None = None) -> None:
        headers = headers or {}
        self.status_code = 200
        self.background = None
        self.body = body
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        raw.append((b"content-length", b"%d" % len(body)))
        raw.append(_JSON_TYPE)
        self.raw_headers = raw


_JSON_TYPE: Final = (b"content-type", b"application/json")


def _checked(check: Any, value: Any, field: str) -> Any:
    try:
        return check(value, field)
    except InvalidInputError as exc:
        raise invalid_input(list(exc.errors)) from None


def _idempotency_key(body_key: str | None, request: Request) -> str | None:
    """The body's key, else the ``Idempotency-Key`` header's (the client sends both)."""
    header = request.headers.get(IDEMPOTENCY_HEADER)
    if header is None:
        return body_key
    header_key = _checked(V.check_idempotency_key, header, IDEMPOTENCY_HEADER)
    if body_key is not None and body_key != header_key:
        raise invalid_input(
            [
                FieldError(
                    "idempotency_key",
                    "header_mismatch",
                    f"differs from the {IDEMPOTENCY_HEADER} header",
                )
            ]
        )
    return cast(str, header_key)


async def _usage_metrics(
    request: Request, customer_id: str, feature_key: str | None = None
) -> Response:
    """``GET /v1/usage/metrics`` once its secret key is checked (from the route, or from
    :class:`HotRoute` through :func:`_hot_usage_metrics`)."""
    cid = _checked(V.check_customer_id, customer_id, "customer_id")
    fkey = (
        None if feature_key is None else _checked(V.check_feature_key, feature_key, "feature_key")
    )
    metrics = await _service(request).metrics_async(cid, fkey)
    # BillingOS: {metrics, customer_id} here (external_user_id only on the session route).
    return _json(
        UsageMetricsResponse(metrics=metrics, customer_id=cid), exclude={"external_user_id"}
    )


async def _session_usage_metrics(
    request: Request, claims: SessionClaims, feature_key: str | None = None
) -> Response:
    """``GET /v1/features/usage-metrics`` once its token's signature and expiry are checked:
    the revocation check is part of the one read."""
    service = _service(request)
    cid = claims.external_user_id
    usage = await service.usage_now(cid, revoked_jti=claims.jti)
    if usage.read.revoked:
        raise refused_revoked()
    fkey = (
        None if feature_key is None else _checked(V.check_feature_key, feature_key, "feature_key")
    )
    metrics = service.metrics_of(usage, fkey)
    if metrics is None:  # BillingOS: an empty list, so hooks show "no usage yet"
        return _json(UsageMetricsResponse(metrics=[]), include={"metrics"})
    return _json(UsageMetricsResponse(metrics=metrics, customer_id=cid, external_user_id=cid))


async def _hot_usage_metrics(
    request: Request, customer_id: str, feature_key: str | None = None
) -> Response:
    """:class:`HotRoute`'s entry to ``GET /v1/usage/metrics``: the route's dependency as a
    plain call, then its code."""
    await require_secret_key(request)
    return await _usage_metrics(request, customer_id, feature_key)


async def _hot_session_usage_metrics(request: Request, feature_key: str | None = None) -> Response:
    """:class:`HotRoute`'s entry to ``GET /v1/features/usage-metrics``."""
    return await _session_usage_metrics(request, await verify_session(request), feature_key)


async def _hot_track_batch(request: Request) -> Response:
    """:class:`HotRoute`'s entry to ``POST /v1/usage/track-batch``: the route's dependencies
    (credential, then body) as plain calls, then its code in the thread pool, as FastAPI runs
    the route."""
    await require_secret_key(request)
    body = await raw_json_body(request)
    return await run_in_threadpool(_track_batch, request, body)


def _track_batch(request: Request, body: bytes) -> Response:
    """``POST /v1/usage/track-batch`` once authenticated and its body read (in a thread: the
    write waits for the disk)."""
    batch = _service(request).track_batch(batch_body.track_columns(body))
    recorded, duplicate, refused = batch.tally()
    count_tracks(request, recorded=recorded, duplicate=duplicate, refused=refused)
    return _raw(batch.body())


_HOT_ROUTES: Final = (
    Hot("POST", TRACK_PATH),
    Hot("POST", TRACK_BATCH_PATH, _hot_track_batch),
    Hot(
        "GET",
        METRICS_PATH,
        _hot_usage_metrics,
        query=frozenset({"customer_id", "feature_key"}),
        required=frozenset({"customer_id"}),
    ),
    Hot("GET", SESSION_METRICS_PATH, _hot_session_usage_metrics, query=frozenset({"feature_key"})),
)
"""The routes :class:`HotRoute` serves without FastAPI's routing, in their plainest form."""


_READ = error_responses(400, 401)
_TRACK = error_responses(400, 401, 404, 409, 429)
_ADMIN = error_responses(400, 401)

CustomerQuery = Annotated[str, Query(description="The app's own user id (external_user_id).")]
FeatureQuery = Annotated[str, Query(description="A feature key from the plans.")]
OptionalFeatureQuery = Annotated[str | None, Query(description="Only this feature.")]


def _routes(app: FastAPI) -> None:
    # -- session tokens --
    @app.post(
        "/v1/session-tokens",
        responses=_ADMIN,
        status_code=201,
        response_model=SessionToken,
        tags=_BACKEND,
        openapi_extra=request_body(CreateSessionTokenRequest),
    )
    async def create_session_token(_: SecretKey, body: JsonBody, request: Request) -> Response:
        """Mint a session token for one customer (what a browser may hold)."""
        req = parse(CreateSessionTokenRequest, body)
        service = _service(request)
        now = service.clock.now()
        token, claims = tokens.mint(
            request.app.state.api_key,
            external_user_id=req.externalUserId,
            now=now,
            ttl_s=req.expiresIn,
            external_organization_id=req.externalOrganizationId,
            allowed_operations=req.allowedOperations,
            metadata=req.metadata,
        )
        expires = from_micros(claims.exp * 1_000_000)
        return _json(
            SessionToken.model_validate({"sessionToken": token, "expiresAt": expires}), status=201
        )

    @app.delete("/v1/session-tokens/{jti}", responses=_ADMIN, response_model=Success, tags=_BACKEND)
    def revoke_session_token(_: SecretKey, jti: str, request: Request) -> Response:
        """Revoke a session token by its ``jti``; it is refused from then on."""
        if not tokens.JTI_PATTERN.fullmatch(jti):
            raise invalid_input([FieldError("jti", "pattern", "must be tok_ and 32 hex digits")])
        _service(request).revoke_token(jti)
        return _json(Success())

    # -- backend usage endpoints --
    @app.post(
        TRACK_PATH,
        responses=_TRACK,
        response_model=TrackUsageResult,
        tags=_BACKEND,
        openapi_extra=request_body(TrackUsageRequest),
    )
    async def track_usage(request: Request) -> Response:
        """Record usage of a feature by a customer (idempotent with ``idempotency_key``)."""
        # The hottest route: its credential and body are read by plain calls, in the order
        # the SecretKey and JsonBody dependencies would, without FastAPI's dependency
        # resolution (a fifth of the server's CPU per track).
        # The body is read by the lean one-pass reader (batch_body.track_command), with the
        # model's refusals.
        await require_secret_key(request)
        cmd = batch_body.track_command(await raw_json_body(request))
        key = _idempotency_key(cmd.idempotency_key, request)
        return await _track(request, cmd._replace(idempotency_key=key))

    @app.post(
        TRACK_BATCH_PATH,
        responses=_ADMIN,
        response_model=TrackUsageBatchResult,
        tags=_BACKEND,
        openapi_extra=request_body(TrackUsageBatchRequest),
    )
    def track_usage_batch(_: SecretKey, body: RawJsonBody, request: Request) -> Response:
        """(ext) Record up to 1,000 events in one transaction; each one succeeds or fails on
        its own, and each must carry its own idempotency key so a retried batch is safe."""
        return _track_batch(request, body)

    @app.get("/v1/usage/check", responses=_READ, response_model=FeatureCheck, tags=_BACKEND)
    async def check_usage(
        _: SecretKey, customer_id: CustomerQuery, feature_key: FeatureQuery, request: Request
    ) -> Response:
        """May this customer use this feature now?"""
        cid = _checked(V.check_customer_id, customer_id, "customer_id")
        fkey = _checked(V.check_feature_key, feature_key, "feature_key")
        return _json(await _read(request, _service(request).check, cid, fkey))

    @app.get(METRICS_PATH, responses=_READ, response_model=UsageMetricsResponse, tags=_BACKEND)
    async def usage_metrics(
        _: SecretKey,
        customer_id: CustomerQuery,
        request: Request,
        feature_key: OptionalFeatureQuery = None,
    ) -> Response:
        """Usage of the customer's metered features in their current periods."""
        return await _usage_metrics(request, customer_id, feature_key)

    @app.get(
        "/v1/usage/history",
        responses=error_responses(400, 401, 404),
        response_model=UsageHistory,
        tags=_BACKEND,
    )
    async def usage_history(
        _: SecretKey,
        customer_id: CustomerQuery,
        feature_key: FeatureQuery,
        request: Request,
        bucket: Annotated[Bucket | None, Query(description="hour or day")] = None,
    ) -> Response:
        """(ext) Usage per hour or day over the feature's current period, for charts."""
        cid = _checked(V.check_customer_id, customer_id, "customer_id")
        fkey = _checked(V.check_feature_key, feature_key, "feature_key")
        return _json(await _read(request, _service(request).history, cid, fkey, bucket))

    @app.put(
        "/v1/customers/{external_user_id}",
        responses=_ADMIN,
        response_model=Customer,
        tags=_BACKEND,
        openapi_extra=request_body(UpsertCustomerRequest),
    )
    def upsert_customer(
        _: SecretKey, external_user_id: str, body: JsonBody, request: Request
    ) -> Response:
        """(ext) Create a customer, or replace its products (local server only)."""
        cid = _checked(V.check_customer_id, external_user_id, "external_user_id")
        req = parse(UpsertCustomerRequest, body)
        customer = _service(request).upsert_customer(cid, req.products, req.status)
        products = [s.product_key for s in customer.subscriptions]
        status = customer.subscriptions[0].status if customer.subscriptions else None
        return _json(Customer(customer_id=cid, products=products, status=status))

    # -- session (browser) endpoints --
    @app.post(
        "/v1/features/track-usage",
        responses=_TRACK,
        response_model=TrackUsageResult,
        tags=_FRONTEND,
        openapi_extra=request_body(SessionTrackUsageRequest),
    )
    async def session_track_usage(request: Request) -> Response:
        """Record usage for the token's customer (``useTrackUsage``)."""
        claims = await require_session(request)  # as track_usage: plain calls, in order
        req = parse(SessionTrackUsageRequest, await json_body(request))
        key = _idempotency_key(req.idempotency_key, request)
        cid = claims.external_user_id
        if not await _read(request, _service(request).knows, cid):
            raise customer_not_found()  # BillingOS names no customer here: the token's
        return await _track(
            request, TrackCommand(cid, req.feature_key, req.quantity, key, req.metadata)
        )

    @app.get(
        SESSION_METRICS_PATH,
        responses=_READ,
        response_model=UsageMetricsResponse,
        tags=_FRONTEND,
    )
    async def session_usage_metrics(
        claims: SignedSession, request: Request, feature_key: OptionalFeatureQuery = None
    ) -> Response:
        """The token's customer's usage (``useUsageMetrics``). The revocation check is part
        of the one read (one round trip), and still refuses before the query is judged."""
        return await _session_usage_metrics(request, claims, feature_key)

    @app.get(
        "/v1/features/entitlements",
        responses=_READ,
        response_model=EntitlementsResponse,
        tags=_FRONTEND,
    )
    async def session_entitlements(claims: Session, request: Request) -> Response:
        """The features the token's customer has (``useFeatureEntitlements``)."""
        cid = claims.external_user_id
        ents = await _read(request, _service(request).entitlements_if_known, cid)
        if ents is None:  # BillingOS: an empty list
            return _json(EntitlementsResponse(entitlements=[]), include={"entitlements"})
        return _json(EntitlementsResponse(entitlements=ents, customer_id=cid, external_user_id=cid))

    @app.get("/v1/features/check", responses=_READ, response_model=FeatureCheck, tags=_FRONTEND)
    async def session_check(
        claims: Session, feature_key: FeatureQuery, request: Request
    ) -> Response:
        """May the token's customer use this feature now? (``useFeature``)"""
        fkey = _checked(V.check_feature_key, feature_key, "feature_key")
        check = await _read(
            request, _service(request).check_if_known, claims.external_user_id, fkey
        )
        if check is None:  # BillingOS: no access, and why
            unknown = FeatureCheck(
                feature_key=fkey, has_access=False, reason=BillingOSMessage.CUSTOMER_NOT_FOUND
            )
            return _json(unknown, include={"feature_key", "has_access", "reason"})
        return _json(check)

    # -- operations --
    @app.get(
        "/health", responses=error_responses(503), response_model=HealthStatus, tags=_OPERATIONS
    )
    async def health(request: Request) -> Response:
        """(ext) Liveness and database reachability; no credentials needed."""
        try:
            await _read(request, _service(request).ping)
        except Exception as exc:
            raise ApiProblem(
                503, "SYS_DATABASE_UNAVAILABLE", f"database unavailable: {exc}"
            ) from None
        return _json(HealthStatus(status="ok", database="ok"))

    @app.get("/healthz", tags=_OPERATIONS)
    async def healthz() -> Response:
        """(ext) Liveness: the process serves requests (the database is not asked)."""
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", responses=error_responses(503), tags=_OPERATIONS)
    async def readyz(request: Request) -> Response:
        """(ext) Readiness: the database answers a query within
        :data:`READY_TIMEOUT_S` seconds (in a worker thread: a stopped PostgreSQL must not
        hold up the event loop). 503 ``SYS_DATABASE_UNAVAILABLE`` otherwise."""
        try:
            await asyncio.wait_for(run_in_threadpool(_service(request).ping), READY_TIMEOUT_S)
        except Exception as exc:
            reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            raise ApiProblem(
                503, "SYS_DATABASE_UNAVAILABLE", f"database unavailable: {reason}"
            ) from None
        return Response(b'{"status":"ready","database":"ok"}', media_type="application/json")

    @app.get("/metrics", tags=_OPERATIONS, include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """(ext) Prometheus metrics (text format); no credentials, like /health: they hold
        counts and latencies, never ids or keys."""
        return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
