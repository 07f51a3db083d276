"""What the billing states need from Reflex and the settings: the shared queries (behind a ticket),
whether the tab is still there, and error messages fit to show a person."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

import reflex as rx

from billing_ui.core import errors
from billing_ui.core.customer import NoCustomerError
from billing_ui.core.problems import BUSY_MESSAGE, USER_MESSAGE, classify
from billing_ui.core.queries import ENTITLEMENTS, FEATURE_CHECK, METRICS, BillingQueries
from billing_ui.runtime import current
from billing_ui.states import _reflex_internals as internals

log = logging.getLogger("billing_ui.states")
__all__ = [
    "ENTITLEMENTS",
    "FEATURE_CHECK",
    "METRICS",
    "is_tab_connected",
    "queries",
]


class _TicketedQueries:
    """The installed runtime's query layer (:func:`billing_ui.runtime.current`), reachable only
    by a handler that holds a ticket (:meth:`billing_ui.states.base.BillingState.begin`): a
    state that forgot to take one fails at its first request instead of leaking an answer
    across customers."""

    _NO_CUSTOMER_DATA = frozenset({"problems"})  # the operator's log of upstream health

    def __getattr__(self, name: str) -> Any:
        from billing_ui.states.base import current_ticket

        if current_ticket() is None and name not in self._NO_CUSTOMER_DATA:
            raise RuntimeError(
                "billing_ui: a billing state reached the billing API without a ticket; call "
                "`await self._begin()` inside `async with self` in a @billing_event handler"
            )
        return getattr(current().queries, name)


queries: BillingQueries = _TicketedQueries()  # type: ignore[assignment]
"""Every upstream call of the states goes through here (see :class:`_TicketedQueries`)."""


async def is_tab_connected(state: rx.State) -> bool:
    """Whether the tab that owns ``state`` still has a socket, on this or (with Redis) any
    instance. True when it cannot be told (no app registered, as under unit tests)."""
    return await internals.is_token_connected(state.router.session.client_token)


async def known_features(customer: str) -> frozenset[str]:
    """The feature keys a browser may name for ``customer``: those of its entitlements and
    meters, and the app's ``trackable`` ones. Nothing else enters a state or the cache, so no
    browser can grow them with made-up keys (the entitlements come from the shared cache: one
    request per customer per ``entitlements_refresh_interval``)."""
    from billing_ui.settings import get_settings

    settings = get_settings()
    entry = await queries.entitlements(customer, stale_time=settings.entitlements_refresh_interval)
    metrics = await current().store.peek((METRICS, customer))
    return frozenset(
        {
            *(e.feature_key for e in entry.data),
            *(m.feature_key for m in (metrics.data if metrics else [])),
            *settings.trackable,
        }
    )


def reading_ahead(customer: str, stale_time: float) -> AbstractAsyncContextManager[Any | None]:
    """For a poll tick: the read of ``customer``'s meters, to ride in the tick's read of its
    tab (:func:`billing_ui.states._reflex_internals.read_tab_state`), one round trip to Redis
    for both where it was two (issue 10). ``customer`` is the one the tab showed at its last
    tick; the read serves only a fetch of that customer's meters inside the block, which takes
    a ticket first (:class:`~billing_ui.core.redis_cache.ReadAhead`). None (read separately):
    no customer, or the query store and Reflex's state manager are not on one Redis."""
    start = getattr(current().queries.cache, "reading_ahead", None)
    client = internals.state_manager_redis() if start is not None and customer else None
    if start is None or client is None:
        return contextlib.nullcontext(None)
    ahead: AbstractAsyncContextManager[Any | None] = start(
        (METRICS, customer), stale_time=stale_time, client=client
    )
    return ahead


def api_answered() -> None:
    """A call through the runtime's client just reached the billing API: the outbox's queued
    tracks, if they are backing off, are sent now (``UsageTracker.api_answered``: a flag
    read, no I/O here)."""
    from billing_ui.settings import get_settings

    tracker = get_settings().track_outbox
    if tracker is not None:
        tracker.api_answered()


async def pending_usage(customer: str) -> dict[str, float]:
    """What ``customer`` has waiting in the app's outbox, per feature (``track_outbox``; read
    in a thread: it is a query on the outbox's database). Empty without an outbox, or when
    the outbox cannot be read (the meter then shows the server's numbers alone)."""
    from billing_ui.settings import get_settings

    tracker = get_settings().track_outbox
    if tracker is None:
        return {}
    try:
        return await asyncio.to_thread(tracker.outbox.pending_for, customer)
    except Exception:
        log.exception("billing_ui: reading the outbox's pending usage failed")
        return {}


def outage_message() -> str:
    """The neutral outage sentence while some upstream request of this process has found the
    billing API down (wrong key, unreachable, failing) and none has succeeded since; else ""."""
    return USER_MESSAGE if current().problems.open_problems() else ""


def message_for(exc: BaseException) -> str:
    """A sentence for the UI. Details go to the log, never a stack trace to the browser.

    A wrong key, an unreachable or failing API: the end user gets one neutral sentence; the
    operator's advice (BILLINGOS_SECRET_KEY, BILLINGOS_API_URL) is logged once by
    ``queries.problems`` (:mod:`billing_ui.core.problems`), never sent to the browser."""
    problem = classify(exc)
    if problem == "overloaded":  # the app's own overload, not an outage
        return BUSY_MESSAGE
    if problem is not None:
        return USER_MESSAGE
    if isinstance(exc, errors.RemoteFetchError) and exc.status_code is not None:
        # another worker's fetch got this answer: the sentence that worker's UI shows
        if exc.status_code == 429:
            return "Too many requests: try again in a moment."
        return f"The billing service answered: {exc.api_message}"
    if isinstance(exc, NoCustomerError):
        return "Sign in to see your usage."
    from billing_ui.states.base import TooManyRequests

    if isinstance(exc, TooManyRequests):
        return str(exc)
    if isinstance(exc, errors.InvalidInputError):
        return f"Not tracked: {exc.errors[0]}"
    if isinstance(exc, errors.QuotaExceededError):
        return "Limit reached: upgrade your plan or wait for the period to reset."
    if isinstance(exc, errors.RateLimitError):
        return "Too many requests: try again in a moment."
    if isinstance(exc, errors.APIStatusError):
        return f"The billing service answered: {exc.message}"
    log.exception("unexpected error in a billing state", exc_info=exc)
    return "Something went wrong while talking to the billing service."


def iso_utc(timestamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
