"""Every operation of the billing API, declared once — and the four public surfaces made from it.

An operation is an :class:`Operation`: its :class:`~billing_ui.core.backends.Endpoint` (method,
path, credential, request and response models, retryable / idempotent) and one generator
function that validates the arguments, builds the call and reads the answer, yielding its I/O as
typed effects (:mod:`billing_ui.core._base_client`). One runner executes it (``_run``: the sync
and async clients drive the same loop, :func:`~billing_ui.core._base_client.drive`).

The public methods are descriptors made from the declaration, one line each:

* :class:`method` — ``BillingClient.track_usage`` returns the result,
  ``AsyncBillingClient.track_usage`` a coroutine;
* :class:`bound_method` — ``client.for_customer(id).track_usage`` (a :class:`View`), the same
  without ``customer_id``.

Their signatures are the generator's (``ParamSpec``), so mypy and IDEs see every parameter
with its type and default, and the four surfaces cannot drift. Adding an operation is one
declaration here, one line per surface, and its test.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

import httpx

from billing_ui.core import _constants as C
from billing_ui.core import metrics
from billing_ui.core import validation as V
from billing_ui.core._base_client import (
    BaseBillingClient,
    Op,
    own_replay,
    prepare_batch,
    track_request,
    validated,
)
from billing_ui.core.backends import Endpoint
from billing_ui.core.errors import InvalidInputError
from billing_ui.core.models import (
    BatchItemResult,
    Bucket,
    CreateSessionTokenRequest,
    Customer,
    EntitlementsResponse,
    FeatureCheck,
    FeatureEntitlement,
    HealthStatus,
    SessionToken,
    SubscriptionStatus,
    Success,
    TrackUsageBatchRequest,
    TrackUsageBatchResult,
    TrackUsageRequest,
    TrackUsageResult,
    UpsertCustomerRequest,
    UsageHistory,
    UsageMetric,
    UsageMetricsResponse,
)

if TYPE_CHECKING:
    from billing_ui.core.client import AsyncBillingClient, BillingClient

P = ParamSpec("P")
Q = ParamSpec("Q")
R = TypeVar("R")
T = TypeVar("T")

Events = Iterable[TrackUsageRequest | Mapping[str, Any]]
"""``TrackUsageRequest`` objects or dicts with the same fields."""


def _itself(value: T) -> T:
    return value


def _nothing(value: object) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Operation(Generic[P, R]):
    """One operation: where it goes (``endpoint``) and what it does (``run``, a generator
    function taking the client first). ``customer_bound`` operations take ``customer_id`` second
    and exist on the customer views too."""

    endpoint: Endpoint[Any, R]
    run: Callable[Concatenate[BaseBillingClient[Any], P], Op[R]]
    customer_bound: bool = True

    @property
    def name(self) -> str:
        return self.endpoint.name


# --- the declarations -------------------------------------------------------------------
def _track_body(event: TrackUsageRequest) -> dict[str, Any]:
    # Built by hand rather than model_dump(): this runs once per tracked event, and only set
    # optional fields are sent (BillingOS rejects unknown fields, and null is not "absent").
    body: dict[str, Any] = {
        "customer_id": event.customer_id,
        "feature_key": event.feature_key,
        "quantity": event.quantity,
    }
    if event.idempotency_key is not None:
        body["idempotency_key"] = event.idempotency_key
    if event.metadata is not None:
        body["metadata"] = event.metadata
    return body


_TRACK_USAGE_AT = Endpoint(
    "track_usage",
    "POST",
    "/v1/usage/track",
    "secret",
    TrackUsageRequest,
    TrackUsageResult,
    _itself,
    idempotent=True,  # one idempotency key on every attempt
)


def _track_usage(
    client: BaseBillingClient[Any],
    customer_id: str,
    *,
    feature_key: str,
    quantity: float,
    metadata: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Op[TrackUsageResult]:
    """Record ``quantity`` units of ``feature_key`` used by ``customer_id``.

    Give ``idempotency_key`` when the caller itself may repeat the call (a retried job, a
    double-clicked button): the same key is counted once, for 24 hours, and a repeat returns
    the original result with ``duplicate=True``. Without one the client makes a key for this
    call, which protects its own retries; if a retry finds that an earlier attempt of the same
    call did land (its response was lost), the result says ``duplicate=False``, because for the
    caller the event was recorded exactly once, now.

    Raises :class:`QuotaExceededError` when a hard limit refuses the usage (nothing is
    recorded), :class:`CustomerNotFoundError`, :class:`NotFoundError` (no active subscription
    with the feature).
    """
    request, generated = track_request(
        customer_id, feature_key, quantity, metadata, idempotency_key
    )
    headers = {C.IDEMPOTENCY_HEADER: str(request.idempotency_key)}
    call = client.backend.build(_TRACK_USAGE_AT, json=_track_body(request), headers=headers)
    return own_replay((yield from client._execute(call)), generated)


TRACK_USAGE = Operation(_TRACK_USAGE_AT, _track_usage)


_TRACK_USAGE_BATCH_AT = Endpoint(
    "track_usage_batch",
    "POST",
    "/v1/usage/track-batch",
    "secret",
    TrackUsageBatchRequest,
    TrackUsageBatchResult,
    lambda body: body.results,
)


def _track_usage_batch(client: BaseBillingClient[Any], events: Events) -> Op[list[BatchItemResult]]:
    """Record many events in as few requests as possible (``MAX_BATCH_SIZE`` events each). A
    local-server extension.

    Each event is applied on its own: one refused event (``BatchItemResult.error``) does not
    refuse the others. Events without an idempotency key get one, so retrying a request never
    counts an event twice. To retry a failed *call* yourself, give the events keys: generated
    keys live only as long as this call.
    """
    return (yield from _batch(client, events, None))


def _bound_batch(
    client: BaseBillingClient[Any], customer_id: str, events: Events
) -> Op[list[BatchItemResult]]:
    """Record many events of this customer (see ``track_usage_batch``): events may leave
    ``customer_id`` out; one naming another customer is refused."""
    return (yield from _batch(client, events, customer_id))


def _batch(
    client: BaseBillingClient[Any], events: object, bound_customer: str | None
) -> Op[list[BatchItemResult]]:
    prepared = prepare_batch(events, bound_customer)
    size = max(1, client.backend.max_batch_size)
    results: list[BatchItemResult] = []
    for offset in range(0, len(prepared), size):
        chunk = prepared[offset : offset + size]
        # Every event carries its own key in the body; no batch-level header, because one key
        # cannot describe a batch that the server applies event by event.
        body = {"events": [_track_body(event) for event, _ in chunk]}
        call = client.backend.build(_TRACK_USAGE_BATCH_AT, json=body)
        items = yield from client._execute(call)
        metrics.count_batch(items, len(chunk))  # per event (the call's status counts none)
        for item in items:
            generated = 0 <= item.index < len(chunk) and chunk[item.index][1]
            update: dict[str, Any] = {"index": offset + item.index}
            if item.result is not None and generated and item.result.duplicate:
                update["result"] = own_replay(item.result, True)
            results.append(item.model_copy(update=update))
    return results


TRACK_USAGE_BATCH = Operation(_TRACK_USAGE_BATCH_AT, _track_usage_batch, customer_bound=False)
BOUND_TRACK_USAGE_BATCH = Operation(_TRACK_USAGE_BATCH_AT, _bound_batch)
"""The batch on a customer view: the view's customer fills events that leave it out."""


_USAGE_METRICS_AT = Endpoint(
    "get_usage_metrics",
    "GET",
    "/v1/usage/metrics",
    "secret",
    None,
    UsageMetricsResponse,
    lambda body: body.metrics,
)


def _get_usage_metrics(
    client: BaseBillingClient[Any], customer_id: str, *, feature_key: str | None = None
) -> Op[list[UsageMetric]]:
    """Usage of each metered feature in its current period (``useUsageMetrics``), optionally
    of one feature only."""
    customer = V.check_customer_id(customer_id, "customer_id")
    key = None if feature_key is None else V.check_feature_key(feature_key, "feature_key")
    params = {"customer_id": customer} | ({} if key is None else {"feature_key": key})
    metrics = yield from client._execute(client.backend.build(_USAGE_METRICS_AT, params=params))
    # BillingOS skips the filter when its (unscoped) feature lookup fails and returns every
    # metric, so the filter is applied here too.
    return metrics if key is None else [m for m in metrics if m.feature_key == key]


USAGE_METRICS = Operation(_USAGE_METRICS_AT, _get_usage_metrics)


_ENTITLEMENTS_AT = Endpoint(
    "get_entitlements",
    "GET",
    "/v1/features/entitlements",
    "session",
    None,
    EntitlementsResponse,
    lambda body: body.entitlements,
)


def _get_entitlements(
    client: BaseBillingClient[Any], customer_id: str
) -> Op[list[FeatureEntitlement]]:
    """The features the customer's subscriptions grant (``useFeatureEntitlements``).

    BillingOS serves these only to a session token: the client mints one for the customer
    with the secret key, caches it until shortly before it expires, and mints again once if
    the server says it expired or was revoked.
    """
    customer = V.check_customer_id(customer_id, "customer_id")
    call = client.backend.build(_ENTITLEMENTS_AT, customer_id=customer)
    return (yield from client._execute(call))


ENTITLEMENTS = Operation(_ENTITLEMENTS_AT, _get_entitlements)


_CHECK_FEATURE_AT = Endpoint(
    "check_feature", "GET", "/v1/usage/check", "secret", None, FeatureCheck, _itself
)


def _check_feature(
    client: BaseBillingClient[Any], customer_id: str, *, feature_key: str
) -> Op[FeatureCheck]:
    """Whether the customer may use the feature now, and why not (``useFeature``)."""
    params = {
        "customer_id": V.check_customer_id(customer_id, "customer_id"),
        "feature_key": V.check_feature_key(feature_key, "feature_key"),
    }
    return (yield from client._execute(client.backend.build(_CHECK_FEATURE_AT, params=params)))


CHECK_FEATURE = Operation(_CHECK_FEATURE_AT, _check_feature)


_USAGE_HISTORY_AT = Endpoint(
    "get_usage_history", "GET", "/v1/usage/history", "secret", None, UsageHistory, _itself
)


def _get_usage_history(
    client: BaseBillingClient[Any], customer_id: str, *, feature_key: str, bucket: Bucket = "day"
) -> Op[UsageHistory]:
    """The feature's usage in the current period, per hour or day (local-server extension)."""
    if bucket not in ("hour", "day"):
        raise InvalidInputError.single("bucket", "choice", "must be 'hour' or 'day'")
    params = {
        "customer_id": V.check_customer_id(customer_id, "customer_id"),
        "feature_key": V.check_feature_key(feature_key, "feature_key"),
        "bucket": bucket,
    }
    return (yield from client._execute(client.backend.build(_USAGE_HISTORY_AT, params=params)))


USAGE_HISTORY = Operation(_USAGE_HISTORY_AT, _get_usage_history)


_CREATE_SESSION_TOKEN_AT = Endpoint(
    "create_session_token",
    "POST",
    "/v1/session-tokens",
    "secret",
    CreateSessionTokenRequest,
    SessionToken,
    _itself,
    idempotent=False,  # a retry may mint a second token: harmless, the first expires
)


def _create_session_token(
    client: BaseBillingClient[Any],
    customer_id: str,
    *,
    expires_in: int = C.SESSION_TOKEN_TTL_S,
    external_organization_id: str | None = None,
    allowed_operations: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Op[SessionToken]:
    """Mint a session token for one customer (to hand to a browser-side SDK).
    ``expires_in`` is 60..86400 seconds."""
    request = validated(
        CreateSessionTokenRequest,
        {
            "externalUserId": customer_id,
            "externalOrganizationId": external_organization_id,
            "allowedOperations": allowed_operations,
            "expiresIn": expires_in,
            "metadata": metadata,
        },
        rename=_SESSION_TOKEN_FIELDS,
    )
    body = request.model_dump(mode="json", exclude_none=True)
    return (yield from client._execute(client.backend.build(_CREATE_SESSION_TOKEN_AT, json=body)))


def mint_cached(client: BaseBillingClient[Any], customer_id: str) -> Op[str]:
    """Mint a session token for ``customer_id`` and cache it (run by the client's single
    flight, so concurrent callers for one customer share this one mint)."""
    started = client._clock()
    minted = yield from _create_session_token(client, customer_id)
    info = client.backend.session_token_info(minted.session_token)
    if info is not None:
        lifetime = info.lifetime
    else:  # a token we cannot read: trust expiresAt against our own wall clock
        lifetime = max(0.0, minted.expires_at.timestamp() - time.time())
    client._tokens.put(
        customer_id,
        minted.session_token,
        jti=info.jti if info is not None else None,
        refresh_at=client._tokens.refresh_at(started, lifetime),
    )
    return minted.session_token


_SESSION_TOKEN_FIELDS = {
    "externalUserId": "customer_id",
    "externalOrganizationId": "external_organization_id",
    "allowedOperations": "allowed_operations",
    "expiresIn": "expires_in",
}

CREATE_SESSION_TOKEN = Operation(_CREATE_SESSION_TOKEN_AT, _create_session_token)


_REVOKE_SESSION_TOKEN_AT = Endpoint(
    "revoke_session_token",
    "DELETE",
    "/v1/session-tokens/{jti}",
    "secret",
    None,
    Success,
    _nothing,
)


def _revoke_session_token(client: BaseBillingClient[Any], token_or_jti: str) -> Op[None]:
    """Revoke a session token, given whole or by its ``jti``."""
    if not isinstance(token_or_jti, str):
        raise InvalidInputError.single(
            "token_or_jti", "type", f"must be a string, got {type(token_or_jti).__name__}"
        )
    info = client.backend.session_token_info(token_or_jti)
    # Not a readable token: then it is a jti, held to the rules of any short key.
    jti = info.jti if info is not None else V.check_idempotency_key(token_or_jti, "token_or_jti")
    assert jti is not None
    call = client.backend.build(_REVOKE_SESSION_TOKEN_AT, path_args={"jti": jti})
    yield from client._execute(call)
    client._tokens.discard(jti=jti)


REVOKE_SESSION_TOKEN = Operation(
    _REVOKE_SESSION_TOKEN_AT, _revoke_session_token, customer_bound=False
)


_UPSERT_CUSTOMER_AT = Endpoint(
    "upsert_customer",
    "PUT",
    "/v1/customers/{external_user_id}",
    "secret",
    UpsertCustomerRequest,
    Customer,
    _itself,
)


def _upsert_customer(
    client: BaseBillingClient[Any],
    customer_id: str,
    *,
    products: Sequence[str],
    status: SubscriptionStatus | None = None,
) -> Op[Customer]:
    """Create a customer or re-subscribe it to ``products`` (local-server extension)."""
    customer = V.check_customer_id(customer_id, "customer_id")
    request = validated(UpsertCustomerRequest, {"products": products, "status": status})
    call = client.backend.build(
        _UPSERT_CUSTOMER_AT,
        path_args={"external_user_id": customer},
        json=request.model_dump(mode="json", exclude_none=True),
    )
    return (yield from client._execute(call))


UPSERT_CUSTOMER = Operation(_UPSERT_CUSTOMER_AT, _upsert_customer)


_HEALTH_AT = Endpoint("health", "GET", "/health", "none", None, HealthStatus, _itself)


def _health(client: BaseBillingClient[Any]) -> Op[HealthStatus]:
    """The server's health (local-server extension)."""
    return (yield from client._execute(client.backend.build(_HEALTH_AT)))


HEALTH = Operation(_HEALTH_AT, _health, customer_bound=False)

OPERATIONS: tuple[Operation[Any, Any], ...] = (
    TRACK_USAGE,
    TRACK_USAGE_BATCH,
    USAGE_METRICS,
    ENTITLEMENTS,
    CHECK_FEATURE,
    USAGE_HISTORY,
    CREATE_SESSION_TOKEN,
    REVOKE_SESSION_TOKEN,
    UPSERT_CUSTOMER,
    HEALTH,
)
"""Every operation, in the order the docs list them."""


# --- the surfaces -----------------------------------------------------------------------
class _Surface(Generic[P, R]):
    """A public method made from an operation (see the module docstring): it runs the
    operation on the client (with the view's customer first, when ``bound``), returning the
    result from a sync client and a coroutine from an async one."""

    bound = False

    def __init__(self, operation: Operation[Any, R]) -> None:
        self.operation = operation
        self.__doc__ = operation.run.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        if name != self.operation.name:
            raise TypeError(f"{owner.__name__}.{name} must be named {self.operation.name}")

    @functools.cached_property
    def _signature(self) -> inspect.Signature:
        """The generator's signature without the client (and the view's customer)."""
        signature = inspect.signature(self.operation.run)
        params = list(signature.parameters.values())[2 if self.bound else 1 :]
        return signature.replace(parameters=params)

    def _make(self, client: Any, leading: tuple[str, ...]) -> Callable[..., Any]:
        run = self.operation.run
        call: Callable[..., Any]
        if client._is_async:

            async def call(*args: Any, **kwargs: Any) -> Any:
                return await client._run(run(client, *leading, *args, **kwargs))
        else:

            def call(*args: Any, **kwargs: Any) -> Any:
                return client._run(run(client, *leading, *args, **kwargs))

        call.__name__ = call.__qualname__ = self.operation.name
        call.__doc__ = run.__doc__
        call.__signature__ = self._signature  # type: ignore[union-attr]
        return call


class method(_Surface[P, R]):
    """``BillingClient.<operation>`` / ``AsyncBillingClient.<operation>``."""

    def __init__(self, operation: Operation[P, R]) -> None:
        super().__init__(operation)

    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: BaseBillingClient[httpx.Client], owner: type) -> Callable[P, R]: ...
    @overload
    def __get__(
        self, obj: BaseBillingClient[httpx.AsyncClient], owner: type
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __get__(self, obj: BaseBillingClient[Any] | None, owner: type) -> Any:
        if obj is None:
            return self
        bound = obj.__dict__[self.operation.name] = self._make(obj, ())  # made once per client
        return bound


class bound_method(_Surface[Q, R]):
    """``CustomerView.<operation>`` / ``AsyncCustomerView.<operation>``: without
    ``customer_id``."""

    bound = True

    def __init__(self, operation: Operation[Concatenate[str, Q], R]) -> None:
        super().__init__(operation)

    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: View[BillingClient], owner: type) -> Callable[Q, R]: ...
    @overload
    def __get__(
        self, obj: View[AsyncBillingClient], owner: type
    ) -> Callable[Q, Coroutine[Any, Any, R]]: ...
    def __get__(self, obj: View[Any] | None, owner: type) -> Any:
        return self if obj is None else self._make(obj.client, (obj.customer_id,))


ClientT = TypeVar("ClientT", "BillingClient", "AsyncBillingClient")


class View(Generic[ClientT]):
    """A client bound to one customer (``client.for_customer("user_1")``): the customer-bound
    operations without ``customer_id``. Cheap to create; shares the client's pool, retries and
    token cache."""

    __slots__ = ("client", "customer_id")
    client: ClientT
    customer_id: str

    def __init__(self, client: ClientT, customer_id: str) -> None:
        self.client = client
        self.customer_id = customer_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.customer_id!r})"

    track_usage = bound_method(TRACK_USAGE)
    track_usage_batch = bound_method(BOUND_TRACK_USAGE_BATCH)
    get_usage_metrics = bound_method(USAGE_METRICS)
    get_entitlements = bound_method(ENTITLEMENTS)
    check_feature = bound_method(CHECK_FEATURE)
    get_usage_history = bound_method(USAGE_HISTORY)
    create_session_token = bound_method(CREATE_SESSION_TOKEN)
    upsert_customer = bound_method(UPSERT_CUSTOMER)
