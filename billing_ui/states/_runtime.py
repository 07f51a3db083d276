"""What the billing states need from Reflex and the settings: the customer, the shared queries,
whether the tab is still there, and error messages fit to show a person."""

from __future__ import annotations

import logging

import reflex as rx

from billing_ui.core import errors
from billing_ui.core.customer import NoCustomerError, resolve_customer
from billing_ui.core.problems import USER_MESSAGE, classify
from billing_ui.core.queries import ENTITLEMENTS, FEATURE_CHECK, METRICS, BillingQueries
from billing_ui.states.settings import cache, get_client, get_settings

log = logging.getLogger("billing_ui.states")
__all__ = [
    "ENTITLEMENTS",
    "FEATURE_CHECK",
    "METRICS",
    "current_customer",
    "is_tab_connected",
    "queries",
]

queries = BillingQueries(get_client, cache)
"""One query layer (and one cache) for every session of this process."""


async def current_customer(state: rx.State) -> str:
    """The signed-in customer, from the app's resolver; never from what the browser sent.
    Call inside ``async with state`` in a background handler (the resolver may read other
    states)."""
    return await resolve_customer(get_settings().customer_resolver, state)


async def is_tab_connected(state: rx.State) -> bool:
    """Whether the tab that owns ``state`` still has a socket, on this or (with Redis) any
    instance. True when it cannot be told (no event namespace, as under unit tests)."""
    from reflex_base.registry import RegistrationContext
    from reflex_base.utils.exceptions import ReflexRuntimeError

    try:
        namespace = RegistrationContext.get().app.event_namespace
    except (LookupError, AttributeError, ReflexRuntimeError):
        return True  # no app registered (an event processor run on its own, as in benchmarks)
    if namespace is None:
        return True
    token = state.router.session.client_token
    connected: bool = await namespace._token_manager.is_token_connected(token)
    return connected


def message_for(exc: BaseException) -> str:
    """A sentence for the UI. Details go to the log, never a stack trace to the browser.

    A wrong key, an unreachable or failing API: the end user gets one neutral sentence; the
    operator's advice (BILLINGOS_SECRET_KEY, BILLINGOS_API_URL) is logged once by
    ``queries.problems`` (:mod:`billing_ui.core.problems`), never sent to the browser."""
    if classify(exc) is not None:
        return USER_MESSAGE
    if isinstance(exc, NoCustomerError):
        return "Sign in to see your usage."
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
