"""``feature_gate``: children only for customers entitled to a feature (the SDK's
``FeatureGate``), else an upgrade prompt or the caller's fallback.

The gate hides; it does not protect. The decision is made in the browser from
``FeatureEntitlementsState.enabled_features``, so anything behind a gate that matters (data,
actions) must also be checked in its event handlers on the server.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from typing import Any

import reflex as rx

from billing_ui.components import styles
from billing_ui.states.entitlements import FeatureEntitlementsState


def feature_gate(
    feature_key: str,
    *children: rx.Component,
    fallback: rx.Component | None = None,
    loading: rx.Component | None = None,
    feature_name: str | None = None,
    upgrade_url: str | None = None,
    **props: Any,
) -> rx.Component:
    """Render ``children`` when the customer has ``feature_key``; otherwise ``fallback`` (by
    default :func:`upgrade_prompt`); ``loading`` (a skeleton) until entitlements are known.
    Loads the entitlements on mount, so it works on pages without an ``on_load``::

        feature_gate(
            "sso",
            rx.text("SAML settings ..."),
            fallback=rx.text("Single sign-on comes with Enterprise."),
        )
    """
    denied = (
        fallback
        if fallback is not None
        else upgrade_prompt(feature_name or feature_key, upgrade_url=upgrade_url)
    )
    waiting = (
        loading
        if loading is not None
        else rx.skeleton(rx.box(height="6em", width="100%"), loading=True)
    )
    return rx.box(
        rx.cond(
            FeatureEntitlementsState.has_feature(feature_key),
            rx.fragment(*children),
            rx.cond(FeatureEntitlementsState.is_loading, waiting, denied),
        ),
        on_mount=FeatureEntitlementsState.load,
        data_testid="feature-gate",
        data_feature_key=feature_key,
        width="100%",
        **props,
    )


def upgrade_prompt(
    feature_name: str,
    *,
    upgrade_url: str | None = None,
    message: str | None = None,
) -> rx.Component:
    """The default fallback of a gate: what is locked and a way to upgrade::

    upgrade_prompt("Advanced reports", upgrade_url="/pricing")
    """
    action = (
        rx.link(rx.button(rx.icon("sparkles", size=16), "Upgrade"), href=upgrade_url)
        if upgrade_url
        else rx.fragment()
    )
    return rx.vstack(
        rx.icon("lock", size=28, color="var(--accent-9)"),
        rx.heading(f"{feature_name} is not on your plan", size="4"),
        rx.text(
            message or "Upgrade your plan to unlock it.",
            **styles.MUTED_TEXT,
        ),
        action,
        align="center",
        spacing="3",
        data_testid="upgrade-prompt",
        **styles.GATE_PROMPT,
    )
