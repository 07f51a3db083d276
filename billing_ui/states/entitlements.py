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

import json
from typing import Final

import reflex as rx
from reflex_base.vars.base import Var

from billing_ui.core.customer import NoCustomerError
from billing_ui.core.errors import BillingError, InvalidInputError
from billing_ui.core.validation import check_feature_key
from billing_ui.settings import get_settings
from billing_ui.states import _runtime as rt
from billing_ui.states.base import BillingState, billing_event
from billing_ui.states.split_map import SplitMap
from billing_ui.states.status import (
    PENDING,
    SIGNED_OUT,
    show_failure,
    show_success,
    shows_fetching,
)
from billing_ui.states.views import CheckView, EntitlementView, check_view, entitlement_view

MAX_CHECKS: Final = 64
"""Feature checks one tab keeps (only known features are checked; this bounds even those)."""
CHECKS: Final = SplitMap[CheckView]()
"""``FeatureEntitlementsState.checks``, in bucket vars: a check sends its bucket, not all."""


class FeatureEntitlementsState(BillingState):
    """Vars: ``entitlements``, ``enabled_features``, ``checks`` (by feature key; a
    :class:`~billing_ui.states.split_map.SplitMap` over ``checks_0`` ... ``checks_7``: read it as
    one map, ``FeatureEntitlementsState.checks["sso"].has_access``), ``status``
    (see :mod:`billing_ui.states.status`), ``is_loading``, ``is_fetching``, ``error``,
    ``updated_at`` / ``data_updated_at`` (as :class:`UsageMetricsState`'s: an unchanged refresh
    sends nothing)."""

    entitlements: list[EntitlementView] = []  # noqa: RUF012 - Reflex vars are declared this way
    checks_0: dict[str, CheckView] = {}  # noqa: RUF012
    checks_1: dict[str, CheckView] = {}  # noqa: RUF012
    checks_2: dict[str, CheckView] = {}  # noqa: RUF012
    checks_3: dict[str, CheckView] = {}  # noqa: RUF012
    checks_4: dict[str, CheckView] = {}  # noqa: RUF012
    checks_5: dict[str, CheckView] = {}  # noqa: RUF012
    checks_6: dict[str, CheckView] = {}  # noqa: RUF012
    checks_7: dict[str, CheckView] = {}  # noqa: RUF012
    checks = CHECKS
    status: str = PENDING
    is_loading: bool = True
    is_fetching: bool = False
    error: str = ""
    updated_at: str = ""
    data_updated_at: float = 0.0
    _confirmed_at: float = 0.0  # the last successful fetch (see status.stamp)

    @rx.var
    def enabled_features(self) -> list[str]:
        return [e.feature_key for e in self.entitlements if e.enabled]

    @classmethod
    def has_feature(cls, feature_key: str | Var[str]) -> Var[bool]:
        """A frontend expression: does the customer have ``feature_key`` now?"""
        return cls.enabled_features.contains(feature_key)

    @classmethod
    def title_of(cls, feature_key: str, default: str) -> Var[str]:
        """A frontend expression: the feature's title from the customer's entitlements, else
        ``default`` (a feature the plan does not grant is not in them)."""
        ents: Var = cls.entitlements  # type: ignore[type-arg,assignment]
        key, fallback = json.dumps(feature_key), json.dumps(default)
        expr = f"(({ents} ?? []).find((e) => e.feature_key === {key})?.feature_title || {fallback})"
        return Var(_js_expr=expr, _var_type=str, _var_data=ents._get_all_var_data()).to(str)

    @billing_event
    async def load(self) -> None:
        """Page ``on_load``: entitlements from the cache, fetched if stale."""
        await FeatureEntitlementsState.refresh_for(self)

    @billing_event
    async def refetch(self) -> None:
        """Fetch now (coalesced per tab: one in flight, at most one more after it)."""
        await self._coalesced(
            "entitlements", lambda: FeatureEntitlementsState.refresh_for(self, force=True)
        )

    @billing_event
    async def check(self, feature_key: str) -> None:
        """Load the access check for one feature (``useFeature``). ``feature_key`` comes from
        the browser, so it is validated like any input, and only a feature the customer's
        entitlements, meters or the app's ``trackable`` name is checked: any other has no
        access (``has_feature`` is false), and is neither stored nor sent upstream."""
        try:
            key = check_feature_key(feature_key)
        except InvalidInputError as exc:
            async with self:
                self.error = rt.message_for(exc)
            return
        await self._coalesced(f"check:{key}", lambda: self._check(key))

    async def _check(self, key: str) -> None:
        async with self:
            try:
                ticket = await self._begin()
            except NoCustomerError:
                return
        try:
            if key not in await rt.known_features(ticket.customer):
                return
            entry = await rt.queries.feature_check(
                ticket.customer, key, stale_time=get_settings().refresh_interval * 0.9
            )
        except BillingError as exc:
            async with self:
                await self._confirm(ticket)
                self.error = rt.message_for(exc)
            return
        async with self:
            await self._confirm(ticket)
            # One bucket changes and is sent; beyond the cap an old check of the fullest
            # bucket goes (known keys are few anyway).
            CHECKS.put(self, key, check_view(entry.data), cap=MAX_CHECKS)

    @staticmethod
    async def refresh_for(state: BillingState, *, force: bool = False) -> None:
        """Refresh this tab's entitlements from inside any billing handler (``state`` is that
        handler's state proxy)."""
        async with state:
            this = await state.get_state(FeatureEntitlementsState)
            try:
                ticket = await this._begin()
            except NoCustomerError as exc:
                this.status, this.error, this.is_loading = SIGNED_OUT, rt.message_for(exc), False
                return
            if shows_fetching(this.status, force=force):  # not on a background refresh
                this.is_fetching = True
        customer = ticket.customer
        if force:
            await rt.queries.cache.invalidate((rt.ENTITLEMENTS, customer))
        started = rt.queries.cache.clock()
        try:
            entry = await rt.queries.entitlements(
                customer, stale_time=get_settings().entitlements_refresh_interval
            )
        except BillingError as exc:
            async with state:
                this = await state.get_state(FeatureEntitlementsState)
                await this._confirm(ticket)
                show_failure(this, rt.message_for(exc), has_data=bool(this.entitlements))
            return
        async with state:
            this = await state.get_state(FeatureEntitlementsState)
            await this._confirm(ticket)
            views = [entitlement_view(e) for e in entry.data]
            changed = views != this.entitlements
            this.entitlements = views  # an equal list is not assigned (BillingState): no delta
            outage = rt.outage_message() if entry.fetched_at < started else ""
            show_success(this, entry.updated_at, changed=changed, outage=outage)
