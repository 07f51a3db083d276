"""``UsageTracker``: track usage from any Python app — returns at once, loses nothing.

The shape of the posthog and segment analytics clients (``track()`` enqueues and returns; a
background thread sends batches of at most ``flush_at`` events, or whatever is there every
``flush_interval`` seconds; ``flush()`` and ``shutdown()``, called at exit), with what they
lack: durability. ``track()`` writes the event to the :mod:`outbox <billing_ui.core.outbox>`
(fsynced) before it returns, with its idempotency key, so an event survives the billing API
being down, the app process being killed, and its own redelivery (the key makes that count
once).

* Fail-closed features (``seats`` by default, ``Outbox(fail_closed=...)``) are not queued:
  ``track()`` sends them at once and raises the API's answer (``QuotaExceededError``, or the
  connection error when the API is down) — a seat is only granted when the API says yes.
* Backpressure: when the outbox is full, ``track()`` waits up to ``full_timeout`` seconds for
  the worker to make room, then raises :class:`~billing_ui.core.outbox.OutboxFullError`.
* Invalid input raises :class:`~billing_ui.core.errors.InvalidInputError` at once, naming the
  field and the rule; it is never queued.

:class:`AsyncUsageTracker` is the same for asyncio apps (the outbox write runs in a thread; use
it as an async context manager or with ``lifespan`` in Starlette/FastAPI).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from billing_ui.core._base_client import track_request
from billing_ui.core.client import BillingClient
from billing_ui.core.models import TrackUsageResult
from billing_ui.core.outbox import Outbox, OutboxFullError, OutboxStats, QueuedTrack
from billing_ui.core.outbox_sqlite import SQLiteOutboxStore

__all__ = ["AsyncUsageTracker", "UsageTracker"]

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("billing_ui.outbox")

DEFAULT_OUTBOX_PATH = "billing_outbox.db"
DEFAULT_PROBE_INTERVAL_S = 5.0
"""How often the worker asks whether the API is back while queued tracks back off."""


class UsageTracker:
    """Tracks usage through a durable outbox and a background worker (see the module
    docstring). Thread-safe.

    ``client``: a :class:`BillingClient` (default: one from the environment, closed by the
    tracker). ``outbox``: default an :class:`Outbox` over ``billing_outbox.db`` in the working
    directory (``outbox_path=`` to put it elsewhere). ``start=False`` leaves the worker off
    (call :meth:`flush` yourself). ``probe_interval``: while queued tracks back off, the
    worker asks the API this often whether it is back (see :meth:`api_answered` too).
    """

    def __init__(
        self,
        client: BillingClient | None = None,
        *,
        outbox: Outbox | None = None,
        outbox_path: str | Path = DEFAULT_OUTBOX_PATH,
        flush_at: int = 100,
        flush_interval: float = 1.0,
        full_timeout: float = 5.0,
        probe_interval: float = DEFAULT_PROBE_INTERVAL_S,
        start: bool = True,
    ) -> None:
        if not 1 <= flush_at <= 1000:
            raise ValueError("flush_at must be between 1 and 1000")
        if not probe_interval > 0:
            raise ValueError("probe_interval must be a number of seconds > 0")
        self._owns_client = client is None
        self.client = client if client is not None else BillingClient()
        self.outbox = outbox if outbox is not None else Outbox(SQLiteOutboxStore(outbox_path))
        self._owns_outbox = outbox is None
        self.flush_at = flush_at
        self.flush_interval = flush_interval
        self.full_timeout = full_timeout
        self.probe_interval = probe_interval
        self._cond = threading.Condition()
        self._added = 0  # tracks since the worker last woke
        self._answered = False  # a call of the app's went through while entries backed off
        self._last_probe = time.monotonic()  # the first probe one interval after start
        self._stopping = False
        self._closed = False
        self._worker: threading.Thread | None = None
        if start:
            self._worker = threading.Thread(target=self._run, name="billing-tracker", daemon=True)
            self._worker.start()
        atexit.register(self.shutdown)

    # -- the app's side
    def track(
        self,
        customer_id: str,
        feature_key: str,
        quantity: float = 1,
        *,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> QueuedTrack | TrackUsageResult:
        """Queue one event (returns the :class:`QueuedTrack`, with its key) — or, for a
        fail-closed feature, send it now and return the API's result."""
        if self._closed:
            raise RuntimeError("this UsageTracker was shut down")
        request, _ = track_request(
            customer_id, feature_key, quantity, metadata, idempotency_key or None
        )
        assert request.idempotency_key is not None
        if self.outbox.fails_closed(request.feature_key):
            return self.client.track_usage(
                request.customer_id,
                feature_key=request.feature_key,
                quantity=request.quantity,
                metadata=request.metadata,
                idempotency_key=request.idempotency_key,
            )
        deadline = time.monotonic() + self.full_timeout
        while True:
            try:
                entry = self.outbox.put(
                    request.customer_id,
                    request.feature_key,
                    request.quantity,
                    metadata=request.metadata,
                    idempotency_key=request.idempotency_key,
                )
                break
            except OutboxFullError:
                left = deadline - time.monotonic()
                if left <= 0 or self._worker is None:
                    raise
                with self._cond:  # backpressure: wait for the worker to make room
                    self._added = self.flush_at
                    self._cond.notify_all()
                    self._cond.wait(min(left, self.flush_interval))
        with self._cond:
            self._added += 1
            if self._added >= self.flush_at:
                self._cond.notify_all()
        return entry

    def send_or_queue(
        self,
        customer_id: str,
        feature_key: str,
        quantity: float = 1,
        *,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> QueuedTrack | TrackUsageResult:
        """Send now and return the API's result; when that fails for a retryable reason (and
        the feature does not fail closed), queue it with the same key for the worker and
        return the :class:`QueuedTrack` (:meth:`Outbox.track_or_queue`). For a button whose
        user should read "recorded" while the API is up and "queued, will be sent" when not."""
        if self._closed:
            raise RuntimeError("this UsageTracker was shut down")
        result = self.outbox.track_or_queue(
            self.client,
            customer_id,
            feature_key,
            quantity,
            metadata=metadata,
            idempotency_key=idempotency_key,
        )
        if isinstance(result, TrackUsageResult):
            self.api_answered()
        return result

    def api_answered(self) -> None:
        """Tell the tracker that a call of the app's own reached the billing API (a direct
        track on the Reflex path, say): if queued tracks are backing off, the worker makes them
        due and sends them now. Cheap when nothing backs off (one attribute read); never
        blocks on the outbox (the worker does the write)."""
        if self.outbox.backing_off and not self._answered:
            with self._cond:
                self._answered = True
                self._cond.notify_all()

    def stats(self) -> OutboxStats:
        """Depth, oldest age, overdue, failed, delivered (see :class:`OutboxStats`)."""
        return self.outbox.stats()

    def flush(self, timeout: float = 10.0) -> bool:
        """Send what is due now, in this thread, until the outbox is empty, nothing is due
        (the API is failing: entries wait for their backoff) or ``timeout`` passes. Whether the
        outbox is empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            report = self.outbox.deliver(self.client, self.flush_at)
            self._made_room()
            if report.claimed == 0 or report.retried:
                break
        return self.outbox.stats().depth == 0

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the worker, flush once more, close what the tracker opened. Registered with
        ``atexit``; safe to call twice. Whatever could not be sent stays in the outbox for the
        next start."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.shutdown)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
        try:
            self.flush(timeout)
            left = self.outbox.stats().depth  # one read: another process may be sending too
            if left:  # said, not silent: the app is stopping with tracks unsent
                log.warning(
                    "the usage tracker stopped with %d track%s not sent yet in its durable "
                    "outbox; any tracker on that outbox sends %s (this one at its next start)",
                    left,
                    "" if left == 1 else "s",
                    "it" if left == 1 else "them",
                )
        except Exception:  # at exit, say, with the store already closed: nothing is lost
            log.exception("the usage tracker's last flush failed; the outbox keeps what is left")
        finally:
            if self._owns_client:
                self.client.close()
            if self._owns_outbox:
                self.outbox.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    # -- the worker
    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._stopping and self._added < self.flush_at and not self._answered:
                    self._cond.wait(self.flush_interval)
                if self._stopping:
                    return
                self._added = 0
                answered, self._answered = self._answered, False
            try:
                if answered:
                    self.outbox.resume()
                elif self._probe_due():
                    self._last_probe = time.monotonic()
                    self.outbox.probe(self.client)
                while not self._stopping:
                    report = self.outbox.deliver(self.client, self.flush_at)
                    self._made_room()
                    if report.claimed < self.flush_at or report.retried:
                        break
            except Exception:  # the worker must outlive any one failure (a locked file, say)
                log.exception(
                    "the usage tracker's delivery failed; retrying in %ss", self.flush_interval
                )

    def _probe_due(self) -> bool:
        """While queued tracks back off, ask the API every ``probe_interval`` seconds whether
        it is back (:meth:`Outbox.probe`), so the backlog leaves within about that long after
        an outage even when no new track arrives to find out."""
        return (
            self.outbox.backing_off and time.monotonic() - self._last_probe >= self.probe_interval
        )

    def _made_room(self) -> None:
        with self._cond:
            self._cond.notify_all()


def _in_thread(method: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``method``, awaitable: it runs in a worker thread (the outbox's durable write and the
    sync client block), so the event loop never waits on disk or network."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(method, *args, **kwargs)

    return call


class AsyncUsageTracker:
    """:class:`UsageTracker` for asyncio apps: ``await tracker.track(...)`` (the durable write
    runs in a worker thread, never blocking the event loop). Use ``async with`` or
    ``lifespan`` (Starlette/FastAPI) so that it flushes on shutdown."""

    def __init__(self, tracker: UsageTracker | None = None, **options: Any) -> None:
        self.tracker = tracker if tracker is not None else UsageTracker(**options)
        # The sync tracker's own methods, awaited: the same signatures, nothing written twice.
        self.track = _in_thread(self.tracker.track)
        """See :meth:`UsageTracker.track`."""
        self.send_or_queue = _in_thread(self.tracker.send_or_queue)
        """See :meth:`UsageTracker.send_or_queue` (the request runs in a worker thread)."""
        self.stats = _in_thread(self.tracker.stats)
        self.flush = _in_thread(self.tracker.flush)
        self.aclose = _in_thread(self.tracker.shutdown)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """``FastAPI(lifespan=tracker.lifespan)``: flush and stop when the app shuts down."""
        try:
            yield
        finally:
            await self.aclose()
