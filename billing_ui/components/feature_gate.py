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
from reflex_base.vars.base import Var

from billing_ui.components import styles
from billing_ui.components._format import humanize
from billing_ui.components._status import calm_note
from billing_ui.states.entitlements import FeatureEntitlementsState
from billing_ui.states.status import ERROR, PENDING, SIGNED_OUT, STALE, SUCCESS


def feature_gate(
    feature_key: str,
    *children: rx.Component,
    fallback: rx.Component | None = None,
    loading: rx.Component | None = None,
    unknown: rx.Component | None = None,
    fail_open: bool = False,
    feature_name: str | None = None,
    upgrade_url: str | None = None,
    **props: Any,
) -> rx.Component:
    """Render ``children`` when the customer has ``feature_key``; ``fallback`` (by default
    :func:`upgrade_prompt`, which names the feature by its title) when the entitlements say
    they do not; ``loading`` (a skeleton) until they are known. Loads the entitlements on
    mount, so it works on pages without an ``on_load``::

        feature_gate(
            "sso",
            rx.text("SAML settings ..."),
            fallback=rx.text("Single sign-on comes with Enterprise."),
            upgrade_url="/pricing",
        )

    When access cannot be known (the entitlements failed to load and nothing is cached) the
    gate never says "not on your plan": it shows ``unknown`` (a neutral line by default), or
    the children with ``fail_open=True`` (for features whose loss would hurt more than a free
    ride). Data that could not be refreshed (stale) still decides. Signed out: nothing.
    With ``upgrade_url``, a custom ``fallback`` also gets the upgrade link.
    """
    state = FeatureEntitlementsState
    title = (
        feature_name
        if feature_name is not None
        else state.title_of(feature_key, humanize(feature_key))
    )
    if fallback is None:
        denied = upgrade_prompt(title, upgrade_url=upgrade_url)
    elif upgrade_url:
        denied = rx.vstack(fallback, _upgrade_link(upgrade_url), spacing="3", width="100%")
    else:
        denied = fallback
    waiting = (
        loading
        if loading is not None
        else rx.skeleton(rx.box(height="6em", width="100%"), loading=True)
    )
    not_known = (
        unknown
        if unknown is not None
        else calm_note(
            f"Access to {title} can't be checked right now.",
            icon="circle_help",
            testid="gate-unknown",
        )
    )
    decided = (state.status == SUCCESS) | (state.status == STALE)
    show = decided & state.has_feature(feature_key)
    if fail_open:
        show = show | (state.status == ERROR)
    return rx.box(
        rx.cond(
            show,
            rx.fragment(*children),
            rx.match(
                state.status,
                (PENDING, waiting),
                (ERROR, not_known),
                (SIGNED_OUT, rx.fragment()),
                denied,
            ),
        ),
        on_mount=state.load,
        data_testid="feature-gate",
        data_feature_key=feature_key,
        data_status=state.status,
        width="100%",
        **props,
    )


def _upgrade_link(upgrade_url: str) -> rx.Component:
    return rx.link(
        rx.button(rx.icon("sparkles", size=16), "Upgrade"),
        href=upgrade_url,
        data_testid="upgrade-link",
    )


def upgrade_prompt(
    feature_name: str | Var[str],
    *,
    upgrade_url: str | None = None,
    message: str | None = None,
) -> rx.Component:
    """The default fallback of a gate: what is locked and a way to upgrade::

    upgrade_prompt("Advanced reports", upgrade_url="/pricing")
    """
    action = _upgrade_link(upgrade_url) if upgrade_url else rx.fragment()
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
