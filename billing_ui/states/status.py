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

from typing import Final, Literal

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
