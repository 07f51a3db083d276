"""``BillingClient`` and ``AsyncBillingClient``: the billing API from Python.

Both are thin drivers over one implementation (:mod:`billing_ui.core._base_client`): each
public method validates nothing and decides nothing itself — it runs the shared operation,
doing only the I/O the operation asks for (send a request, sleep before a retry, get a session
token through a single flight). So the sync and async clients behave identically by
construction.

::

    from billing_ui.core import BillingClient

    with BillingClient() as billing:            # local server, or BILLINGOS_API_URL/_SECRET_KEY
        billing.track_usage(customer_id="user_1", feature_key="api_calls", quantity=1)
        user = billing.for_customer("user_1")
        print(user.get_usage_metrics())
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast

import httpx

from billing_ui.core import _constants as C
from billing_ui.core import validation as V
from billing_ui.core._base_client import (
    BaseBillingClient,
    Bucket,
    NeedSessionToken,
    Op,
    Send,
    Sleep,
    default_limits,
    shared_ssl_context,
)
from billing_ui.core.backends import Backend
from billing_ui.core.models import (
    BatchItemResult,
    Customer,
    FeatureCheck,
    FeatureEntitlement,
    HealthStatus,
    SessionToken,
    SubscriptionStatus,
    TrackUsageRequest,
    TrackUsageResult,
    UsageHistory,
    UsageMetric,
)

__all__ = ["AsyncBillingClient", "AsyncCustomerView", "BillingClient", "CustomerView"]

T = TypeVar("T")
K = TypeVar("K")

Events = Iterable[TrackUsageRequest | Mapping[str, Any]]


# --- single flights: one in-flight mint per customer, shared by concurrent callers --------
class _ThreadSingleFlight(Generic[K, T]):
    """Concurrent threads asking for the same key share one call and its outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[K, concurrent.futures.Future[T]] = {}

    def run(self, key: K, fn: Callable[[], T]) -> T:
        with self._lock:
            future = self._calls.get(key)
            leader = future is None
            if future is None:
                future = self._calls[key] = concurrent.futures.Future()
        if not leader:
            return future.result()
        try:
            result = fn()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result
        finally:
            with self._lock:
                del self._calls[key]


class _AsyncSingleFlight(Generic[K, T]):
    """Concurrent tasks asking for the same key share one call and its outcome. A waiter is
    not cancelled when the leader is: it takes over and calls again."""

    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Future[T]] = {}

    async def run(self, key: K, fn: Callable[[], Awaitable[T]]) -> T:
        while True:
            future = self._calls.get(key)
            if future is None:
                break
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                if not future.cancelled():
                    raise  # we were cancelled, not the leader
        future = asyncio.get_running_loop().create_future()
        self._calls[key] = future
        try:
            result = await fn()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(result)
            return result
        finally:
            if self._calls.get(key) is future:
                del self._calls[key]


# --- the sync client --------------------------------------------------------------------
class BillingClient(BaseBillingClient[httpx.Client]):
    """The billing API over ``httpx.Client`` (thread-safe; pooled keep-alive connections).

    Configuration, by argument or environment:

    * ``base_url`` — ``BILLINGOS_API_URL``, default the local server ``http://127.0.0.1:8700``.
    * ``api_key`` — the secret key, ``BILLINGOS_SECRET_KEY``; on a loopback URL the local
      server's known key is the default, anywhere else a missing key is an error.
    * ``timeout`` — seconds or an ``httpx.Timeout`` (default 10 s, 5 s to connect).
    * ``max_retries`` — retries after connection errors, timeouts, 408/409/429/5xx (default 2).
    * ``http_client`` — your own configured ``httpx.Client`` (proxies, certificates, event
      hooks); the client then does not close it.
    * ``backend`` — another billing service's adapter (see :mod:`billing_ui.core.backends`).
    * ``retry_initial_delay`` / ``retry_max_delay`` — backoff bounds in seconds (0.5 → 8);
      tuning knobs, mostly for tests.

    Every write is idempotent: ``track_usage`` sends one idempotency key on every attempt, so
    retries never count usage twice. Invalid arguments raise
    :class:`~billing_ui.core.errors.InvalidInputError` before any request.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        http_client: httpx.Client | None = None,
        backend: Backend | None = None,
        retry_initial_delay: float | None = None,
        retry_max_delay: float | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
            backend=backend,
            retry_initial_delay=retry_initial_delay,
            retry_max_delay=retry_max_delay,
        )

    def _make_http_client(self) -> httpx.Client:
        return httpx.Client(
            limits=default_limits(), timeout=self._config.timeout, verify=shared_ssl_context()
        )

    def _reset_credentials(self) -> None:
        super()._reset_credentials()
        self._mints: _ThreadSingleFlight[str, str] = _ThreadSingleFlight()

    # -- the driver: the only sync-specific logic
    def _run(self, op: Op[T]) -> T:
        try:
            effect = next(op)
            while True:
                if isinstance(effect, Send):
                    outcome: httpx.Response | httpx.RequestError
                    try:
                        outcome = self._http.send(effect.request)
                    except httpx.RequestError as exc:
                        outcome = exc
                    effect = op.send(outcome)
                elif isinstance(effect, Sleep):
                    time.sleep(effect.seconds)
                    effect = op.send(None)
                else:
                    effect = op.send(self._session_token(effect))
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            op.close()

    def _session_token(self, need: NeedSessionToken) -> str:
        cached = self._tokens.get(need.customer_id, self._clock(), stale=need.stale)
        if cached is not None:
            return cached
        customer = need.customer_id
        return self._mints.run(customer, lambda: self._run(self._op_mint_cached(customer)))

    # -- lifecycle
    def close(self) -> None:
        """Close the connection pool (unless it was passed in as ``http_client``)."""
        if self._owns_http:
            self._http.close()

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the API
    def track_usage(
        self,
        *,
        customer_id: str,
        feature_key: str,
        quantity: float,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TrackUsageResult:
        """Record ``quantity`` units of ``feature_key`` used by ``customer_id``.

        Give ``idempotency_key`` when the caller itself may repeat the call (a retried job, a
        double-clicked button): the same key is counted once, for 24 hours, and a repeat
        returns the original result with ``duplicate=True``. Without one the client makes a
        key for this call, which protects its own retries; if a retry finds that an earlier
        attempt of the same call did land (its response was lost), the result says
        ``duplicate=False``, because for the caller the event was recorded exactly once, now.

        Raises :class:`QuotaExceededError` when a hard limit refuses the usage (nothing is
        recorded), :class:`CustomerNotFoundError`, :class:`NotFoundError` (no active
        subscription with the feature).
        """
        return self._run(
            self._op_track_usage(customer_id, feature_key, quantity, metadata, idempotency_key)
        )

    def track_usage_batch(self, events: Events) -> list[BatchItemResult]:
        """Record many events (``TrackUsageRequest`` or dicts with the same fields) in as few
        requests as possible (``MAX_BATCH_SIZE`` events each). A local-server extension.

        Each event is applied on its own: one refused event (``BatchItemResult.error``) does not
        refuse the others. Events without an idempotency key get one, so retrying a request
        never counts an event twice. To retry a failed *call* yourself, give the events keys:
        generated keys live only as long as this call.
        """
        return self._run(self._op_track_usage_batch(events))

    def get_usage_metrics(
        self, *, customer_id: str, feature_key: str | None = None
    ) -> list[UsageMetric]:
        """Usage of each metered feature in its current period (``useUsageMetrics``),
        optionally of one feature only."""
        return self._run(self._op_usage_metrics(customer_id, feature_key))

    def get_entitlements(self, *, customer_id: str) -> list[FeatureEntitlement]:
        """The features the customer's subscriptions grant (``useFeatureEntitlements``).

        BillingOS serves these only to a session token: the client mints one for the customer
        with the secret key, caches it until shortly before it expires, and mints again once if
        the server says it expired or was revoked.
        """
        return self._run(self._op_entitlements(customer_id))

    def check_feature(self, *, customer_id: str, feature_key: str) -> FeatureCheck:
        """Whether the customer may use the feature now, and why not (``useFeature``)."""
        return self._run(self._op_check_feature(customer_id, feature_key))

    def get_usage_history(
        self, *, customer_id: str, feature_key: str, bucket: Bucket = "day"
    ) -> UsageHistory:
        """The feature's usage in the current period, per hour or day (local-server extension)."""
        return self._run(self._op_usage_history(customer_id, feature_key, bucket))

    def create_session_token(
        self,
        *,
        customer_id: str,
        expires_in: int = C.SESSION_TOKEN_TTL_S,
        external_organization_id: str | None = None,
        allowed_operations: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SessionToken:
        """Mint a session token for one customer (to hand to a browser-side SDK).
        ``expires_in`` is 60..86400 seconds."""
        return self._run(
            self._op_create_session_token(
                customer_id, expires_in, external_organization_id, allowed_operations, metadata
            )
        )

    def revoke_session_token(self, token_or_jti: str) -> None:
        """Revoke a session token, given whole or by its ``jti``."""
        return self._run(self._op_revoke_session_token(token_or_jti))

    def upsert_customer(
        self, *, customer_id: str, products: Sequence[str], status: SubscriptionStatus | None = None
    ) -> Customer:
        """Create a customer or re-subscribe it to ``products`` (local-server extension)."""
        return self._run(self._op_upsert_customer(customer_id, products, status))

    def health(self) -> HealthStatus:
        """The server's health (local-server extension)."""
        return self._run(self._op_health())

    def for_customer(self, customer_id: str) -> CustomerView:
        """This client bound to one customer: the same methods, without ``customer_id``."""
        return CustomerView(self, V.check_customer_id(customer_id))


# --- the async client -------------------------------------------------------------------
class AsyncBillingClient(BaseBillingClient[httpx.AsyncClient]):
    """The billing API over ``httpx.AsyncClient`` (asyncio). Same options and methods as
    :class:`BillingClient`, awaited; close it with ``await client.aclose()`` or
    ``async with``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        http_client: httpx.AsyncClient | None = None,
        backend: Backend | None = None,
        retry_initial_delay: float | None = None,
        retry_max_delay: float | None = None,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
            backend=backend,
            retry_initial_delay=retry_initial_delay,
            retry_max_delay=retry_max_delay,
        )

    def _make_http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            limits=default_limits(), timeout=self._config.timeout, verify=shared_ssl_context()
        )

    def _reset_credentials(self) -> None:
        super()._reset_credentials()
        self._mints: _AsyncSingleFlight[str, str] = _AsyncSingleFlight()

    # -- the driver: the only async-specific logic
    async def _run(self, op: Op[T]) -> T:
        try:
            effect = next(op)
            while True:
                if isinstance(effect, Send):
                    outcome: httpx.Response | httpx.RequestError
                    try:
                        outcome = await self._http.send(effect.request)
                    except httpx.RequestError as exc:
                        outcome = exc
                    effect = op.send(outcome)
                elif isinstance(effect, Sleep):
                    await asyncio.sleep(effect.seconds)
                    effect = op.send(None)
                else:
                    effect = op.send(await self._session_token(effect))
        except StopIteration as stop:
            return cast(T, stop.value)
        finally:
            op.close()

    async def _session_token(self, need: NeedSessionToken) -> str:
        cached = self._tokens.get(need.customer_id, self._clock(), stale=need.stale)
        if cached is not None:
            return cached
        customer = need.customer_id
        return await self._mints.run(customer, lambda: self._run(self._op_mint_cached(customer)))

    # -- lifecycle
    async def aclose(self) -> None:
        """Close the connection pool (unless it was passed in as ``http_client``)."""
        if self._owns_http:
            await self._http.aclose()

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the API (documented on BillingClient)
    async def track_usage(
        self,
        *,
        customer_id: str,
        feature_key: str,
        quantity: float,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TrackUsageResult:
        """See :meth:`BillingClient.track_usage`."""
        return await self._run(
            self._op_track_usage(customer_id, feature_key, quantity, metadata, idempotency_key)
        )

    async def track_usage_batch(self, events: Events) -> list[BatchItemResult]:
        """See :meth:`BillingClient.track_usage_batch`."""
        return await self._run(self._op_track_usage_batch(events))

    async def get_usage_metrics(
        self, *, customer_id: str, feature_key: str | None = None
    ) -> list[UsageMetric]:
        """See :meth:`BillingClient.get_usage_metrics`."""
        return await self._run(self._op_usage_metrics(customer_id, feature_key))

    async def get_entitlements(self, *, customer_id: str) -> list[FeatureEntitlement]:
        """See :meth:`BillingClient.get_entitlements`."""
        return await self._run(self._op_entitlements(customer_id))

    async def check_feature(self, *, customer_id: str, feature_key: str) -> FeatureCheck:
        """See :meth:`BillingClient.check_feature`."""
        return await self._run(self._op_check_feature(customer_id, feature_key))

    async def get_usage_history(
        self, *, customer_id: str, feature_key: str, bucket: Bucket = "day"
    ) -> UsageHistory:
        """See :meth:`BillingClient.get_usage_history`."""
        return await self._run(self._op_usage_history(customer_id, feature_key, bucket))

    async def create_session_token(
        self,
        *,
        customer_id: str,
        expires_in: int = C.SESSION_TOKEN_TTL_S,
        external_organization_id: str | None = None,
        allowed_operations: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SessionToken:
        """See :meth:`BillingClient.create_session_token`."""
        return await self._run(
            self._op_create_session_token(
                customer_id, expires_in, external_organization_id, allowed_operations, metadata
            )
        )

    async def revoke_session_token(self, token_or_jti: str) -> None:
        """See :meth:`BillingClient.revoke_session_token`."""
        return await self._run(self._op_revoke_session_token(token_or_jti))

    async def upsert_customer(
        self, *, customer_id: str, products: Sequence[str], status: SubscriptionStatus | None = None
    ) -> Customer:
        """See :meth:`BillingClient.upsert_customer`."""
        return await self._run(self._op_upsert_customer(customer_id, products, status))

    async def health(self) -> HealthStatus:
        """See :meth:`BillingClient.health`."""
        return await self._run(self._op_health())

    def for_customer(self, customer_id: str) -> AsyncCustomerView:
        """This client bound to one customer: the same methods, without ``customer_id``."""
        return AsyncCustomerView(self, V.check_customer_id(customer_id))


# --- customer views ---------------------------------------------------------------------
class CustomerView:
    """A :class:`BillingClient` bound to one customer (``client.for_customer("user_1")``).
    Cheap to create; shares the client's pool, retries and token cache."""

    __slots__ = ("client", "customer_id")

    def __init__(self, client: BillingClient, customer_id: str) -> None:
        self.client = client
        self.customer_id = customer_id

    def __repr__(self) -> str:
        return f"CustomerView({self.customer_id!r})"

    def track_usage(
        self,
        *,
        feature_key: str,
        quantity: float,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TrackUsageResult:
        return self.client.track_usage(
            customer_id=self.customer_id,
            feature_key=feature_key,
            quantity=quantity,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )

    def track_usage_batch(self, events: Events) -> list[BatchItemResult]:
        """Events may leave ``customer_id`` out; one naming another customer is refused."""
        return self.client._run(self.client._op_track_usage_batch(events, self.customer_id))

    def get_usage_metrics(self, *, feature_key: str | None = None) -> list[UsageMetric]:
        return self.client.get_usage_metrics(customer_id=self.customer_id, feature_key=feature_key)

    def get_entitlements(self) -> list[FeatureEntitlement]:
        return self.client.get_entitlements(customer_id=self.customer_id)

    def check_feature(self, *, feature_key: str) -> FeatureCheck:
        return self.client.check_feature(customer_id=self.customer_id, feature_key=feature_key)

    def get_usage_history(self, *, feature_key: str, bucket: Bucket = "day") -> UsageHistory:
        return self.client.get_usage_history(
            customer_id=self.customer_id, feature_key=feature_key, bucket=bucket
        )

    def create_session_token(self, *, expires_in: int = C.SESSION_TOKEN_TTL_S) -> SessionToken:
        return self.client.create_session_token(customer_id=self.customer_id, expires_in=expires_in)

    def upsert_customer(
        self, *, products: Sequence[str], status: SubscriptionStatus | None = None
    ) -> Customer:
        return self.client.upsert_customer(
            customer_id=self.customer_id, products=products, status=status
        )


class AsyncCustomerView:
    """An :class:`AsyncBillingClient` bound to one customer; see :class:`CustomerView`."""

    __slots__ = ("client", "customer_id")

    def __init__(self, client: AsyncBillingClient, customer_id: str) -> None:
        self.client = client
        self.customer_id = customer_id

    def __repr__(self) -> str:
        return f"AsyncCustomerView({self.customer_id!r})"

    async def track_usage(
        self,
        *,
        feature_key: str,
        quantity: float,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TrackUsageResult:
        return await self.client.track_usage(
            customer_id=self.customer_id,
            feature_key=feature_key,
            quantity=quantity,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )

    async def track_usage_batch(self, events: Events) -> list[BatchItemResult]:
        """Events may leave ``customer_id`` out; one naming another customer is refused."""
        return await self.client._run(self.client._op_track_usage_batch(events, self.customer_id))

    async def get_usage_metrics(self, *, feature_key: str | None = None) -> list[UsageMetric]:
        return await self.client.get_usage_metrics(
            customer_id=self.customer_id, feature_key=feature_key
        )

    async def get_entitlements(self) -> list[FeatureEntitlement]:
        return await self.client.get_entitlements(customer_id=self.customer_id)

    async def check_feature(self, *, feature_key: str) -> FeatureCheck:
        return await self.client.check_feature(
            customer_id=self.customer_id, feature_key=feature_key
        )

    async def get_usage_history(self, *, feature_key: str, bucket: Bucket = "day") -> UsageHistory:
        return await self.client.get_usage_history(
            customer_id=self.customer_id, feature_key=feature_key, bucket=bucket
        )

    async def create_session_token(
        self, *, expires_in: int = C.SESSION_TOKEN_TTL_S
    ) -> SessionToken:
        return await self.client.create_session_token(
            customer_id=self.customer_id, expires_in=expires_in
        )

    async def upsert_customer(
        self, *, products: Sequence[str], status: SubscriptionStatus | None = None
    ) -> Customer:
        return await self.client.upsert_customer(
            customer_id=self.customer_id, products=products, status=status
        )
