"""The status of a query, as TanStack Query models it, plus the two cases billing needs apart.

=============  =====================================================================
``signed_out``  nobody is signed in: there is nothing to fetch and nothing to show
``pending``     no data yet (first load in flight, or just after a customer change)
``success``     data as of ``data_updated_at``
``error``       the fetch failed and there is no data: nothing is known
``stale``       the last fetch failed, the previous data is still shown (and retried)
=============  =====================================================================

Components render each status in its own way and never turn "unknown" into "no": a failed
entitlements fetch is not "not on your plan".
"""

from __future__ import annotations

from typing import Any, Final, Literal

QueryStatus = Literal["signed_out", "pending", "success", "error", "stale"]

SIGNED_OUT: Final = "signed_out"
PENDING: Final = "pending"
SUCCESS: Final = "success"
ERROR: Final = "error"
STALE: Final = "stale"
STATUSES: Final = (SIGNED_OUT, PENDING, SUCCESS, ERROR, STALE)


def after_error(has_data: bool) -> str:
    """The status after a failed fetch: the previous data is kept (``stale``) or there is
    none (``error``)."""
    return STALE if has_data else ERROR


RETRY_FIRST: Final = 2.0
"""Seconds before the first retry after a failed refresh; doubled each time, up to the
refresh interval ("retrying" on screen is true, and an outage does not become a flood)."""


def retry_delay(failures: int, interval: float) -> float:
    """How long a refresh loop sleeps after ``failures`` failures in a row (0: the interval)."""
    if failures <= 0:
        return interval
    return min(interval, RETRY_FIRST * 2.0 ** min(failures - 1, 16))


# --- what a refresh sends ------------------------------------------------------------------
# A query state (UsageMetricsState, FeatureEntitlementsState) has the public vars ``status``,
# ``error``, ``is_fetching``, ``is_loading``, ``data_updated_at``, ``updated_at`` and the
# backend var ``_confirmed_at``. BillingState skips assignments of equal values, so a refresh
# that finds the data unchanged sends nothing, provided it does not move the fetch time the
# browser sees either: the browser shows that time only outside ``success`` ("Last updated 2
# min ago, retrying."), so it is kept backend-side (``_confirmed_at``) and sent when the data
# changes or the status leaves or returns to ``success``.


def shows_fetching(status: str, *, force: bool) -> bool:
    """Whether a refresh about to start flips ``is_fetching`` on: a first load (``pending``)
    or one the user asked for (``force``: Retry, a refetch), never a background tick.

    A background tick of a query in ``stale`` or ``error`` included: the page already says
    "retrying" (the callout), so the flip would state nothing new. Its cost is not
    TanStack's. React Query's ``isFetching`` does toggle on background refetches, but its
    tracked properties re-render only the components that read ``isFetching``. Reflex sends
    the flip to the browser as a delta of the whole state, and every component bound to that
    state re-renders, the charts among them (their totals follow the meters): measured on
    the demo in the dev build, 0.5-1 s of the browser's main thread per flip, two flips per
    retry, so on a loaded machine an outage queued more work than the page could do (issue
    13: chromedriver commands took 18-393 s). Without the flip an outage's retries send
    nothing once the failure is shown (tests/e2e/test_update_bytes.py)."""
    return force or status == PENDING


def stamp(state: Any, fetched_at: float, *, changed: bool) -> None:
    """Record a successful fetch made at ``fetched_at``; show its time in the browser when the
    data ``changed`` (else it stays in ``_confirmed_at`` until a status shows it)."""
    state._confirmed_at = max(state._confirmed_at, fetched_at)
    if changed or state.status != SUCCESS:
        _show_time(state, fetched_at)


def show_success(state: Any, fetched_at: float, *, changed: bool, outage: str) -> None:
    """A refresh succeeded (``outage``: the sentence when it was served from the cache while
    the API is down, else "")."""
    status = STALE if outage else SUCCESS
    stamp(state, fetched_at, changed=changed or status != SUCCESS)
    state.error, state.is_fetching, state.is_loading = outage, False, False
    state.status = status


def show_failure(state: Any, message: str, *, has_data: bool) -> None:
    """A refresh failed: the last good data stays, now with the time it was last confirmed."""
    if state._confirmed_at > state.data_updated_at:
        _show_time(state, state._confirmed_at)
    state.error, state.is_fetching, state.is_loading = message, False, False
    state.status = after_error(has_data)


def _show_time(state: Any, at: float) -> None:
    from billing_ui.states._runtime import iso_utc

    state.data_updated_at = at
    state.updated_at = iso_utc(at)
