"""Route ``/dashboard``: the customer's meters, two usage charts and what the plan includes."""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

import reflex as rx

from billing_ui.components import entitlements_list, usage_chart, usage_dashboard
from billing_ui.components._format import utc_date_time
from billing_ui.demo.layout import page as shell
from billing_ui.demo.layout import section
from billing_ui.states.entitlements import FeatureEntitlementsState
from billing_ui.states.history import UsageHistoryState
from billing_ui.states.metrics import UsageMetricsState

ROUTE = "/dashboard"
CONSUMPTION = ["api_calls", "ai_tokens", "report_exports"]
"""Meters that fill up with use and reset each period."""
CAPACITY = ["storage_gb", "seats"]
"""Meters of how much the customer holds."""
TITLE = "Acme Cloud · Usage"
# No require_customer here: a signed-out visitor sees what billing_ui shows anyone signed out
# (one calm line per component), with the top bar's Sign in button.
ON_LOAD = [
    UsageMetricsState.poll,
    FeatureEntitlementsState.load,
    UsageHistoryState.poll,
]


def _freshness() -> rx.Component:
    """When the meters were fetched, said only when it is known: "Updated at" on success,
    "Last updated at" (amber) while an outage keeps the previous data, "Loading…" before the
    first answer; nothing after a failed first load (the callout says it) or signed out."""
    status = UsageMetricsState.status
    at = utc_date_time(UsageMetricsState.updated_at)
    return rx.match(
        status,
        ("success", _line("circle_check", "var(--grass-9)", f"Updated at {at} UTC")),
        ("stale", _line("clock_alert", "var(--amber-9)", f"Last updated at {at} UTC")),
        ("pending", rx.hstack(rx.spinner(size="1"), _muted("Loading…"), **_LINE)),
        rx.fragment(),
    )


_LINE = {"align": "center", "spacing": "2"}


def _muted(text: object) -> rx.Component:
    return rx.text(text, size="1", color="var(--gray-11)", data_testid="updated-at")


def _line(icon: str, color: str, text: object) -> rx.Component:
    spin = UsageMetricsState.is_fetching
    return rx.hstack(
        rx.cond(spin, rx.spinner(size="1"), rx.icon(icon, size=14, color=color)),
        _muted(text),
        **_LINE,
    )


def _signed_in(*sections: rx.Component) -> rx.Component:
    """Sections with nothing to say to a visitor who is not signed in (the first dashboard
    already says "Sign in to see your usage.")."""
    return rx.cond(UsageMetricsState.status == "signed_out", rx.fragment(), rx.fragment(*sections))


def page() -> rx.Component:
    return shell(
        "Usage",
        "What you have used this billing period, refreshed automatically.",
        section("Consumption", usage_dashboard(CONSUMPTION, data_group="consumption")),
        _signed_in(
            section(
                "Capacity",
                usage_dashboard(CAPACITY, show_error=False, skeletons=2, data_group="capacity"),
                # Features of another catalogue (a hosted BillingOS): shown, not lost.
                usage_dashboard(
                    exclude=[*CONSUMPTION, *CAPACITY],
                    show_error=False,
                    empty_text=None,
                    skeletons=0,
                    data_group="other",
                ),
                _freshness(),
            ),
            section(
                "This period",
                rx.grid(
                    usage_chart("api_calls"),
                    usage_chart("ai_tokens", bucket="hour", title="AI tokens today"),
                    columns=rx.breakpoints(initial="1", md="2"),
                    gap="1em",
                    width="100%",
                ),
            ),
            section("Your plan", entitlements_list()),
        ),
    )
