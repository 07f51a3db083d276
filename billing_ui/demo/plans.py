"""The plans of the sample catalogue as pricing cards (the demo's "upgrade" destination).

Read from the same TOML as the demo customers; a hosted BillingOS has its own pricing page."""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from typing import Any

import reflex as rx

from billing_ui.demo.customers import catalogue


def _grant(feature: dict[str, Any], grant: Any) -> str:
    title = feature.get("title", "?")
    if grant is True:
        return title
    if isinstance(grant, dict):
        if grant.get("unlimited"):
            return f"{title}: unlimited"
        if "limit" in grant:
            return f"{title}: {grant['limit']:,}"
    return title


def plan_cards() -> rx.Component:
    data = catalogue()
    features = data.get("features", {})
    cards = []
    for key, product in data.get("products", {}).items():
        items = [
            rx.hstack(
                rx.icon("check", size=14, color="var(--accent-9)"),
                rx.text(_grant(features.get(f, {}), g), size="2"),
                align="center",
                spacing="2",
            )
            for f, g in product.get("features", {}).items()
        ]
        cards.append(
            rx.card(
                rx.vstack(
                    rx.heading(product.get("name", key), size="5"),
                    rx.text(product.get("description", ""), size="2", color="var(--gray-11)"),
                    rx.separator(),
                    *items,
                    spacing="2",
                ),
                size="2",
                data_testid=f"plan-{key}",
            )
        )
    return rx.grid(*cards, columns=rx.breakpoints(initial="1", md="3"), gap="1em", width="100%")
