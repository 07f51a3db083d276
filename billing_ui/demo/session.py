"""Who is signed in to the demo: a server-side session, as a real app's auth would be.

The customer id lives in a backend-only var (``_customer_id``, never sent to or taken from the
browser after sign-in); ``sign_in`` accepts only the demo's own customers. The billing states
learn the customer through :func:`demo_customer`, the resolver the demo configures — exactly
the seam a real app fills with its own auth state.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from typing import Any

import reflex as rx

from billing_ui.demo.customers import is_demo_customer
from billing_ui.states.reset import switches_customer

HOME = "/dashboard"
SIGN_IN = "/"


class DemoSessionState(rx.State):
    """Vars: ``signed_in_as`` (display only; the resolver reads ``_customer_id``)."""

    _customer_id: str = ""
    signed_in_as: str = ""

    @rx.event
    @switches_customer
    def sign_in(self, customer_id: Any) -> Any:
        """Become ``customer_id`` (one of the demo's customers) and go to the dashboard. The
        billing states are reset in this same event (``switches_customer``), so nothing of the
        previous customer is shown, or arrives, after the new name appears."""
        if not is_demo_customer(customer_id):
            return rx.toast.error("No such demo customer.")
        self._customer_id = self.signed_in_as = str(customer_id)
        return rx.redirect(HOME)

    @rx.event
    @switches_customer
    def sign_out(self) -> Any:
        self._customer_id = self.signed_in_as = ""
        return rx.redirect(SIGN_IN)

    @rx.event
    def require_customer(self) -> Any:
        """``on_load`` of the signed-in pages: back to the sign-in page when nobody is."""
        if not self._customer_id:
            return rx.redirect(SIGN_IN)
        return None


async def demo_customer(state: rx.State) -> str | None:
    """The demo's customer resolver (``billing_ui.configure(customer_resolver=...)``)."""
    session = await state.get_state(DemoSessionState)
    return session._customer_id or None
