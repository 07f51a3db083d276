"""Forget what the billing states hold for the previous customer: on sign-in and sign-out.

The billing states belong to one owner (:class:`~billing_ui.states.base.BillingState`); a reset
clears every one of them and starts a new generation, so an answer still in flight for the
previous customer is dropped when it arrives. Decorate the app's sign-in / sign-out handler
with :func:`switches_customer` (or call ``await reset_billing_states(self)`` in it), in the
same event that changes the user.
"""

from __future__ import annotations

from billing_ui.states.base import reset_billing_states, switches_customer

__all__ = ["reset_billing_states", "switches_customer"]
