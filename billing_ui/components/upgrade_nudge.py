"""``upgrade_nudge``: a banner that appears when a meter reaches 80 % of its limit (the SDK's
``UpgradeNudge``), one per feature, each dismissible for the rest of the session.

Driven by ``UsageMetricsState.near_limit``, so it appears and disappears as usage changes,
with no extra request; dismissals live in :class:`UpgradeNudgeState`.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from typing import Any

import reflex as rx
from reflex_base.vars.base import Var

from billing_ui.components import styles
from billing_ui.components._format import number
from billing_ui.states.metrics import UsageMetricsState
from billing_ui.states.nudge import UpgradeNudgeState
from billing_ui.states.views import MetricView


def upgrade_nudge(
    *,
    upgrade_url: str | None = None,
    cta: str = "Upgrade",
    feature_key: str | None = None,
    **props: Any,
) -> rx.Component:
    """Banners for the metrics at >= 80 % of their limit (or only ``feature_key``'s), with an
    upgrade link and a close button::

        upgrade_nudge(upgrade_url="/pricing")
    """
    near: Any = UsageMetricsState.near_limit
    if feature_key is not None:
        near = near.filter(lambda m: m.feature_key == feature_key)
    return rx.vstack(
        rx.foreach(
            near,
            lambda metric: rx.cond(
                UpgradeNudgeState.dismissed.contains(metric.feature_key),
                rx.fragment(),
                _banner(metric, upgrade_url, cta),
            ),
        ),
        spacing="2",
        width="100%",
        data_testid="upgrade-nudges",
        **props,
    )


def _banner(metric: Var[MetricView], upgrade_url: str | None, cta: str) -> rx.Component:
    over = metric.level == "over"
    scheme = rx.cond(over, "red", "amber")
    message = rx.cond(
        over,
        f"You have reached your plan's limit of {metric.feature_title} "
        f"({number(metric.consumed)} of {number(metric.limit)}).",
        f"You have used {number(metric.percentage_used)} % of your {metric.feature_title} "
        f"({number(metric.consumed)} of {number(metric.limit)}).",
    )
    action = (
        rx.link(rx.button(cta, size="1", color_scheme=scheme), href=upgrade_url)
        if upgrade_url
        else rx.fragment()
    )
    return rx.callout.root(
        rx.callout.icon(rx.icon("trending_up")),
        rx.hstack(
            rx.callout.text(message),
            rx.spacer(),
            action,
            rx.icon_button(
                rx.icon("x", size=14),
                on_click=UpgradeNudgeState.dismiss(metric.feature_key),  # type: ignore[operator]
                size="1",
                variant="ghost",
                color_scheme="gray",
                aria_label="Dismiss",
                data_testid="nudge-dismiss",
            ),
            align="center",
            width="100%",
            spacing="3",
        ),
        color_scheme=scheme,
        role="status",
        data_testid="upgrade-nudge",
        data_feature_key=metric.feature_key,
        **styles.NUDGE,
    )
