"""``useFeatureEntitlements()`` and ``useFeature`` / ``useFeatureGate`` as a Reflex state.

Entitlements load on page load (``on_load=FeatureEntitlementsState.load``), are refreshed by the
metrics loop every ``entitlements_refresh_interval`` seconds, and after a track. Gate a
component on a feature with ``rx.cond(FeatureEntitlementsState.has_feature("sso"), ...)``.

Feature checks (access with a reason, usage, limit, remaining) are loaded per feature with
``check(feature_key)`` — e.g. from a gate's ``on_mount`` — and invalidated by a track of that
feature. Unlike the SDK's gate, nothing here fires a callback on every render: a check is an
event, not a side effect of rendering.
"""

from __future__ import annotations

from typing import Any

import reflex as rx
from reflex_base.vars.base import Var

from billing_ui.core.customer import NoCustomerError
from billing_ui.core.errors import BillingError, InvalidInputError
from billing_ui.core.validation import check_feature_key
from billing_ui.states import _runtime as rt
from billing_ui.states.settings import get_settings
from billing_ui.states.views import CheckView, EntitlementView, check_view, entitlement_view


class FeatureEntitlementsState(rx.State):
    """Vars: ``entitlements``, ``enabled_features``, ``checks`` (by feature key),
    ``is_loading``, ``is_fetching``, ``error``, ``updated_at`` / ``data_updated_at``."""

    entitlements: list[EntitlementView] = []  # noqa: RUF012 - Reflex vars are declared this way
    checks: dict[str, CheckView] = {}  # noqa: RUF012
    is_loading: bool = True
    is_fetching: bool = False
    error: str = ""
    updated_at: str = ""
    data_updated_at: float = 0.0
    _customer: str = ""

    @rx.var
    def enabled_features(self) -> list[str]:
        return [e.feature_key for e in self.entitlements if e.enabled]

    @classmethod
    def has_feature(cls, feature_key: str | Var[str]) -> Var[bool]:
        """A frontend expression: does the customer have ``feature_key`` now?"""
        return cls.enabled_features.contains(feature_key)

    @rx.event(background=True)
    async def load(self) -> None:
        """Page ``on_load``: entitlements from the cache, fetched if stale."""
        await FeatureEntitlementsState.refresh_for(self)

    @rx.event(background=True)
    async def refetch(self) -> None:
        await FeatureEntitlementsState.refresh_for(self, force=True)

    @rx.event(background=True)
    async def check(self, feature_key: Any) -> None:
        """Load the access check for one feature (``useFeature``). ``feature_key`` comes from
        the browser, so it is validated like any input."""
        try:
            key = check_feature_key(feature_key)
        except InvalidInputError as exc:
            async with self:
                self.error = rt.message_for(exc)
            return
        async with self:
            try:
                customer = await rt.current_customer(self)
            except NoCustomerError:
                return
        try:
            entry = await rt.queries.feature_check(
                customer, key, stale_time=get_settings().refresh_interval * 0.9
            )
        except BillingError as exc:
            async with self:
                self.error = rt.message_for(exc)
            return
        async with self:
            if self._customer in ("", customer):
                self.checks = {**self.checks, key: check_view(entry.data)}

    @staticmethod
    async def refresh_for(state: rx.State, *, force: bool = False) -> None:
        """Refresh this tab's entitlements from inside any background handler (``state`` is
        that handler's state proxy)."""
        async with state:
            this = await state.get_state(FeatureEntitlementsState)
            try:
                customer = await rt.current_customer(state)
            except NoCustomerError as exc:
                this.entitlements, this.checks = [], {}
                this.error, this.is_loading = rt.message_for(exc), False
                return
            if this._customer and customer != this._customer:  # another customer's data
                this.entitlements, this.checks, this.is_loading = [], {}, True
            this._customer = customer
            this.is_fetching = True
        if force:
            rt.queries.cache.invalidate((rt.ENTITLEMENTS, customer))
        try:
            entry = await rt.queries.entitlements(
                customer, stale_time=get_settings().entitlements_refresh_interval
            )
        except BillingError as exc:
            async with state:
                this = await state.get_state(FeatureEntitlementsState)
                this.error, this.is_fetching, this.is_loading = rt.message_for(exc), False, False
            return
        async with state:
            this = await state.get_state(FeatureEntitlementsState)
            if this._customer != customer:
                return  # the customer changed while we were fetching
            this.entitlements = [entitlement_view(e) for e in entry.data]
            this.data_updated_at = entry.updated_at
            this.updated_at = rt.iso_utc(entry.updated_at)
            this.error, this.is_fetching, this.is_loading = "", False, False
