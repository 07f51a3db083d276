"""``entitlements_list``: what the customer's plan grants (``useFeatureEntitlements``), as a
table of features with their type and limit."""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from typing import Any

import reflex as rx
from reflex_base.vars.base import Var

from billing_ui.components import styles
from billing_ui.components._format import number
from billing_ui.components._status import error_callout, stale_callout
from billing_ui.states.entitlements import FeatureEntitlementsState
from billing_ui.states.metrics import UsageMetricsState
from billing_ui.states.status import ERROR, PENDING, SIGNED_OUT, STALE
from billing_ui.states.views import EntitlementView

TYPE_LABEL = {"boolean": "Feature", "metered": "Usage quota", "static": "Limit"}


def type_badge(kind: Var[str]) -> rx.Component:
    """The entitlement's type as a badge in the theme's accent colour (no ``color_scheme``, so
    ``rx.theme(accent_color=...)`` re-colours it); a static limit or an unknown type in gray."""
    return rx.match(
        kind,
        ("boolean", rx.badge(TYPE_LABEL["boolean"], variant="outline")),
        ("metered", rx.badge(TYPE_LABEL["metered"], variant="soft")),
        ("static", rx.badge(TYPE_LABEL["static"], variant="soft", color_scheme="gray")),
        rx.badge(kind, variant="soft", color_scheme="gray"),
    )


def entitlements_list(
    *, show_plan: bool = True, locale: str | None = None, **props: Any
) -> rx.Component:
    """Every feature the signed-in customer is entitled to. Loads on mount (cached). "No
    features" only when the billing API said so; a failed load says it failed, stale data
    says how old it is, and a signed-out page shows nothing here. Limits are grouped in the
    browser's locale, or ``locale``::

    rx.card(rx.heading("Your plan"), entitlements_list())
    """
    headers = ["Feature", "Type", "Allowance", *(["Plan"] if show_plan else [])]
    state = FeatureEntitlementsState
    table = rx.cond(
        state.entitlements.length() > 0,
        rx.table.root(
            rx.table.header(rx.table.row(*[rx.table.column_header_cell(h) for h in headers])),
            rx.table.body(rx.foreach(state.entitlements, lambda e: _row(e, show_plan, locale))),
            variant="surface",
            size="2",
            width="100%",
        ),
        rx.text(
            "No features: the customer has no active plan.",
            data_testid="entitlements-empty",
            **styles.MUTED_TEXT,
        ),
    )
    return rx.box(
        rx.match(
            state.status,
            (PENDING, rx.skeleton(rx.box(height="8em", width="100%"), loading=True)),
            (SIGNED_OUT, rx.fragment()),
            (
                ERROR,
                error_callout(
                    state.error,
                    retry=UsageMetricsState.retry_all,
                    busy=state.is_fetching,
                    testid="entitlements-error",
                    status="Your plan's features can't be shown right now.",
                ),
            ),
            (
                STALE,
                rx.vstack(
                    stale_callout(
                        state.updated_at,
                        state.error,
                        retry=UsageMetricsState.retry_all,
                        busy=state.is_fetching,
                        testid="entitlements-error",
                    ),
                    table,
                    spacing="3",
                    width="100%",
                ),
            ),
            table,
        ),
        on_mount=state.load,
        data_testid="entitlements-list",
        data_status=state.status,
        width="100%",
        **props,
    )


def _row(ent: Var[EntitlementView], show_plan: bool, locale: str | None) -> rx.Component:
    allowance = rx.match(
        ent.type,
        ("boolean", rx.text("Included")),
        rx.cond(ent.has_limit, rx.text(number(ent.limit, locale)), rx.text("Unlimited")),
    )
    status = rx.cond(
        ent.enabled,
        rx.fragment(),
        rx.badge("inactive", color_scheme="gray", variant="soft", margin_left="0.5em"),
    )
    cells = [
        rx.table.row_header_cell(rx.text(ent.feature_title, weight="medium"), status),
        rx.table.cell(type_badge(ent.type)),
        rx.table.cell(allowance),
    ]
    if show_plan:
        cells.append(rx.table.cell(rx.text(ent.product_name, **styles.MUTED_TEXT)))
    return rx.table.row(*cells, data_testid="entitlement", data_feature_key=ent.feature_key)
