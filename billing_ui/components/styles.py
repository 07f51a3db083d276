"""Every look of the billing components, in one module.

Colours are Radix Themes tokens (``var(--accent-9)``, ``var(--amber-9)``, ...), never hex
values: an app's ``rx.theme(accent_color=..., appearance=...)`` re-colours the components, and
light and dark mode both stay readable because Radix picks each scale for the appearance.
Callers restyle any component with ordinary style props (``usage_meter(m, width="20em")``),
which are applied last and so win over the defaults below.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from typing import Any, Final

import reflex as rx
from reflex_base.vars.base import Var

# --- meter levels -----------------------------------------------------------------------
# MetricView.level -> the Radix colour scale of its bar and badge. "near" is >= 80 % used (the
# SDK's UpgradeNudge threshold), "over" is >= 100 %.
LEVEL_SCHEME: Final[dict[str, str]] = {
    "normal": "accent",
    "near": "amber",
    "over": "red",
    "unlimited": "accent",
}
LEVEL_LABEL: Final[dict[str, str]] = {
    "normal": "",
    "near": "Near limit",
    "over": "Limit reached",
    "unlimited": "Unlimited",
}


def level_match(level: Var[str], values: dict[str, Any], default: Any) -> Any:
    """A frontend ``switch`` on a meter's level (one branch per entry of ``values``)."""
    return rx.match(level, *values.items(), default)


def level_color(level: Var[str], step: int = 9) -> Any:
    """The CSS colour of a level at Radix scale step ``step`` (9 = solid, 11 = text)."""
    return level_match(
        level,
        {name: f"var(--{scheme}-{step})" for name, scheme in LEVEL_SCHEME.items()},
        f"var(--accent-{step})",
    )


def level_badge(level: Var[str], **props: Any) -> rx.Component:
    """A level's badge ("Near limit", "Unlimited", ...). Levels on the theme's accent get no
    ``color_scheme`` at all (Radix has no "accent" value; a badge without one inherits the
    theme's), so ``rx.theme(accent_color="grass")`` re-colours them; warnings keep their scale."""
    label = level_match(level, LEVEL_LABEL, "")
    warning = {name: s for name, s in LEVEL_SCHEME.items() if s != "accent"}
    return rx.cond(
        Var.create(list(warning)).contains(level),
        rx.badge(label, color_scheme=level_match(level, warning, "gray"), **props),
        rx.badge(label, **props),
    )


# --- building blocks --------------------------------------------------------------------
CARD: Final[dict[str, Any]] = {
    "width": "100%",
    "padding": "1.1em 1.25em",
    "border_radius": "var(--radius-4)",
    "border": "1px solid var(--gray-a5)",
    "background": "var(--color-panel-solid)",
    "box_shadow": "var(--shadow-1)",
}

METER_TRACK: Final[dict[str, Any]] = {
    "width": "100%",
    "height": "0.6em",
    "border_radius": "var(--radius-6, 9999px)",
    "background": "var(--gray-a4)",
    "overflow": "hidden",
    "position": "relative",
}

METER_FILL: Final[dict[str, Any]] = {
    "height": "100%",
    "border_radius": "inherit",
    # The fill slides to its new width: a click's effect is visible, not a jump cut.
    "transition": "width 180ms ease-out, background-color 180ms linear",
}

UNLIMITED_FILL: Final[dict[str, Any]] = {
    **METER_FILL,
    "width": "100%",
    "background": (
        "repeating-linear-gradient(135deg, var(--accent-a5) 0 8px, var(--accent-a3) 8px 16px)"
    ),
}

MUTED_TEXT: Final[dict[str, Any]] = {"color": "var(--gray-11)", "size": "2"}

GRID_COLUMNS: Final = rx.breakpoints(initial="1", sm="2", lg="3")
"""Meters per row by viewport width (Radix breakpoints)."""

GRID: Final[dict[str, Any]] = {"gap": "1em", "width": "100%"}

SKELETON_HEIGHT: Final = "8.5em"

CHART_HEIGHT: Final = 220

CHART_AREA: Final[dict[str, Any]] = {
    "stroke": "var(--accent-9)",
    "fill": "var(--accent-a5)",
}

CHART_AXIS: Final[dict[str, Any]] = {"stroke": "var(--gray-9)", "font_size": "12px"}

CHART_LIMIT: Final[dict[str, Any]] = {"stroke": "var(--red-9)", "stroke_dasharray": "4 4"}

NUDGE: Final[dict[str, Any]] = {"width": "100%"}

TOAST_STACK: Final[dict[str, Any]] = {
    "position": "fixed",
    "z_index": "50",
    "width": "min(24rem, calc(100vw - 2.5em))",
    # Only the toasts take clicks, not the empty stack over the page.
    "pointer_events": "none",
}

TOAST: Final[dict[str, Any]] = {
    **CARD,
    "padding": "0.9em 1em",
    "box_shadow": "var(--shadow-4)",
    "pointer_events": "auto",
}

GATE_PROMPT: Final[dict[str, Any]] = {
    **CARD,
    "border_style": "dashed",
    "background": "var(--accent-a2)",
    "text_align": "center",
    "padding": "2em 1.5em",
}


def merge(base: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    """``base`` overridden by the caller's props (the caller always wins)."""
    return {**base, **props}


MUTED_TEXT_BOX: Final[dict[str, Any]] = {"min_height": "1.5em"}
"""Room for a button's feedback line, reserved so the layout does not jump."""
