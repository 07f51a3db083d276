"""Billing periods: calendar windows in UTC, derived from a feature's reset interval.

A period is half-open, ``[start, end)``. Usage is summed per period, so "the usage now" is
simply the aggregate of the period containing now; nothing has to be reset by a job at
midnight, and a server that was down over a month end still reports the right numbers.

* ``day``   — midnight to midnight UTC
* ``week``  — Monday 00:00 UTC to the next Monday (ISO weeks)
* ``month`` — the 1st 00:00 UTC to the 1st of the next month
* ``never`` — one period for all time: 1970-01-01 to 9999-12-31 (``resets_at`` is ``null``)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, get_args

Reset = Literal["day", "week", "month", "never"]
RESETS: Final[tuple[str, ...]] = get_args(Reset)

NEVER_START: Final = datetime(1970, 1, 1, tzinfo=UTC)
NEVER_END: Final = datetime(9999, 12, 31, tzinfo=UTC)
_DAY: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Period:
    """One billing period ``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    @property
    def resets(self) -> bool:
        """False for the all-time period of a ``never`` feature."""
        return self.end != NEVER_END

    def resets_in_days(self, now: datetime) -> int:
        """Whole days until ``end``, rounded up (1 on the period's last day)."""
        seconds = (self.end - now).total_seconds()
        return max(0, math.ceil(seconds / 86_400))


def period_containing(reset: Reset, now: datetime) -> Period:
    """The period of a ``reset`` interval that contains ``now`` (an aware datetime)."""
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if reset == "day":
        return Period(midnight, midnight + _DAY)
    if reset == "week":
        monday = midnight - timedelta(days=midnight.weekday())
        return Period(monday, monday + 7 * _DAY)
    if reset == "month":
        first = midnight.replace(day=1)
        following = (
            first.replace(year=first.year + 1, month=1)
            if first.month == 12
            else first.replace(month=first.month + 1)
        )
        return Period(first, following)
    if reset == "never":
        return Period(NEVER_START, NEVER_END)
    raise ValueError(f"unknown reset interval {reset!r}; expected one of {RESETS}")


def hour_floor(when: datetime) -> datetime:
    """The start of the UTC hour containing ``when`` (the finest bucket the store keeps)."""
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
