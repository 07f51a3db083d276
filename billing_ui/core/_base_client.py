"""The one implementation behind :class:`BillingClient` and :class:`AsyncBillingClient`.

Everything but the I/O lives here: configuration, validation, request building, credentials,
session-token caching policy, retries and backoff, idempotency keys, response parsing and
error mapping. Each client operation (declared in :mod:`billing_ui.core.operations`) is a
generator that *describes* its I/O instead of doing it — it yields a typed effect and is resumed
with the effect's outcome (through :func:`send`, :func:`sleep` and :func:`session_token`, which
give each outcome its type):

* :class:`Send` — send this ``httpx.Request``; resumed with the ``httpx.Response`` or with the
  ``httpx.RequestError`` that sending raised (as a value, so the retry loop here decides).
* :class:`Sleep` — wait this many seconds before the next attempt.
* :class:`NeedSessionToken` — a session token for this customer (dropping ``stale``, which
  the server refused); resumed with the token.

One loop, :func:`drive`, runs them for both clients: it is a coroutine over an
:class:`EffectHandler`. The async client awaits it; the sync client's handler blocks instead of
awaiting, so its ``drive`` coroutine never suspends and is run to completion by
:func:`run_blocking`. This is the "sans-I/O" pattern (h11, h2): one copy of every decision and
of the loop, so the two clients cannot drift, and the decisions are testable without a network.

Why the session-token *single flight* is in the drivers, not here: sharing one in-flight mint
between concurrent callers needs the I/O model's own primitive (a thread-safe future for
threads, an asyncio future for tasks). Here is the policy — when a cached token is still good,
when to drop it, when to mint again — in :class:`SessionTokenCache`.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import json
import logging
import os
import ssl
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar, Generic, Protocol, Self, TypeAlias, TypedDict, TypeVar, Unpack

import httpx
from pydantic import BaseModel, ValidationError

from billing_ui.core import _constants as C
from billing_ui.core import metrics
from billing_ui.core import validation as V
from billing_ui.core._retry import backoff_delay, is_retryable_exception
from billing_ui.core._retry import retry_delay as _retry_delay
from billing_ui.core.backends import Backend, BillingOSBackend, Call
from billing_ui.core.errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    BillingError,
    FieldError,
    InvalidInputError,
    PoolExhaustedError,
)
from billing_ui.core.logs import call_fields, log_upstream, upstream_log
from billing_ui.core.models import TrackUsageRequest, TrackUsageResult

log = logging.getLogger("billing_ui.core")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)

try:
    _VERSION = version("billing_ui")
except PackageNotFoundError:  # running from a source tree that was never installed
    _VERSION = "0"
USER_AGENT = f"billing_ui-python/{_VERSION}"

_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""Request bodies as httpx's ``json=`` writes them; one encoder, not one per ``json.dumps``."""


@dataclass(frozen=True, slots=True)
class _HeaderTemplate:
    http_headers: list[tuple[bytes, bytes]]  # the httpx client's headers it was merged with
    headers: httpx.Headers


# --- effects ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Send:
    request: httpx.Request


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class NeedSessionToken:
    customer_id: str
    stale: str | None = None


Effect: TypeAlias = Send | Sleep | NeedSessionToken
Outcome: TypeAlias = httpx.Response | httpx.RequestError | str | None
"""What an effect is resumed with: a response or the send's error, nothing, a token."""
Op: TypeAlias = Generator[Effect, Outcome, T]
"""An operation: yields effects, is resumed with their outcomes, returns its result."""


def send(request: httpx.Request) -> Op[httpx.Response | httpx.RequestError]:
    outcome = yield Send(request)
    assert isinstance(outcome, httpx.Response | httpx.RequestError)
    return outcome


def sleep(seconds: float) -> Op[None]:
    yield Sleep(seconds)


def session_token(customer_id: str, stale: str | None = None) -> Op[str]:
    token = yield NeedSessionToken(customer_id, stale)
    assert isinstance(token, str)
    return token


class EffectHandler(Protocol):
    """The I/O one client does for the operations: the only part that differs between the
    sync client (blocking, never suspends) and the async one."""

    async def _send_request(self, request: httpx.Request) -> httpx.Response: ...

    async def _sleep(self, seconds: float) -> None: ...

    async def _session_token(self, need: NeedSessionToken) -> str: ...


async def drive(op: Op[T], io: EffectHandler) -> T:
    """Run an operation to its result, doing the I/O each effect asks for (the one loop)."""
    try:
        effect = next(op)
        while True:
            outcome: Outcome
            if isinstance(effect, Send):
                try:
                    outcome = await io._send_request(effect.request)
                except httpx.RequestError as exc:
                    outcome = exc  # a value: the operation's retry loop decides
            elif isinstance(effect, Sleep):
                await io._sleep(effect.seconds)
                outcome = None
            else:
                outcome = await io._session_token(effect)
            effect = op.send(outcome)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        op.close()


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the sync client's :func:`drive`) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coroutine.close()
    raise RuntimeError("a blocking effect handler suspended")


# --- configuration ----------------------------------------------------------------------
class ClientOptions(TypedDict, total=False):
    """What :meth:`BaseBillingClient.with_options` may change."""

    api_key: str
    base_url: str
    timeout: float | httpx.Timeout
    max_retries: int


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Resolved settings: explicit argument, else environment, else the default."""

    base_url: str
    api_key: str
    timeout: httpx.Timeout
    max_retries: int
    retry_initial_delay: float
    retry_max_delay: float


def is_loopback(base_url: str) -> bool:
    """Whether ``base_url`` points at this machine (where the local server's known key is
    acceptable: it protects nothing there, and it is never sent anywhere else)."""
    host = httpx.URL(base_url).host
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_config(
    *,
    api_key: str | None,
    base_url: str | None,
    timeout: float | httpx.Timeout | None,
    max_retries: int | None,
    retry_initial_delay: float | None = None,
    retry_max_delay: float | None = None,
) -> ClientConfig:
    url = (base_url or os.environ.get(C.ENV_BASE_URL) or C.DEFAULT_BASE_URL).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BillingError(
            f"base_url must be an http:// or https:// URL, got {url!r} (argument base_url= or "
            f"environment {C.ENV_BASE_URL})."
        )
    key = api_key or os.environ.get(C.ENV_SECRET_KEY) or None
    if key is None:
        if not is_loopback(url):
            raise BillingError(
                f"No secret key for {url}. Set the environment variable {C.ENV_SECRET_KEY} "
                "(or pass api_key=) to your BillingOS secret key (sk_test_… or sk_live_…). "
                "Only a local server (127.0.0.1 / localhost) works without one."
            )
        key = C.LOCAL_SECRET_KEY
    if timeout is None:
        resolved_timeout = httpx.Timeout(C.DEFAULT_TIMEOUT_S, connect=C.DEFAULT_CONNECT_TIMEOUT_S)
    elif isinstance(timeout, httpx.Timeout):
        resolved_timeout = timeout
    else:
        resolved_timeout = httpx.Timeout(float(timeout))
    retries = C.DEFAULT_MAX_RETRIES if max_retries is None else max_retries
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise BillingError(f"max_retries must be an integer >= 0, got {retries!r}")
    return ClientConfig(
        base_url=url,
        api_key=key,
        timeout=resolved_timeout,
        max_retries=retries,
        retry_initial_delay=(
            C.INITIAL_RETRY_DELAY_S if retry_initial_delay is None else retry_initial_delay
        ),
        retry_max_delay=C.MAX_RETRY_DELAY_S if retry_max_delay is None else retry_max_delay,
    )


def default_limits() -> httpx.Limits:
    """Pooled keep-alive connections: a billing call per user action must not pay a TCP (and
    TLS) handshake each time."""
    return httpx.Limits(
        max_connections=C.DEFAULT_MAX_CONNECTIONS,
        max_keepalive_connections=C.DEFAULT_MAX_KEEPALIVE,
    )


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context for every client this process creates.

    Loading the CA bundle costs ~20 ms per ``httpx.Client``; an ``SSLContext`` is safe to share
    between clients and threads, so a process that makes many clients (one per test, per
    worker, per request in a serverless function) pays it once. Built on first use, honouring
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` as httpx does.
    """
    return httpx.create_ssl_context()


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


# --- session tokens ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _CachedToken:
    token: str
    jti: str | None
    refresh_at: float  # on the client's monotonic clock


class SessionTokenCache:
    """Session tokens per customer, each kept until shortly before it expires.

    The refresh point is computed on the client's monotonic clock from the token's lifetime as
    the *server* states it (``exp - iat``), counted from just before the mint request left: a
    client clock that disagrees with the server's (or a server on a test clock) cannot make a
    cached token look fresher than it is. A token is dropped ``SESSION_TOKEN_REFRESH_MARGIN_S``
    before expiry — or at half its lifetime for tokens shorter than twice the margin, so that a
    60-second token is still reused.

    Bounded (least recently used customers dropped) and thread-safe.
    """

    def __init__(
        self,
        *,
        capacity: int = C.SESSION_TOKEN_CACHE_SIZE,
        margin: float = C.SESSION_TOKEN_REFRESH_MARGIN_S,
    ) -> None:
        self._capacity = capacity
        self._margin = margin
        self._entries: OrderedDict[str, _CachedToken] = OrderedDict()
        self._lock = threading.Lock()

    def refresh_at(self, minted_at: float, lifetime: float) -> float:
        return minted_at + lifetime - min(self._margin, lifetime / 2)

    def get(self, customer_id: str, now: float, *, stale: str | None = None) -> str | None:
        """The cached token if it is still good at ``now`` and is not ``stale`` (a token the
        server just refused); otherwise drop it and return ``None``."""
        with self._lock:
            entry = self._entries.get(customer_id)
            if entry is None:
                return None
            if now >= entry.refresh_at or entry.token == stale:
                del self._entries[customer_id]
                return None
            self._entries.move_to_end(customer_id)
            return entry.token

    def put(self, customer_id: str, token: str, *, jti: str | None, refresh_at: float) -> None:
        with self._lock:
            self._entries[customer_id] = _CachedToken(token, jti, refresh_at)
            self._entries.move_to_end(customer_id)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def discard(self, *, jti: str) -> None:
        """Forget the token with this ``jti`` (it was revoked through this client)."""
        with self._lock:
            for customer_id, entry in list(self._entries.items()):
                if entry.jti == jti:
                    del self._entries[customer_id]

    def __len__(self) -> int:
        return len(self._entries)


# --- validation helpers -----------------------------------------------------------------
def validated(
    model: type[M],
    fields: Mapping[str, Any],
    prefix: str = "",
    rename: Mapping[str, str] | None = None,
) -> M:
    """``model`` from ``fields``, or :class:`InvalidInputError` naming the caller's words for
    the fields (``rename``: wire name -> argument name)."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise _invalid(exc, prefix, rename) from None


def track_request(
    customer_id: object,
    feature_key: object,
    quantity: object,
    metadata: object = None,
    idempotency_key: object = None,
) -> tuple[TrackUsageRequest, bool]:
    """A validated track, with a fresh idempotency key when none was given (``True``: the
    key was generated here, so a "duplicate" answer can only mean our own earlier attempt)."""
    generated = idempotency_key is None
    request = validated(
        TrackUsageRequest,
        {
            "customer_id": customer_id,
            "feature_key": feature_key,
            "quantity": quantity,
            "metadata": metadata,
            "idempotency_key": new_idempotency_key() if generated else idempotency_key,
        },
    )
    return request, generated


def _invalid(
    exc: ValidationError, prefix: str = "", rename: Mapping[str, str] | None = None
) -> InvalidInputError:
    errors = V.field_errors_from_pydantic(exc)
    if rename:
        errors = [
            FieldError(
                rename.get(e.field.split(".")[0], e.field.split(".")[0])
                + e.field[len(e.field.split(".")[0]) :],
                e.rule,
                e.message,
            )
            for e in errors
        ]
    if prefix:
        errors = [FieldError(prefix + e.field, e.rule, e.message) for e in errors]
    return InvalidInputError(errors)


# --- the shared client ------------------------------------------------------------------
class BaseBillingClient(Generic[HttpT]):
    """Shared state and operations of the sync and async clients (see the module docstring).

    Subclasses supply ``_make_http_client`` and the driver (``_run``); every public method there
    is one line that drives an ``_op_*`` generator from here.
    """

    _http: HttpT
    _is_async: ClassVar[bool] = False

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        http_client: HttpT | None = None,
        backend: Backend | None = None,
        retry_initial_delay: float | None = None,
        retry_max_delay: float | None = None,
    ) -> None:
        """See :class:`~billing_ui.core.client.BillingClient` for the options."""
        self._api_key_arg = api_key
        self._config = resolve_config(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            retry_initial_delay=retry_initial_delay,
            retry_max_delay=retry_max_delay,
        )
        self._backend: Backend = backend if backend is not None else BillingOSBackend()
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else self._make_http_client()
        self._clock: Callable[[], float] = time.monotonic
        self._reset_credentials()

    # -- subclass hooks
    def _make_http_client(self) -> HttpT:
        raise NotImplementedError

    def _reset_credentials(self) -> None:
        """(Re)build everything derived from the key and URL, and start a fresh token cache."""
        config = self._config
        self._tokens = SessionTokenCache()
        self._base_headers: dict[str, str] = {
            "User-Agent": USER_AGENT,
            **self._backend.default_headers(),
        }
        self._secret_headers = dict(self._backend.auth_headers(config.api_key))
        self._header_templates: dict[tuple[bool, bool], _HeaderTemplate] = {}

    # -- public configuration surface
    @property
    def base_url(self) -> str:
        return self._config.base_url

    @property
    def api_key(self) -> str:
        return self._config.api_key

    @property
    def timeout(self) -> httpx.Timeout:
        return self._config.timeout

    @property
    def max_retries(self) -> int:
        return self._config.max_retries

    @property
    def backend(self) -> Backend:
        return self._backend

    def with_options(self, **changes: Unpack[ClientOptions]) -> Self:
        """A copy with other settings that shares this client's connection pool.

        Typical use: ``client.with_options(max_retries=0).track_usage(...)`` for one call. The
        copy does not own the pool: close the original (closing a copy is a no-op). Options not
        given are kept; a new ``base_url`` re-resolves the key (so a copy pointed at a remote
        host does not silently reuse the local server's key).
        """
        clone = copy.copy(self)
        key_arg = changes.get("api_key", self._api_key_arg)
        clone._api_key_arg = key_arg
        clone._config = resolve_config(
            api_key=key_arg,
            base_url=changes.get("base_url") or self._config.base_url,
            timeout=changes.get("timeout", self._config.timeout),
            max_retries=changes.get("max_retries", self._config.max_retries),
            retry_initial_delay=self._config.retry_initial_delay,
            retry_max_delay=self._config.retry_max_delay,
        )
        clone._owns_http = False
        if clone._config.api_key != self._config.api_key or clone.base_url != self.base_url:
            clone._reset_credentials()
        return clone

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, "
            f"max_retries={self.max_retries}, timeout={self.timeout!r})"
        )

    # -- the request machinery -----------------------------------------------------------
    def _execute(self, call: Call[T]) -> Op[T]:
        """Run one call: present its credential, retry, re-mint a refused session token once,
        map errors, parse the answer."""
        token: str | None = None
        if call.credential == "session":
            if call.customer_id is None:
                raise BillingError("a session-token call needs a customer_id")
            token = yield from session_token(call.customer_id)
        try:
            response = yield from self._send(call, token)
        except APIStatusError as error:
            if token is None or not self._backend.is_stale_session(error):
                raise
            assert call.customer_id is not None
            log.debug(
                "session token for %r refused (%s); minting a new one", call.customer_id, error
            )
            token = yield from session_token(call.customer_id, stale=token)
            response = yield from self._send(call, token)
        try:
            return call.parse(response)
        except ValueError as exc:  # pydantic.ValidationError and JSON errors are ValueErrors
            raise APIResponseValidationError(
                f"{call.method} {call.path} answered {response.status_code} with a body that "
                f"is not what the billing API promises ({exc.__class__.__name__}: "
                f"{str(exc)[:300]}). Is {self.base_url} a billing API?",
                response=response,
            ) from exc

    def _send(self, call: Call[Any], session_token: str | None) -> Op[httpx.Response]:
        """:meth:`_attempts`, observed: one structured log record and the metrics for the
        call, whatever its end (an answer, an error, a cancellation)."""
        attempts = [0]
        started = time.perf_counter()
        status: int | str = "cancelled"
        try:
            response = yield from self._attempts(call, session_token, attempts)
            status = response.status_code
            return response
        except APIStatusError as error:
            status = error.status_code
            raise
        except BaseException as error:  # an APIError, or the caller cancelled (GeneratorExit)
            status = "cancelled" if isinstance(error, GeneratorExit) else type(error).__name__
            raise
        finally:
            observe_call(call, status, time.perf_counter() - started, attempts[0])

    def _attempts(
        self, call: Call[Any], session_token: str | None, attempts: list[int]
    ) -> Op[httpx.Response]:
        """Send with retries. Every attempt is the same request: same body, same idempotency
        key (in the body and the header), so the server counts a retried track once.
        ``attempts[0]`` counts the requests sent."""
        config = self._config
        content: bytes | None = None
        if call.json is not None:
            content = _JSON.encode(call.json).encode()
        headers = self._headers_for(call.credential == "secret", content is not None).copy()
        if session_token is not None and call.credential == "session":
            for name, value in self._backend.auth_headers(session_token).items():
                headers[name] = value
        for name, value in call.headers.items():
            headers[name] = value
        url = config.base_url + call.path
        attempt = 0
        while True:
            request = self._build_request(call.method, url, call.params, content, headers)
            attempts[0] = attempt + 1
            outcome = yield from send(request)
            retries_left = (config.max_retries - attempt) if call.retryable else 0
            if isinstance(outcome, httpx.Response):
                if outcome.status_code < 300:
                    return outcome
                error = self._backend.error_from_response(outcome)
                if retries_left > 0 and self._backend.is_retryable(error):
                    delay = _retry_delay(
                        attempt,
                        outcome.headers,
                        initial=config.retry_initial_delay,
                        maximum=config.retry_max_delay,
                    )
                    if delay is not None:
                        self._log_retry(call, attempt, delay, f"status {outcome.status_code}")
                        yield from sleep(delay)
                        attempt += 1
                        continue
                raise error
            if isinstance(outcome, httpx.PoolTimeout):  # our own overload: not retried
                raise self._pool_error(call, request, sent=attempt > 0) from outcome
            if retries_left > 0 and is_retryable_exception(outcome):
                delay = backoff_delay(
                    attempt, initial=config.retry_initial_delay, maximum=config.retry_max_delay
                )
                self._log_retry(call, attempt, delay, type(outcome).__name__)
                yield from sleep(delay)
                attempt += 1
                continue
            raise self._transport_error(outcome, request) from outcome

    def _headers_for(self, secret: bool, has_body: bool) -> httpx.Headers:
        """This client's fixed headers for a call (``secret``: with the secret key; ``has_body``:
        with the JSON content type), already merged with the httpx client's own defaults as
        ``build_request`` would merge them — once per client and kind of call instead of once
        per call (merging headers was the biggest part of what a track cost beyond raw httpx).
        Rebuilt when the httpx client's headers change."""
        http_headers = self._http.headers.raw
        template = self._header_templates.get((secret, has_body))
        if template is None or template.http_headers != http_headers:
            own = dict(self._base_headers)
            if secret:
                own.update(self._secret_headers)
            if has_body:
                own["Content-Type"] = "application/json"
            merged = httpx.Headers(self._http.headers)
            merged.update(own)
            template = _HeaderTemplate(http_headers, merged)
            self._header_templates[(secret, has_body)] = template
        return template.headers

    def _build_request(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        content: bytes | None,
        headers: httpx.Headers,
    ) -> httpx.Request:
        """``http.build_request(...)`` for an absolute ``url`` and headers already merged by
        :meth:`_headers_for`. The httpx client's own cookies and query parameters are merged by
        httpx itself, so a client that carries some gets exactly what ``build_request`` gives."""
        http = self._http
        timeout = self._config.timeout
        if params or http.params or http.cookies:
            return http.build_request(
                method, url, params=params, content=content, headers=headers, timeout=timeout
            )
        return httpx.Request(
            method, url, content=content, headers=headers, extensions={"timeout": timeout.as_dict()}
        )

    def _pool_error(self, call: Call[Any], request: httpx.Request, *, sent: bool) -> APIError:
        log.info(  # per call; billing_ui.core.problems logs the problem once as an ERROR
            "billing API %s %s not sent: no free connection in time (this app's own overload, "
            "not the API being down)%s",
            call.method,
            call.path,
            "; an earlier attempt was sent, its outcome is unknown" if sent else "",
        )
        return PoolExhaustedError(request=request, request_sent=sent)

    def _transport_error(self, exc: BaseException, request: httpx.Request) -> APIConnectionError:
        log.info("billing API at %s unreachable: %s: %s", self.base_url, type(exc).__name__, exc)
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(request=request)
        return APIConnectionError(
            f"Could not reach the billing API at {self.base_url} "
            f"({type(exc).__name__}: {exc or 'no detail'}). Check {C.ENV_BASE_URL} and that "
            "the server is running (the local one: python -m billing_ui.server).",
            request=request,
        )

    def _log_retry(self, call: Call[Any], attempt: int, delay: float, why: str) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(
                "billing API %s %s failed (%s); retry %d/%d in %.2fs",
                call.method,
                call.path,
                why,
                attempt + 1,
                self._config.max_retries,
                delay,
            )


def observe_call(call: Call[Any], status: int | str, seconds: float, attempts: int) -> None:
    """The call's log record (:mod:`~billing_ui.core.logs`, built only when it is written)
    and metrics (:mod:`~billing_ui.core.metrics`); a session-token mint is a call like the
    others."""
    if upstream_log.isEnabledFor(logging.INFO):
        fields = call_fields(
            call.operation, customer=call.customer_id, body=call.json, params=call.params
        )
        log_upstream(fields, status=status, seconds=seconds, attempts=attempts)
    tracks = 0
    if call.operation in _TRACK_OPERATIONS:
        events = call.json.get("events") if isinstance(call.json, Mapping) else None
        tracks = len(events) if isinstance(events, list) else 1
        if events is not None and isinstance(status, int) and status < 300:
            tracks = 0  # answered per event: operations._batch counts each
    metrics.current().observe_call(call.operation, status, seconds, attempts, tracks)


_TRACK_OPERATIONS = frozenset({"track_usage", "track_usage_batch"})


def own_replay(result: TrackUsageResult, generated_key: bool) -> TrackUsageResult:
    """A key this client generated for this very call cannot have been used by anyone else, so
    a "duplicate" answer means an earlier attempt of the same call landed (its response was
    lost) and was counted once: from the caller's side the event is new, not a replay."""
    if generated_key and result.duplicate:
        return result.model_copy(update={"duplicate": False})
    return result


def prepare_batch(
    events: object, bound_customer: str | None
) -> list[tuple[TrackUsageRequest, bool]]:
    """Validate every event (all errors at once, fields named ``events.<i>.<field>``) and give
    each event without an idempotency key a fresh one; ``True`` marks generated keys."""
    if isinstance(events, str | bytes | Mapping) or not isinstance(events, Iterable):
        raise InvalidInputError.single(
            "events", "type", f"must be a list of events, got {type(events).__name__}"
        )
    items = list(events)
    if not items:
        raise InvalidInputError.single("events", "non_empty", "must hold at least one event")
    prepared: list[tuple[TrackUsageRequest, bool]] = []
    errors: list[FieldError] = []
    for index, event in enumerate(items):
        prefix = f"events.{index}."
        if isinstance(event, TrackUsageRequest):
            fields: dict[str, Any] = event.model_dump()
        elif isinstance(event, Mapping):
            fields = dict(event)
        else:
            errors.append(
                FieldError(
                    f"events.{index}", "type", f"must be an event, got {type(event).__name__}"
                )
            )
            continue
        if bound_customer is not None:
            given = fields.setdefault("customer_id", bound_customer)
            if given != bound_customer:
                errors.append(
                    FieldError(
                        prefix + "customer_id",
                        "bound_customer",
                        f"must be the view's customer {bound_customer!r} or left out",
                    )
                )
                continue
        generated = fields.get("idempotency_key") is None
        if generated:
            fields["idempotency_key"] = new_idempotency_key()
        try:
            prepared.append((TrackUsageRequest.model_validate(fields), generated))
        except ValidationError as exc:
            errors.extend(_invalid(exc, prefix).errors)
    if errors:
        raise InvalidInputError(errors)
    return prepared
