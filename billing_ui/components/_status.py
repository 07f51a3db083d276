"""How a component says what it does not know: stale data, a failed first load, nobody signed
in. Shared by the components so each status reads the same everywhere (see
:mod:`billing_ui.states.status` for the statuses)."""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from typing import Any

import reflex as rx

from billing_ui.components import styles
from billing_ui.components._format import ago


def retry_button(on_click: Any, busy: Any, *, color_scheme: str, testid: str) -> Any:
    return rx.button(
        rx.cond(busy, rx.spinner(size="1"), rx.icon("refresh_cw", size=14)),
        "Retry",
        on_click=on_click,
        size="1",
        variant="soft",
        color_scheme=color_scheme,
        data_testid=testid,
    )


def stale_callout(
    updated_at: Any, error: Any, *, retry: Any, busy: Any, testid: str
) -> rx.Component:
    """The data below is the last known: when it is from, that it is being retried, and why
    (``error``, a neutral sentence)."""
    return rx.callout.root(
        rx.callout.icon(rx.icon("clock_alert")),
        rx.hstack(
            rx.vstack(
                rx.callout.text(
                    f"Last updated {ago(updated_at)}, retrying.",
                    weight="medium",
                    data_testid="stale-note",
                ),
                rx.callout.text(error, size="1", data_testid=testid),
                spacing="0",
            ),
            rx.spacer(),
            retry_button(retry, busy, color_scheme="amber", testid="usage-retry"),
            align="center",
            width="100%",
        ),
        color_scheme="amber",
        role="status",
        width="100%",
    )


def error_callout(error: Any, *, retry: Any, busy: Any, testid: str) -> rx.Component:
    """Nothing is known: the first load failed. Say so, never "none"."""
    return rx.callout.root(
        rx.callout.icon(rx.icon("triangle_alert")),
        rx.hstack(
            rx.callout.text(error, data_testid=testid),
            rx.spacer(),
            retry_button(retry, busy, color_scheme="red", testid="usage-retry"),
            align="center",
            width="100%",
        ),
        color_scheme="red",
        role="alert",
        width="100%",
    )


def calm_note(text: Any, *, icon: str, testid: str) -> rx.Component:
    """One quiet line (signed out, access unknown): no colour that suggests a fault."""
    return rx.hstack(
        rx.icon(icon, size=16, color="var(--gray-9)"),
        rx.text(text, **styles.MUTED_TEXT),
        align="center",
        spacing="2",
        data_testid=testid,
    )
