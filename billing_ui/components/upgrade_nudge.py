"""``upgrade_nudge``: a banner (or a toast) that appears when a meter reaches 80 % of its limit
(the SDK's ``UpgradeNudge``, whose ``banner`` and ``toast`` styles these are), one per feature,
each dismissible for the rest of the session.

Driven by ``UsageMetricsState.near_limit``, so it appears and disappears as usage changes,
with no extra request; dismissals live in :class:`UpgradeNudgeState`.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from typing import Any, Literal

import reflex as rx
from reflex_base.vars.base import Var

from billing_ui.components import styles
from billing_ui.components._format import number
from billing_ui.states.metrics import UsageMetricsState
from billing_ui.states.nudge import UpgradeNudgeState
from billing_ui.states.views import MetricView

TOAST_CORNERS: dict[str, dict[str, str]] = {
    "bottom-right": {"bottom": "1.25em", "right": "1.25em"},
    "bottom-left": {"bottom": "1.25em", "left": "1.25em"},
    "top-right": {"top": "1.25em", "right": "1.25em"},
    "top-left": {"top": "1.25em", "left": "1.25em"},
}


def upgrade_nudge(
    *,
    upgrade_url: str | None = None,
    cta: str = "Upgrade",
    feature_key: str | None = None,
    style: Literal["banner", "toast"] = "banner",
    position: Literal["bottom-right", "bottom-left", "top-right", "top-left"] = "bottom-right",
    locale: str | None = None,
    **props: Any,
) -> rx.Component:
    """Nudges for the metrics at >= 80 % of their limit (or only ``feature_key``'s), with an
    upgrade link and a close button: full-width banners where the component sits
    (``style="banner"``), or toasts stacked in a corner of the window above the page
    (``style="toast"``, at ``position``). Numbers follow the browser's locale, or ``locale``::

        upgrade_nudge(upgrade_url="/pricing")
        upgrade_nudge(upgrade_url="/pricing", style="toast", position="bottom-left")
    """
    if style not in ("banner", "toast"):
        raise ValueError(f"upgrade_nudge(style=...) is 'banner' or 'toast', not {style!r}")
    if position not in TOAST_CORNERS:
        raise ValueError(f"upgrade_nudge(position=...) is one of {sorted(TOAST_CORNERS)}")
    near: Any = UsageMetricsState.near_limit
    if feature_key is not None:
        near = near.filter(lambda m: m.feature_key == feature_key)
    render = _banner if style == "banner" else _toast
    nudges = rx.foreach(
        near,
        lambda metric: rx.cond(
            UpgradeNudgeState.dismissed.contains(metric.feature_key),
            rx.fragment(),
            render(metric, upgrade_url, cta, locale),
        ),
    )
    if style == "toast":
        return rx.vstack(
            nudges,
            spacing="2",
            data_testid="upgrade-toasts",
            **styles.merge({**styles.TOAST_STACK, **TOAST_CORNERS[position]}, props),
        )
    return rx.vstack(
        nudges,
        spacing="2",
        width="100%",
        data_testid="upgrade-nudges",
        **props,
    )


def _message(metric: Var[MetricView], locale: str | None) -> Any:
    return rx.cond(
        metric.level == "over",
        f"You have reached your plan's limit of {metric.feature_title} "
        f"({number(metric.consumed, locale)} of {number(metric.limit, locale)}).",
        f"You have used {number(metric.percentage_used, locale)} % of your {metric.feature_title} "
        f"({number(metric.consumed, locale)} of {number(metric.limit, locale)}).",
    )


def _dismiss(metric: Var[MetricView]) -> rx.Component:
    return rx.icon_button(
        rx.icon("x", size=14),
        on_click=UpgradeNudgeState.dismiss(metric.feature_key),  # type: ignore[operator]
        size="1",
        variant="ghost",
        color_scheme="gray",
        aria_label="Dismiss",
        data_testid="nudge-dismiss",
    )


def _action(upgrade_url: str | None, cta: str, scheme: Any) -> rx.Component:
    if not upgrade_url:
        return rx.fragment()
    return rx.link(rx.button(cta, size="1", color_scheme=scheme), href=upgrade_url)


def _toast(
    metric: Var[MetricView], upgrade_url: str | None, cta: str, locale: str | None
) -> rx.Component:
    """One nudge as a toast: a small floating card, coloured like the meter's level."""
    scheme = rx.cond(metric.level == "over", "red", "amber")
    return rx.hstack(
        rx.icon("trending_up", size=18, color=styles.level_color(metric.level, 11)),
        rx.vstack(
            rx.text(metric.feature_title, weight="medium", size="2"),
            rx.text(_message(metric, locale), **styles.MUTED_TEXT),
            _action(upgrade_url, cta, scheme),
            spacing="2",
            align="start",
        ),
        _dismiss(metric),
        align="start",
        spacing="3",
        role="status",
        aria_live="polite",
        data_testid="upgrade-nudge",
        data_feature_key=metric.feature_key,
        **styles.merge(
            styles.TOAST, {"border_left": f"3px solid {styles.level_color(metric.level)}"}
        ),
    )


def _banner(
    metric: Var[MetricView], upgrade_url: str | None, cta: str, locale: str | None
) -> rx.Component:
    scheme = rx.cond(metric.level == "over", "red", "amber")
    return rx.callout.root(
        rx.callout.icon(rx.icon("trending_up")),
        rx.hstack(
            rx.callout.text(_message(metric, locale)),
            rx.spacer(),
            _action(upgrade_url, cta, scheme),
            _dismiss(metric),
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
