"""Numbers and words as the meters show them, computed in the browser (no round trip)."""

from __future__ import annotations

from typing import Any, Final

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


def ago(timestamp: Var[float]) -> Var[str]:
    """Seconds since the epoch as ``just now`` / ``3 min ago`` / ``2 h ago``, computed in the
    browser whenever the component re-renders (a retrying query re-renders it on each try)."""
    expr = (
        "((s) => s < 60 ? 'just now' : s < 3600 ? `${Math.floor(s / 60)} min ago` : "
        f"`${{Math.floor(s / 3600)}} h ago`)(Math.max(0, Date.now() / 1000 - ({timestamp})))"
    )
    return Var(_js_expr=expr, _var_type=str, _var_data=timestamp._get_all_var_data()).to(str)


ACRONYMS: Final = frozenset({"ai", "api", "gb", "ip", "mb", "sla", "sso", "tb"})


def humanize(feature_key: str) -> str:
    """A readable name for a feature key when no title is known: ``priority_support`` ->
    ``Priority support``, ``sso`` -> ``SSO``. Never shown when the entitlements have a title."""
    words = [w.upper() if w in ACRONYMS else w for w in feature_key.replace("-", "_").split("_")]
    words = [w for w in words if w]
    if not words:
        return feature_key
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])
