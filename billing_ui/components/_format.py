"""Numbers and words as the meters show them, computed in the browser (no round trip)."""

from __future__ import annotations

from typing import Any

import reflex as rx
from reflex_base.vars.base import Var
from reflex_base.vars.number import NumberVar

from billing_ui.core._constants import NEVER_RESETS_DAYS


def number(value: Any) -> Var[str]:
    """A number var as text: ``1234567.5`` -> ``"1,234,567.5"`` (en-US grouping, at most three
    decimals, so a fractional quantity such as storage GB stays visible and a whole one shows
    no ``.0``). Formatted in the browser, so it follows every delta without a round trip."""
    return Var.create(f"{value:,}")  # NumberVar.__format__ -> toLocaleString('en-US')


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
