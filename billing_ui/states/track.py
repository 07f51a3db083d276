"""``useTrackUsage()`` as a Reflex state: a mutation with pending / success / error vars.

``TrackUsageState.track(feature_key, quantity=1, metadata=None)`` is an event handler, callable
from any component's trigger::

    rx.button("Call API", on_click=lambda: TrackUsageState.track("api_calls", 1))

(The ``lambda`` form matters: with ``on_click=TrackUsageState.track("api_calls", 1)`` Reflex
passes the click's event data on as the next argument, ``metadata``.)

Any browser can call any public handler with any payload, so everything is checked here, on the
server: the feature must be in the app's ``trackable`` allowlist, the quantity must pass the core
rules and the feature's :class:`TrackRule`, metadata is size-capped, and the customer comes from
the resolver, never from an argument. Each call gets one idempotency key (the caller's
``metadata["idempotency_key"]``, as in the SDK's example, or a fresh one), reused on retries.
On success the meter updates at once from the usage the server returned, and the affected
queries are refetched (TanStack's invalidate-on-success).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from billing_ui.core.bulkhead import FairGate
from billing_ui.core.errors import (
    APIConnectionError,
    BillingError,
    InvalidInputError,
    PoolExhaustedError,
)
from billing_ui.core.models import TrackUsageResult
from billing_ui.core.outbox import OutboxFullError
from billing_ui.core.problems import classify
from billing_ui.core.track_rules import check_browser_track
from billing_ui.settings import get_settings
from billing_ui.states import _reflex_internals as internals
from billing_ui.states import _runtime as rt
from billing_ui.states.base import (
    BillingState,
    StaleAnswer,
    Ticket,
    TooManyRequests,
    billing_event_in_line,
)
from billing_ui.states.entitlements import FeatureEntitlementsState
from billing_ui.states.metrics import UsageMetricsState
from billing_ui.states.status import STALE, SUCCESS
from billing_ui.states.views import TrackResultView, metric_views, track_result_view

log = logging.getLogger("billing_ui.outbox")


def validate_browser_track(
    feature_key: object, quantity: object, metadata: object
) -> tuple[str, float, dict[str, Any] | None, str]:
    """Check a track request that came from a browser against the configured ``trackable``
    (:func:`billing_ui.core.track_rules.check_browser_track`); returns (key, quantity,
    metadata, idempotency key) or raises InvalidInputError naming the field and the rule."""
    return check_browser_track(get_settings().trackable, feature_key, quantity, metadata)


class TrackUsageState(BillingState):
    """Vars, as a TanStack mutation: ``is_pending`` (any track in flight), ``pending_features``,
    ``is_success``, ``is_error``, ``error`` (a sentence for a person), ``last_result``,
    ``last_feature_key`` (which button the feedback belongs to), and ``unconfirmed``: the
    features with a track the billing API has not answered (a timeout or a lost connection
    after the client's retries). Such a track is neither a success nor a failure: it is asked
    about again with the same idempotency key until the API answers, and only that answer is
    reported (a track the tab called failed is never counted)."""

    is_pending: bool = False
    pending_features: list[str] = []  # noqa: RUF012 - Reflex vars are declared this way
    unconfirmed: list[str] = []  # noqa: RUF012 - features with a track whose outcome is unknown
    queued_feature: str = ""  # the feature whose last track went to the outbox
    queued: int = 0  # tracks waiting in the outbox when it did
    is_success: bool = False
    is_error: bool = False
    error: str = ""
    last_feature_key: str = ""
    last_result: TrackResultView = TrackResultView()

    @billing_event_in_line
    async def track(self, feature_key: str, quantity: float = 1) -> None:
        """Record ``quantity`` of ``feature_key`` for the signed-in customer.

        Its last parameter is a number on purpose: ``on_click=TrackUsageState.track("api_calls",
        1)`` binds every parameter, so Reflex appends nothing, and ``track("api_calls")``
        would receive the click's event as ``quantity``, which Reflex refuses when the page
        compiles (a ``PointerEventInfo`` is not a float). Metadata goes through
        :meth:`track_with_metadata`. Any other argument a client sends (a ``customer``, say)
        is refused: the customer comes from the resolver only. The values are validated here
        again whatever their annotation (a client can send anything).

        A foreground event (``billing_event_in_line``): it runs under its tab's lock, in
        Reflex's per-tab line, and only checks the track, marks it pending and leaves it in
        line for its turn (:class:`_TrackTurn`); the send runs in a task of its own."""
        await self._track(feature_key, quantity, None)

    @billing_event_in_line
    async def track_with_metadata(
        self, feature_key: str, metadata: dict[str, Any], quantity: float = 1
    ) -> None:
        """:meth:`track` with ``metadata`` (stored with the event; ``idempotency_key`` in it is
        used as the track's key, as in the SDK's example). ``metadata`` comes before the
        quantity so that a form missing an argument fails at compile time, never receives the
        click's event data as metadata."""
        await self._track(feature_key, quantity, metadata)

    async def _refuse(self, exc: InvalidInputError) -> None:
        """A client sent an argument the handler does not have (see ``billing_event``; the
        track handlers hold their tab's lock)."""
        self._finish(exc.field, error=rt.message_for(exc))

    async def _track(self, feature_key: Any, quantity: Any, metadata: Any) -> None:
        """(Under the tab's lock.) Check the track, take its ticket, mark it pending and leave
        it in line for a turn; never waits for the billing API (it holds the tab's lock)."""
        try:
            key, amount, meta, idem = validate_browser_track(feature_key, quantity, metadata)
        except InvalidInputError as exc:
            self._finish(str(feature_key)[:64], error=rt.message_for(exc))
            return
        try:
            ticket = await self._begin()
        except (BillingError, LookupError) as exc:
            self._finish(key, error=rt.message_for(exc))
            return
        # Past this point a track costs the backend most (the answer, the meters, the
        # deltas): at most TRACKS_AT_ONCE tracks of all tabs do it at once, taken round-robin
        # by tab (see _TrackTurn), so a flood never stands between another tab and its events.
        try:
            admitted = _TrackTurn.enter(self.router.session.client_token)
        except TooManyRequests as exc:
            self._finish(key, error=rt.message_for(exc))
            return
        # Pending from the click on, not from its turn: under a flood a track can wait
        # seconds for a turn, and its button must not look idle meanwhile. (The ticket is
        # the click's: a customer change while it waits drops its answer as stale.)
        self.pending_features = [*self.pending_features, key]
        self.is_pending = True
        # The rest runs in a task at the track's turn, on a proxy of this state (as a
        # background event's), taking the lock for each write; until then the track is data
        # in the gate's line (see _TrackTurn.later).
        _TrackTurn.later(admitted, _WaitingTrack(self, ticket, key, amount, meta, idem))

    async def _send(
        self,
        ticket: Ticket,
        key: str,
        amount: float,
        meta: dict[str, Any] | None,
        idem: str,
        turn: _TrackTurn,
    ) -> list[Any]:
        """(Holding ``turn``, given back at the end.) Send the track, show its outcome on this
        tab; the events to run next (the refetch of a settled burst)."""
        try:
            customer = ticket.customer
            unknown = False
            try:
                try:
                    result = await rt.queries.track_usage(
                        customer, key, amount, metadata=meta, idempotency_key=idem
                    )
                except BillingError as first:
                    depth = await _queue(customer, key, amount, meta, idem, first)
                    if depth is not None:  # kept durably: the tracker's worker sends it
                        waiting = await rt.pending_usage(customer)
                        async with self:
                            await self._confirm(ticket)
                            self._finish(key, pending=key)
                            self.is_success = False
                            self.queued_feature, self.queued = key, depth
                            # The meter moves now, marked "+N pending" (all drop it once the
                            # outbox has sent it).
                            await self._show_usage(customer, waiting)
                        await _announce_pending(customer)
                        return []
                    if not outcome_unknown(first):
                        raise
                    # No answer after the client's retries (or every connection busy after an
                    # earlier attempt was sent): it may or may not have been recorded. Say so,
                    # then ask again with the same key until the API answers.
                    unknown = True
                    async with self:
                        await self._confirm(ticket)
                        self.unconfirmed = [*self.unconfirmed, key]
                        self.last_feature_key, self.error = key, UNCONFIRMED
                        self.is_error = self.is_success = False
                        metrics = await self.get_state(UsageMetricsState)
                        if metrics.status == SUCCESS:
                            metrics.status, metrics.error = STALE, rt.outage_message()
                    turn.give_back()  # asking again may take minutes: not holding a turn
                    try:
                        result = await _until_answered(customer, key, amount, meta, idem)
                    finally:
                        async with self:
                            self.unconfirmed = _without(self.unconfirmed, key)
            except BillingError as exc:
                lost = unknown and isinstance(exc, APIConnectionError | PoolExhaustedError)
                message = NOT_CONFIRMED if lost else rt.message_for(exc)
                async with self:
                    await self._confirm(ticket)
                    self._finish(key, error=message, pending=key)
                    if classify(exc) is not None:
                        # The API is down: the meters say so now, not at their next refresh.
                        metrics = await self.get_state(UsageMetricsState)
                        if metrics.status == SUCCESS:
                            metrics.status, metrics.error = STALE, rt.message_for(exc)
                return []
            rt.api_answered()  # the API is back: queued tracks go now, not at their backoff
            waiting = await rt.pending_usage(customer)
            async with self:
                await self._confirm(ticket)
                self._finish(key, pending=key)
                self.last_result = track_result_view(result)
                # Show the server's usage at once (no round trip), then refetch.
                await self._show_usage(customer, waiting)
                ent = await self.get_state(FeatureEntitlementsState)
                shows_check = key in ent.checks
                # The last track of a burst refetches for all of them: ten quick clicks are one
                # refetch, not ten racing ones (each click's own usage is already on screen).
                # A track is pending from its click on, so one waiting for a turn counts too.
                settled = not self.pending_features
        finally:
            turn.give_back()
        if not settled:
            return []
        if shows_check:
            return [UsageMetricsState.refetch, FeatureEntitlementsState.check(key)]
        return [UsageMetricsState.refetch]

    async def _show_usage(self, customer: str, waiting: Mapping[str, float]) -> None:
        """(Inside ``async with self``.) The cached usage, plus what waits in the outbox, on
        this tab's meters."""
        entry = await rt.queries.cache.peek((rt.METRICS, customer))
        if entry is not None:
            metrics = await self.get_state(UsageMetricsState)
            hard = {m.feature_key for m in metrics.metrics if m.hard_limit}
            metrics.metrics = metric_views(entry.data, hard, waiting)

    def _finish(self, key: str, *, error: str = "", pending: str | None = None) -> None:
        if pending is not None:
            remaining = list(self.pending_features)
            if pending in remaining:
                remaining.remove(pending)
            self.pending_features = remaining
        self.is_pending = bool(self.pending_features)
        self.last_feature_key = key
        self.error = error
        self.is_error = bool(error)
        self.is_success = not error
        if key == self.queued_feature:  # a newer outcome for this feature
            self.queued_feature = ""


async def _announce_pending(customer: str) -> None:
    """Tell the customer's other tabs (on every worker, through the store's change feed) that
    their meters changed: the live push (states/live.py) adds what waits in the outbox, as
    this tab's meter does. The cached data is rewritten as it is (nothing fetched)."""
    try:
        await rt.queries.cache.set_data((rt.METRICS, customer), _same)
    except Exception:  # the track is queued either way; the tabs see it at their next tick
        log.exception("billing_ui: telling the other tabs about queued usage failed")


def _same(data: Any) -> Any:
    return data


TRACKS_AT_ONCE = int(os.environ.get("BILLING_UI_TRACKS_AT_ONCE", "32"))
"""Tracks of all tabs being handled at once, per backend process (see _TrackTurn);
``BILLING_UI_TRACKS_AT_ONCE`` overrides it (benchmarks compare values with it)."""


class _TrackTurn:
    """A turn at the costly part of a track, from a per-event-loop :class:`FairGate`.

    Why: when every Reflex track event was a background task, a flood of 4,000 put 4,000 tasks
    on the event loop at once, and any other tab's event (a hydrate) waited behind a full round
    of them at every step. Measured with ``bench/many_sockets.py`` (200 tabs x 20 tracks).
    A tab's burst is still one burst (one refetch after its last track): a track settles it
    only when none of the tab's tracks is pending, waiting for a turn included. (A gate
    without that made every track of a burst refetch on its own: 1,599 of 4,000
    acknowledged in 300 s.)

    A track never waits as a suspended handler (a Reflex task with its chain of frames, its
    event and its context: what made the flood's peak of live objects, and so the backend's
    RSS after it). ``track`` is a foreground event, so a tab's burst arrives in Reflex's
    per-tab line as data, one handler at a time under the tab's lock; the handler marks the
    track pending and returns, and the track waits in the gate's line as data
    (:meth:`later`); at its turn a task sends it, on a proxy of the tab's state in the
    handler's context, and sends its outcome to the tab as a delta."""

    _gates: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FairGate]] = (
        weakref.WeakKeyDictionary()
    )
    _running: ClassVar[set[asyncio.Task[None]]] = set()
    """Tracks finishing after their handler returned (kept referenced until done)."""

    def __init__(self, gate: FairGate | None = None) -> None:
        self._gate: FairGate | None = gate or self._gate_of_loop()

    @classmethod
    def _gate_of_loop(cls) -> FairGate:
        loop = asyncio.get_running_loop()
        gate = cls._gates.get(loop)
        if gate is None:
            gate = cls._gates[loop] = FairGate(TRACKS_AT_ONCE)
        return gate

    @classmethod
    def enter(cls, tab: str) -> asyncio.Future[None] | None:
        """A turn now (None: the caller holds it, see ``_TrackTurn()``), or the track's place
        in the line (done at its turn); TooManyRequests when the tab already has a burst's
        worth of tracks waiting (the line is bounded per tab, as the tab's token bucket is)."""
        gate = cls._gate_of_loop()
        if gate.waiting_for(tab) >= get_settings().browser_burst:
            raise TooManyRequests(notify=True)
        return gate.enter(tab)

    @classmethod
    def later(cls, admitted: asyncio.Future[None] | None, track: _WaitingTrack) -> None:
        """Send ``track`` with the turn in a task, now when ``admitted`` is None (the caller
        holds a turn, from :meth:`enter`) or once ``admitted`` is done, in the copy of the
        calling handler's context that ``track`` took (Reflex's event context: the tab's state
        manager and delta channel; the handler's ticket), and route the events it returns as
        the handler's yields."""
        if admitted is None:
            track.start()
        else:  # (with its context: else the future copies the current one for the callback)
            admitted.add_done_callback(track.admitted, context=track.context)

    @classmethod
    def keep(cls, task: asyncio.Task[None]) -> None:
        """Hold ``task`` (a track at its turn) until it is done: the loop keeps only weak
        references to tasks."""
        cls._running.add(task)
        task.add_done_callback(cls._running.discard)

    def give_back(self) -> None:
        """Idempotent."""
        if self._gate is not None:
            self._gate.release()
            self._gate = None


class _WaitingTrack:
    """A checked track until its turn, as plain data: the tab's state proxy (a background
    handler's ``self``, with its lock and token: about a kilobyte) is made at the turn, in the
    handler's context copy, so a flood's thousands of waiting tracks hold none (the flood's
    peak of live objects is what CPython's arenas keep after it: docs/architecture.md).

    ``state`` is the handler's ``self``: on the in-memory and disk state managers the tab's
    own state, held anyway; on Reflex's Redis manager the copy of the tab's tree loaded for
    that event, which a waiting track keeps alive (as the proxy made at once used to)."""

    __slots__ = ("amount", "context", "idem", "key", "meta", "state", "ticket")

    def __init__(
        self,
        state: TrackUsageState,
        ticket: Ticket,
        key: str,
        amount: float,
        meta: dict[str, Any] | None,
        idem: str,
    ) -> None:
        """(In the handler.) ``context``: a copy of the handler's, where the track is sent."""
        self.state, self.ticket, self.key = state, ticket, key
        self.amount, self.meta, self.idem = amount, meta, idem
        self.context = contextvars.copy_context()

    def admitted(self, done: asyncio.Future[None]) -> None:
        """The gate's future is done: the turn is this track's, unless it was cancelled (the
        loop going away)."""
        if not done.cancelled():
            self.start()

    def start(self) -> None:
        """Send the track now, holding the turn, in a task in the handler's context copy."""
        loop = asyncio.get_running_loop()
        task = loop.create_task(_finish_later(self, _TrackTurn()), context=self.context)
        _TrackTurn.keep(task)

    async def __call__(self, turn: _TrackTurn) -> list[Any]:
        proxy = internals.state_proxy(self.state)
        return await proxy._send(self.ticket, self.key, self.amount, self.meta, self.idem, turn)


async def _finish_later(
    send: Callable[[_TrackTurn], Awaitable[list[Any]]], turn: _TrackTurn
) -> None:
    """A track at its turn (see :meth:`_TrackTurn.later`): what ``billing_event`` does for a
    handler, here (an answer turned stale is dropped; anything else is logged)."""
    try:
        events = await send(turn)
        if events:
            await internals.route_events(events, "TrackUsageState.track")
    except StaleAnswer:
        return
    except Exception:
        log.exception("billing_ui: a track that waited for its turn failed")
    finally:
        turn.give_back()


def outcome_unknown(exc: BaseException) -> bool:
    """Whether a failed track may nevertheless have been recorded: no answer after the
    client's retries (a lost connection, a timeout), or every connection busy for a retry
    after an earlier attempt had been sent (``PoolExhaustedError.request_sent``). A
    ``PoolExhaustedError`` before any attempt left the app means "not sent", a sure failure."""
    if isinstance(exc, PoolExhaustedError):
        return exc.request_sent
    return isinstance(exc, APIConnectionError)


UNCONFIRMED = "Not confirmed yet: checking with the billing service…"
NOT_CONFIRMED = "Not confirmed: the billing service did not answer. It may have been recorded."
CONFIRM_FIRST = 0.5
"""Seconds before asking again about a track with no answer; doubled up to CONFIRM_MAX."""
CONFIRM_MAX = 15.0
CONFIRM_FOR = 600.0
"""How long a track whose outcome is unknown is asked about before the tab is told that it
could not be confirmed (it may have been recorded: the key makes any later retry safe)."""


async def _until_answered(
    customer: str, key: str, amount: float, meta: dict[str, Any] | None, idem: str
) -> TrackUsageResult:
    """The same track (same idempotency key: it counts once whatever happened before) until
    the billing API answers. A success may be the replay of the first attempt
    (``duplicate``); an error answer (a quota, say) is final. Raises the last connection error
    after ``CONFIRM_FOR`` seconds."""
    delay, deadline = CONFIRM_FIRST, time.monotonic() + CONFIRM_FOR
    while True:
        await asyncio.sleep(delay)
        try:
            return await rt.queries.track_usage(
                customer, key, amount, metadata=meta, idempotency_key=idem
            )
        except (APIConnectionError, PoolExhaustedError):
            # Still no answer, or no connection free to ask with: still unknown.
            if time.monotonic() + delay > deadline:
                raise
            delay = min(delay * 2, CONFIRM_MAX)


async def _queue(
    customer: str,
    key: str,
    amount: float,
    meta: dict[str, Any] | None,
    idem: str,
    exc: BillingError,
) -> int | None:
    """Write a track that failed for a retryable reason to the configured outbox (same key);
    the number of tracks waiting, or None when there is no outbox, the failure is final, the
    feature fails closed, or the outbox is full (then the tab is told as without one)."""
    tracker = get_settings().track_outbox
    if tracker is None or not tracker.outbox.should_queue(key, exc):
        return None
    try:
        await asyncio.to_thread(
            tracker.outbox.put, customer, key, amount, metadata=meta, idempotency_key=idem
        )
    except OutboxFullError:
        log.warning("track outbox full (%d): %s not queued", tracker.outbox.max_size, key)
        return None
    return (await asyncio.to_thread(tracker.stats)).depth


def _without(items: list[str], item: str) -> list[str]:
    """``items`` less one occurrence of ``item``."""
    out = list(items)
    if item in out:
        out.remove(item)
    return out
