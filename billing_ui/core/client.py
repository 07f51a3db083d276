"""``BillingClient`` and ``AsyncBillingClient``: the billing API from Python.

Both are thin drivers over one implementation (:mod:`billing_ui.core._base_client`). Every
public method is made from the operation's one declaration (:mod:`billing_ui.core.operations`)
and runs it through the one loop, doing only the I/O it asks for (send a request, sleep before
a retry, get a session token through a single flight). So the sync and async clients, and their
customer views, behave identically and have the same parameters by construction.

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
from collections.abc import Awaitable, Callable
from typing import ClassVar, Generic, Self, TypeVar, cast

import httpx

from billing_ui.core import operations as ops
from billing_ui.core import validation as V
from billing_ui.core._base_client import (
    BaseBillingClient,
    HttpT,
    NeedSessionToken,
    Op,
    default_limits,
    drive,
    run_blocking,
    shared_ssl_context,
)
from billing_ui.core._transport import send_gated
from billing_ui.core.operations import method

__all__ = ["AsyncBillingClient", "AsyncCustomerView", "BillingClient", "CustomerView"]

T = TypeVar("T")
K = TypeVar("K")


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


# --- the operations, once for both clients ----------------------------------------------
class _Api(BaseBillingClient[HttpT]):
    """Every operation, one line each (declared in :mod:`billing_ui.core.operations`); a sync
    client's return results, an async client's return coroutines."""

    _http_class: ClassVar[type[httpx.Client] | type[httpx.AsyncClient]]

    def _make_http_client(self) -> HttpT:
        http = self._http_class(
            limits=default_limits(), timeout=self._config.timeout, verify=shared_ssl_context()
        )
        return cast(HttpT, http)

    track_usage = method(ops.TRACK_USAGE)
    track_usage_batch = method(ops.TRACK_USAGE_BATCH)
    get_usage_metrics = method(ops.USAGE_METRICS)
    get_entitlements = method(ops.ENTITLEMENTS)
    check_feature = method(ops.CHECK_FEATURE)
    get_usage_history = method(ops.USAGE_HISTORY)
    create_session_token = method(ops.CREATE_SESSION_TOKEN)
    revoke_session_token = method(ops.REVOKE_SESSION_TOKEN)
    upsert_customer = method(ops.UPSERT_CUSTOMER)
    health = method(ops.HEALTH)


# --- the sync client --------------------------------------------------------------------
class BillingClient(_Api[httpx.Client]):
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

    _http_class = httpx.Client

    def _reset_credentials(self) -> None:
        super()._reset_credentials()
        self._mints: _ThreadSingleFlight[str, str] = _ThreadSingleFlight()

    # -- the effects, done by blocking (drive() never suspends here)
    def _run(self, op: Op[T]) -> T:
        return run_blocking(drive(op, self))

    async def _send_request(self, request: httpx.Request) -> httpx.Response:
        return self._http.send(request)

    async def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def _session_token(self, need: NeedSessionToken) -> str:
        cached = self._tokens.get(need.customer_id, self._clock(), stale=need.stale)
        if cached is not None:
            return cached
        customer = need.customer_id
        return self._mints.run(customer, lambda: self._run(ops.mint_cached(self, customer)))

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

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def for_customer(self, customer_id: str) -> CustomerView:
        """This client bound to one customer: the same methods, without ``customer_id``."""
        return CustomerView(self, V.check_customer_id(customer_id))


# --- the async client -------------------------------------------------------------------
class AsyncBillingClient(_Api[httpx.AsyncClient]):
    """The billing API over ``httpx.AsyncClient`` (asyncio). Same options and methods as
    :class:`BillingClient`, awaited; close it with ``await client.aclose()`` or
    ``async with``."""

    _is_async = True
    _http_class = httpx.AsyncClient

    def _reset_credentials(self) -> None:
        super()._reset_credentials()
        self._mints: _AsyncSingleFlight[str, str] = _AsyncSingleFlight()

    # -- the effects, awaited
    async def _run(self, op: Op[T]) -> T:
        return await drive(op, self)

    async def _send_request(self, request: httpx.Request) -> httpx.Response:
        return await send_gated(self._http, request)  # see _transport.py: httpcore#1093

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _session_token(self, need: NeedSessionToken) -> str:
        cached = self._tokens.get(need.customer_id, self._clock(), stale=need.stale)
        if cached is not None:
            return cached
        customer = need.customer_id
        return await self._mints.run(customer, lambda: self._run(ops.mint_cached(self, customer)))

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

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def for_customer(self, customer_id: str) -> AsyncCustomerView:
        """This client bound to one customer: the same methods, without ``customer_id``."""
        return AsyncCustomerView(self, V.check_customer_id(customer_id))


# --- customer views ---------------------------------------------------------------------
class CustomerView(ops.View[BillingClient]):
    """A :class:`BillingClient` bound to one customer (``client.for_customer("user_1")``)."""

    __slots__ = ()


class AsyncCustomerView(ops.View[AsyncBillingClient]):
    """An :class:`AsyncBillingClient` bound to one customer; see :class:`CustomerView`."""

    __slots__ = ()
