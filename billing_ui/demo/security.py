"""Route ``/security``: settings behind feature gates (single sign-on for Enterprise, priority
support for Pro and up)."""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

import reflex as rx

from billing_ui.components import feature_gate
from billing_ui.demo.layout import PRICING_URL, section
from billing_ui.demo.layout import page as shell
from billing_ui.demo.session import DemoSessionState
from billing_ui.states.entitlements import FeatureEntitlementsState
from billing_ui.states.metrics import UsageMetricsState

ROUTE = "/security"
TITLE = "Acme Cloud · Security"
ON_LOAD = [DemoSessionState.require_customer, FeatureEntitlementsState.load, UsageMetricsState.poll]


def _sso_settings() -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.icon("key_round", size=20, color="var(--accent-9)"),
                rx.heading("SAML single sign-on", size="4"),
                rx.badge("Enabled", color_scheme="grass"),
                align="center",
                spacing="2",
            ),
            rx.text("Identity provider metadata URL", size="2", weight="medium"),
            rx.input(placeholder="https://idp.example.com/metadata.xml", width="100%"),
            rx.hstack(
                rx.switch(default_checked=True),
                rx.text("Require SSO for every member", size="2"),
                align="center",
            ),
            spacing="3",
            width="100%",
        ),
        width="100%",
        data_testid="sso-settings",
    )


def _support() -> rx.Component:
    return rx.card(
        rx.hstack(
            rx.icon("headset", size=20, color="var(--accent-9)"),
            rx.vstack(
                rx.text("Priority support", weight="medium"),
                rx.text(
                    "Call +1 555 0100, any time. Median answer: 4 minutes.",
                    size="2",
                    color="var(--gray-11)",
                ),
                spacing="1",
            ),
            align="center",
            spacing="3",
        ),
        width="100%",
        data_testid="priority-support",
    )


def page() -> rx.Component:
    return shell(
        "Security",
        "Organisation-wide settings. Some of them depend on your plan.",
        section(
            "Single sign-on",
            feature_gate(
                "sso",
                _sso_settings(),
                feature_name="Single sign-on",
                upgrade_url=PRICING_URL,
            ),
        ),
        section(
            "Support",
            feature_gate(
                "priority_support",
                _support(),
                fallback=rx.callout(
                    "Priority support comes with the Pro and Enterprise plans.",
                    icon="info",
                    data_testid="support-fallback",
                ),
            ),
        ),
        nudge=None,
    )
