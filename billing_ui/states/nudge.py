"""Which upgrade nudges this tab's visitor has dismissed (the SDK's ``UpgradeNudge`` memory).

Per session and customer, on purpose: a dismissal lasts as long as the Reflex session (the
tab) and the signed-in customer (a customer change clears it, as it clears every billing
state), so a nudge that was waved away does not nag again on every navigation, but comes back
another day.
Only display data: feature keys, validated, and capped so a client cannot grow the state.
"""

from __future__ import annotations

from typing import Any

import reflex as rx

from billing_ui.core.errors import InvalidInputError
from billing_ui.core.validation import check_feature_key
from billing_ui.states.base import BillingState

MAX_DISMISSED = 64


class UpgradeNudgeState(BillingState):
    """Vars: ``dismissed`` (feature keys whose nudge was closed in this session)."""

    dismissed: list[str] = []  # noqa: RUF012 - Reflex vars are declared this way

    @rx.event
    def dismiss(self, feature_key: Any) -> None:
        """Hide the nudge of ``feature_key`` for the rest of the session."""
        try:
            key = check_feature_key(feature_key)
        except InvalidInputError:
            return
        if key not in self.dismissed and len(self.dismissed) < MAX_DISMISSED:
            self.dismissed = [*self.dismissed, key]

    @rx.event
    def show_all(self) -> None:
        """Show every nudge again."""
        self.dismissed = []
