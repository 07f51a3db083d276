"""Route ``/dashboard``: the customer's meters, two usage charts and what the plan includes."""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

import reflex as rx

from billing_ui.components import entitlements_list, usage_chart, usage_dashboard
from billing_ui.demo.layout import page as shell
from billing_ui.demo.layout import section
from billing_ui.demo.session import DemoSessionState
from billing_ui.states.entitlements import FeatureEntitlementsState
from billing_ui.states.history import UsageHistoryState
from billing_ui.states.metrics import UsageMetricsState

ROUTE = "/dashboard"
CONSUMPTION = ["api_calls", "ai_tokens", "report_exports"]
"""Meters that fill up with use and reset each period."""
CAPACITY = ["storage_gb", "seats"]
"""Meters of how much the customer holds."""
TITLE = "Acme Cloud · Usage"
ON_LOAD = [
    DemoSessionState.require_customer,
    UsageMetricsState.poll,
    FeatureEntitlementsState.load,
    UsageHistoryState.poll,
]


def _freshness() -> rx.Component:
    return rx.hstack(
        rx.cond(
            UsageMetricsState.is_fetching,
            rx.spinner(size="1"),
            rx.icon("circle_check", size=14, color="var(--grass-9)"),
        ),
        rx.text(
            rx.cond(
                UsageMetricsState.updated_at != "",
                f"Updated at {UsageMetricsState.updated_at[11:19]} UTC",
                "Loading…",
            ),
            size="1",
            color="var(--gray-11)",
            data_testid="updated-at",
        ),
        align="center",
        spacing="2",
    )


def page() -> rx.Component:
    return shell(
        "Usage",
        "What you have used this billing period, refreshed automatically.",
        section("Consumption", usage_dashboard(CONSUMPTION, data_group="consumption")),
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
    )
