"""The demo's page shell: a top bar (brand, navigation, who is signed in, light/dark switch)
and a centred content column. Pages pass their title and body."""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from typing import Literal

import reflex as rx

from billing_ui.components import upgrade_nudge
from billing_ui.demo.session import DemoSessionState

NAV: list[tuple[str, str, str]] = [
    ("Dashboard", "/dashboard", "layout_dashboard"),
    ("Usage playground", "/playground", "mouse_pointer_click"),
    ("Security", "/security", "shield_check"),
]
PRICING_URL = "/#plans"
LOGO = "/logo.svg"
"""The demo's logo, from the repo's top-level assets/ folder (Reflex serves it at "/")."""


def brand() -> rx.Component:
    return rx.link(
        rx.hstack(
            rx.image(src=LOGO, alt="", width="28px", height="28px", data_testid="logo"),
            rx.text("Acme Cloud", weight="bold", size="4", color="var(--gray-12)"),
            align="center",
            spacing="2",
        ),
        href="/",
        underline="none",
    )


def _nav_link(label: str, href: str, icon: str) -> rx.Component:
    active = rx.State.router.page.path == href
    return rx.link(
        rx.hstack(rx.icon(icon, size=16), rx.text(label, size="2"), align="center", spacing="2"),
        href=href,
        underline="none",
        color=rx.cond(active, "var(--accent-11)", "var(--gray-11)"),
        font_weight=rx.cond(active, "600", "400"),
        padding="0.35em 0.7em",
        border_radius="var(--radius-3)",
        background=rx.cond(active, "var(--accent-a3)", "transparent"),
        _hover={"background": "var(--gray-a3)"},
        data_testid=f"nav-{href.strip('/')}",
    )


def account() -> rx.Component:
    return rx.cond(
        DemoSessionState.signed_in_as != "",
        rx.hstack(
            rx.avatar(fallback=DemoSessionState.signed_in_as[5:6].upper(), size="2", radius="full"),
            rx.vstack(
                rx.text(
                    DemoSessionState.signed_in_as,
                    size="2",
                    weight="medium",
                    data_testid="signed-in-as",
                ),
                rx.link(
                    "Switch customer",
                    on_click=DemoSessionState.sign_out,
                    size="1",
                    href="#",
                    data_testid="sign-out",
                ),
                spacing="0",
            ),
            align="center",
            spacing="2",
        ),
        rx.link(rx.button("Sign in", size="2", variant="soft"), href="/"),
    )


def top_bar() -> rx.Component:
    return rx.box(
        rx.hstack(
            brand(),
            rx.hstack(
                *[_nav_link(*item) for item in NAV], spacing="1", display=["none", "none", "flex"]
            ),
            rx.spacer(),
            account(),
            rx.color_mode.button(size="2", variant="ghost", data_testid="color-mode"),
            align="center",
            spacing="5",
            max_width="72rem",
            margin="0 auto",
            padding="0.75em 1.5em",
        ),
        border_bottom="1px solid var(--gray-a5)",
        background="var(--color-panel-translucent)",
        backdrop_filter="blur(8px)",
        position="sticky",
        top="0",
        z_index="10",
        width="100%",
    )


def page(
    title: str,
    subtitle: str,
    *body: rx.Component,
    nudge: Literal["banner", "toast"] | None = "banner",
) -> rx.Component:
    """A signed-in page: the top bar, the upgrade nudges (banners above the heading, or toasts
    in the window's corner), a heading and ``body``."""
    return rx.box(
        top_bar(),
        rx.vstack(
            upgrade_nudge(upgrade_url=PRICING_URL, style=nudge) if nudge else rx.fragment(),
            rx.vstack(
                rx.heading(title, size="7", weight="bold"),
                rx.text(subtitle, color="var(--gray-11)", size="3"),
                spacing="1",
            ),
            *body,
            spacing="5",
            max_width="72rem",
            margin="0 auto",
            padding="1.5em 1.5em 4em",
            width="100%",
        ),
        min_height="100vh",
        background="var(--gray-2)",
        width="100%",
    )


def section(title: str, *children: rx.Component, **props: object) -> rx.Component:
    return rx.vstack(
        rx.heading(title, size="4", weight="medium"),
        *children,
        spacing="3",
        width="100%",
        **props,
    )
