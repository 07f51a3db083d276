"""Numbers, dates and words as the components show them, computed in the browser (no round
trip) with the browser's ``Intl``: in the reader's locale unless a component's ``locale=``
names one."""

from __future__ import annotations

import re
from typing import Any, Final, Literal

import reflex as rx
from reflex.vars import FunctionStringVar
from reflex_base.vars.base import Var
from reflex_base.vars.number import NumberVar

from billing_ui.core._constants import NEVER_RESETS_DAYS
from billing_ui.core.errors import InvalidInputError

_LOCALE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,4}")

NUMBER_JS: Final = "(v, l) => Number(v).toLocaleString(l ?? undefined, {maximumFractionDigits: 3})"
"""Grouped, at most three decimals: ``15,000`` in en-US, ``15.000`` in de-DE."""
DATE_JS: Final = {
    "day": "{month: 'short', day: 'numeric', timeZone: 'UTC'}",
    "hour": "{hour: 'numeric', minute: '2-digit', timeZone: 'UTC'}",
}
"""A chart bucket's label: buckets are UTC days and hours (as the billing periods are)."""


def check_locale(locale: str | None) -> str | None:
    """A BCP 47 tag such as ``de-DE`` (checked at page build: an invalid tag would make
    ``Intl`` throw in the reader's browser), or None for the browser's own locale."""
    if locale is not None and (not isinstance(locale, str) or not _LOCALE.fullmatch(locale)):
        raise InvalidInputError.single(
            "locale", "bcp47", "must be a language tag such as 'en-US' or 'de-DE', or None"
        )
    return locale


def number(value: Any, locale: str | None = None) -> Var[str]:
    """A number var as text: ``1234567.5`` -> ``"1,234,567.5"`` in en-US (grouped, at most
    three decimals, so a fractional quantity such as storage GB stays visible and a whole one
    shows no ``.0``). Formatted in the browser in its own locale, or ``locale``, so it follows
    every delta without a round trip."""
    return FunctionStringVar.create(NUMBER_JS).call(value, Var.create(check_locale(locale))).to(str)


def number_formatter(locale: str | None = None) -> str:
    """:func:`number` as a JS function of one value (a chart's tick and tooltip formatter).

    The ``Intl`` formatter is built once per render and shared by every call (see
    :func:`date_formatter`); ``toLocaleString(l, o)`` is ``new Intl.NumberFormat(l, o).format``."""
    return (
        "((f) => (v) => f.format(Number(v)))"
        f"(new Intl.NumberFormat({_js_locale(locale)}, {{maximumFractionDigits: 3}}))"
    )


def date_formatter(bucket: Literal["day", "hour"], locale: str | None = None) -> str:
    """A JS function formatting epoch milliseconds as a chart bucket's label, with ``Intl``
    (``Nov 30`` / ``30. Nov.``; ``2:00 PM`` / ``14:00``).

    The ``Intl.DateTimeFormat`` is built once per render of the chart, not once per call:
    recharts calls a tick formatter many times per render (it measures candidate ticks), and
    building the formatter on each call was the largest single cost of a chart's re-render
    (CPU profile of the demo dashboard in an outage, which re-renders it on every retry tick:
    ``tickFormatter`` 2.0 s of the page's 12.2 s in 8 s, dev build)."""
    return (
        "((f) => (t) => f.format(new Date(t)))"
        f"(new Intl.DateTimeFormat({_js_locale(locale)}, {DATE_JS[bucket]}))"
    )


def utc_date_time(iso: Any, locale: str | None = None) -> Var[str]:
    """An ISO 8601 timestamp var as a UTC date and time of day in the browser's locale
    (``Nov 30, 11:41:30 AM``, ``30. Nov., 11:41:30``), or ``""`` before there is one.

    With the date always: a time of day alone is ambiguous once the data is from another day
    (an outage over midnight, a tab left open), and "today" cannot be decided safely in the
    browser, which re-renders the text only when the var changes."""
    js = (
        f"(s) => (s ? new Date(s).toLocaleString({_js_locale(locale)}, "
        "{timeZone: 'UTC', month: 'short', day: 'numeric', hour: 'numeric', "
        "minute: '2-digit', second: '2-digit'}) : '')"
    )
    formatted: Var[str] = FunctionStringVar.create(js).call(iso).to(str)
    return formatted


def _js_locale(locale: str | None) -> str:
    tag = check_locale(locale)
    return "undefined" if tag is None else f"'{tag}'"


def resets_in(days: NumberVar[int]) -> Any:
    """``Resets today``, ``Resets in 1 day``, ``Resets in 12 days``, ``Does not reset``."""
    return rx.cond(
        days >= NEVER_RESETS_DAYS,
        "Does not reset",
        rx.cond(
            days <= 0,
            "Resets today",
            rx.cond(days == 1, "Resets in 1 day", f"Resets in {days} days"),
        ),
    )


ACRONYMS: Final = frozenset({"ai", "api", "gb", "ip", "mb", "sla", "sso", "tb"})


def humanize(feature_key: str) -> str:
    """A readable name for a feature key when no title is known: ``priority_support`` ->
    ``Priority support``, ``sso`` -> ``SSO``. Never shown when the entitlements have a title."""
    words = [w.upper() if w in ACRONYMS else w for w in feature_key.replace("-", "_").split("_")]
    words = [w for w in words if w]
    if not words:
        return feature_key
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])
