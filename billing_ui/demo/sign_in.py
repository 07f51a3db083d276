"""Route ``/``: pick one of the demo customers (the demo's stand-in for a login form), and the
plans they can be on (the target of the upgrade links)."""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

import reflex as rx

from billing_ui.demo.customers import DemoCustomer, demo_customers
from billing_ui.demo.layout import top_bar
from billing_ui.demo.plans import plan_cards
from billing_ui.demo.session import DemoSessionState

ROUTE = "/"
TITLE = "Acme Cloud · Sign in"


def _customer_card(customer: DemoCustomer) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.avatar(
                    fallback=customer.customer_id.removeprefix("demo_")[:1].upper() or "?",
                    radius="full",
                ),
                rx.vstack(
                    rx.text(customer.customer_id, weight="bold", size="3"),
                    rx.badge(customer.plan, variant="soft"),
                    spacing="1",
                ),
                align="center",
                spacing="3",
            ),
            rx.text(customer.blurb, size="2", color="var(--gray-11)"),
            rx.spacer(),
            rx.button(
                "Sign in",
                rx.icon("arrow_right", size=16),
                on_click=DemoSessionState.sign_in(customer.customer_id),  # type: ignore[operator]
                width="100%",
                variant="surface",
                id=f"sign-in-{customer.customer_id}",
            ),
            spacing="3",
            height="100%",
        ),
        size="2",
    )


def page() -> rx.Component:
    return rx.box(
        top_bar(),
        rx.vstack(
            rx.vstack(
                rx.heading("Usage-based billing, in pure Python", size="8", weight="bold"),
                rx.text(
                    "Sign in as one of the demo customers to see their meters, record usage "
                    "and meet the plan limits.",
                    size="4",
                    color="var(--gray-11)",
                ),
                spacing="2",
            ),
            rx.grid(
                *[_customer_card(c) for c in demo_customers()],
                columns=rx.breakpoints(initial="1", sm="2", lg="3"),
                gap="1em",
                width="100%",
            ),
            rx.heading("Plans", size="6", id="plans", padding_top="1em"),
            plan_cards(),
            spacing="5",
            max_width="72rem",
            margin="0 auto",
            padding="2.5em 1.5em 4em",
            width="100%",
        ),
        min_height="100vh",
        background="var(--gray-2)",
    )
