"""Forget what the billing states hold for the previous customer: call on sign-in and sign-out.

The states refetch for whoever the resolver names next, but until then they would show the
previous customer's meters, checks and charts. An app's sign-in/sign-out handler calls this
(``await reset_billing_states(self)``) in the same event that changes the user, so nothing of
theirs is rendered for the next one, and a fetch for them still in flight is dropped.
"""

from __future__ import annotations

import reflex as rx

from billing_ui.states.entitlements import FeatureEntitlementsState
from billing_ui.states.history import UsageHistoryState
from billing_ui.states.metrics import UsageMetricsState
from billing_ui.states.track import TrackUsageState


async def reset_billing_states(state: rx.State) -> None:
    """Clear every billing state of ``state``'s session (inside a handler, or ``async with``
    a background handler's state)."""
    metrics = await state.get_state(UsageMetricsState)
    metrics.metrics, metrics.error, metrics.is_loading = [], "", True
    metrics._customer = ""  # a fetch for the previous customer still in flight is dropped
    ents = await state.get_state(FeatureEntitlementsState)
    ents.entitlements, ents.checks, ents.error, ents.is_loading = [], {}, "", True
    ents._customer = ""
    history = await state.get_state(UsageHistoryState)
    history.histories, history.errors = {}, {}
    track = await state.get_state(TrackUsageState)
    track.last_feature_key, track.error, track.is_error, track.is_success = "", "", False, False
