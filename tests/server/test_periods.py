"""Period maths: calendar periods in UTC, resets_in_days, and rollover as the clock crosses
midnight, a week, a month end and a year end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billing_ui.server.periods import NEVER_END, NEVER_START, period_containing

from .conftest import metric, track


def d(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("reset", "now", "start", "end"),
    [
        ("day", d(2026, 3, 15, 12), d(2026, 3, 15), d(2026, 3, 16)),
        ("day", d(2026, 3, 15), d(2026, 3, 15), d(2026, 3, 16)),
        ("day", d(2026, 12, 31, 23, 59, 59, 999999), d(2026, 12, 31), d(2027, 1, 1)),
        ("week", d(2026, 3, 15, 12), d(2026, 3, 9), d(2026, 3, 16)),  # Sunday -> Monday 9th
        ("week", d(2026, 3, 16), d(2026, 3, 16), d(2026, 3, 23)),
        ("week", d(2026, 12, 31), d(2026, 12, 28), d(2027, 1, 4)),
        ("month", d(2026, 3, 15, 12), d(2026, 3, 1), d(2026, 4, 1)),
        ("month", d(2026, 12, 31, 23), d(2026, 12, 1), d(2027, 1, 1)),
        ("month", d(2028, 2, 29, 12), d(2028, 2, 1), d(2028, 3, 1)),
        ("never", d(2026, 3, 15), NEVER_START, NEVER_END),
    ],
)
def test_period_containing(reset, now, start, end):
    period = period_containing(reset, now)
    assert (period.start, period.end) == (start, end)
    assert period.start <= now < period.end


def test_period_uses_utc_for_aware_non_utc_input():
    from datetime import timezone

    tokyo = timezone(timedelta(hours=9))
    period = period_containing("day", datetime(2026, 3, 16, 8, tzinfo=tokyo))  # = 15th 23:00 UTC
    assert period.start == d(2026, 3, 15)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (d(2026, 3, 31, 23, 59), 1),  # last minute of the month: rounds up to 1
        (d(2026, 3, 31), 1),
        (d(2026, 3, 30, 23, 59), 2),
        (d(2026, 3, 1), 31),
        (d(2026, 3, 15, 12), 17),  # 16.5 days -> 17
    ],
)
def test_resets_in_days_rounds_up(now, expected):
    assert period_containing("month", now).resets_in_days(now) == expected


def test_monthly_usage_rolls_over_at_month_end(api, customer, clock):
    cid = customer("free")
    clock.set(d(2026, 3, 31, 23, 59, 59))
    track(api, cid, "api_calls", 40)
    m = metric(api, cid, "api_calls")
    assert (m["consumed"], m["resets_in_days"], m["period_end"]) == (40, 1, "2026-04-01T00:00:00Z")
    clock.advance(timedelta(seconds=1))
    m = metric(api, cid, "api_calls")
    assert m["consumed"] == 0 and m["period_start"] == "2026-04-01T00:00:00Z"
    assert m["resets_in_days"] == 30 and m["percentage_used"] == 0
    track(api, cid, "api_calls", 2)
    assert metric(api, cid, "api_calls")["consumed"] == 2
    clock.set(d(2026, 3, 31, 12))  # back in March: its usage is still there, untouched
    assert metric(api, cid, "api_calls")["consumed"] == 40


def test_daily_usage_rolls_over_at_midnight_and_frees_a_hard_limit(api, customer, clock):
    cid = customer("free")  # ai_tokens: 10,000 a day, hard
    clock.set(d(2026, 3, 15, 23, 0))
    assert track(api, cid, "ai_tokens", 10_000).status_code == 200
    assert track(api, cid, "ai_tokens", 1).status_code == 400
    m = metric(api, cid, "ai_tokens")
    assert m["resets_in_days"] == 1 and m["remaining"] == 0 and m["percentage_used"] == 100
    clock.set(d(2026, 3, 16, 0, 0))
    assert metric(api, cid, "ai_tokens")["consumed"] == 0
    body = track(api, cid, "ai_tokens", 1).json()
    assert body["usage"]["period_start"] == "2026-03-16T00:00:00Z"
    assert body["usage"]["consumed_units"] == 1


def test_weekly_usage_rolls_over_on_monday(api, customer, clock):
    cid = customer("pro")
    clock.set(d(2026, 3, 15, 23, 59))  # Sunday
    track(api, cid, "report_exports", 3)
    assert metric(api, cid, "report_exports")["resets_in_days"] == 1
    clock.set(d(2026, 3, 16, 0, 0))  # Monday
    m = metric(api, cid, "report_exports")
    assert m["consumed"] == 0 and m["resets_in_days"] == 7


def test_never_resetting_usage_survives_years(api, customer, clock):
    cid = customer("pro")
    track(api, cid, "seats", 4)
    clock.advance(timedelta(days=3 * 365))
    m = metric(api, cid, "seats")
    assert m["consumed"] == 4 and m["period_start"] == "1970-01-01T00:00:00Z"
    check = api.get("/v1/usage/check", params={"customer_id": cid, "feature_key": "seats"}).json()
    assert "resets_at" not in check["metadata"]  # no end: left out, as BillingOS leaves unknowns
