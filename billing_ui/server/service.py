"""The billing rules of the local server: who may use what, and how much is left.

Routes (``app.py``) parse and authenticate; the store (``store.py``) keeps the data; this
module decides. It resolves a customer's subscriptions against the catalogue, places usage in
the right period, turns store outcomes into BillingOS answers, and refuses with the exact
codes and messages of docs/api.md (as :class:`~billing_ui.server.errors.ApiProblem`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, NamedTuple

from billing_ui.core import validation as V
from billing_ui.core.errors import BillingOSMessage, FieldError
from billing_ui.core.models import (
    Bucket,
    FeatureCheck,
    FeatureCheckMetadata,
    FeatureEntitlement,
    TrackUsageResult,
    UsageHistory,
    UsageHistoryPoint,
    UsageMetric,
    percentage_used,
)
from billing_ui.server import tokens, wire_json
from billing_ui.server.batch_answer import BatchAnswer, Shape, TrackedBatch, recorded_now, shape
from billing_ui.server.clock import Clock, from_micros, to_micros
from billing_ui.server.entitlements import Entitled, resolve_entitlements
from billing_ui.server.errors import ApiProblem, bad_request, customer_not_found, invalid_input
from billing_ui.server.options import WireOptions
from billing_ui.server.periods import Period, Reset, hour_floor, period_containing
from billing_ui.server.plans import Grant, Plans
from billing_ui.server.ratelimit import RateLimiter
from billing_ui.server.store import (
    MAX_CONSUMED_MICROS,
    AggregateKey,
    Customer,
    PeriodKey,
    PlainBatch,
    PlainOutcome,
    Subscription,
    TrackItem,
    TrackOutcome,
    TrackStatus,
    UsageRead,
    UsageStore,
)

IDEMPOTENCY_WINDOW: Final = timedelta(hours=24)
_ENTITLED_CACHE_SIZE: Final = 10_000
_MICROS: Final = 1_000_000
"""Stored millionths per unit (:func:`billing_ui.core.validation.micros_to_quantity`)."""
MAX_HISTORY_POINTS: Final = {"hour": 744, "day": 366}
"""A ``never``-resetting feature's history shows at most this many recent buckets."""
NO_SUBSCRIPTION: Final = "No active subscription with this feature"

_BUCKET_SPAN: Final = {"hour": timedelta(hours=1), "day": timedelta(days=1)}


class TrackCommand(NamedTuple):
    """One validated track request, whichever endpoint it came through (a named tuple: a
    batch makes a thousand of them)."""

    customer_id: str
    feature_key: str
    quantity: float
    idempotency_key: str | None = None
    metadata: dict[str, Any] | None = None


Command = tuple[str, str, float, str | None, dict[str, Any] | None]
"""A :class:`TrackCommand` as a plain tuple, the same fields in the same order: what the
batch reader builds, 1,000 at a time (a plain tuple costs a fraction of a named one)."""


class Columns(NamedTuple):
    """A batch of events without metadata, field by field (what the batch reader builds
    for the plainest bodies: :func:`~billing_ui.server.batch_body.plain_columns`)."""

    customer_ids: Sequence[str]
    feature_keys: Sequence[str]
    quantities: Sequence[float]
    idempotency_keys: Sequence[str]

    def commands(self) -> list[Command]:
        """The same events as commands."""
        return list(zip(*self, [None] * len(self.customer_ids), strict=True))


class UsageNow(NamedTuple):
    """A metrics read at one instant: what the store read, for which periods, and when."""

    read: UsageRead
    periods: dict[str, Period]
    now: datetime


def _period_keys(periods: Mapping[str, Period]) -> list[PeriodKey]:
    return [PeriodKey(k, to_micros(p.start), to_micros(p.end)) for k, p in periods.items()]


class _Target(NamedTuple):
    """What every event of one request for one customer and feature shares, resolved once."""

    aggregate: AggregateKey
    grant: Grant
    period: Period
    hard_limit_micros: int | None
    limit_units: float | None
    period_end: datetime | None


class _Batch:
    """What every event of one track request shares: the instant, and lookups done once."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.now_us = to_micros(now)
        self.cutoff_us = to_micros(now - IDEMPOTENCY_WINDOW)
        self.hour_us = to_micros(hour_floor(now))
        self.customers: dict[str, Customer | None] = {}
        self.entitlements: dict[str, Mapping[str, Entitled]] = {}
        self.targets: dict[tuple[str, str], _Target | ApiProblem] = {}
        self._periods: dict[str, tuple[Period, PeriodKey]] = {}
        self._shapes: dict[tuple[Any, ...], Shape] = {}

    def shape(self, target: _Target) -> Shape:
        """The answer text ``target``'s recorded events share (:func:`_shape`), once per
        distinct text in the request: it depends on the feature, limit and period, not on
        the customer, so the 100 customers of a batch on one plan share one."""
        key = (target.aggregate[1:], target.grant.limit_micros, target.period_end)
        found = self._shapes.get(key)
        if found is None:
            found = self._shapes[key] = _shape(target)
        return found

    def period(self, feature_key: str, reset: Reset) -> tuple[Period, PeriodKey]:
        if feature_key not in self._periods:
            period = period_containing(reset, self.now)
            key = PeriodKey(feature_key, to_micros(period.start), to_micros(period.end))
            self._periods[feature_key] = (period, key)
        return self._periods[feature_key]


_Decided = tuple[dict[int, ApiProblem], list[TrackItem], list[_Target], list[TrackOutcome]]
"""What :meth:`BillingService._decide` returns: refusals by index, then the items written,
their targets and their outcomes, in order."""


def _shape(target: _Target) -> Shape:
    """The answer text a target's recorded events share (as :meth:`BillingService._answer`
    lays out their usage)."""
    return shape(
        target.aggregate[1],
        target.grant.limit_micros,
        target.limit_units,
        target.period.start,
        target.period_end,
    )


@dataclass(frozen=True, slots=True)
class Tracked:
    """One track's answer as plain data in the wire's shape, and its rate-limit headers."""

    data: dict[str, Any]
    rate_headers: dict[str, str]

    @property
    def result(self) -> TrackUsageResult:
        return TrackUsageResult.model_validate(self.data)

    def body(self) -> bytes:
        return wire_json.dumps(self.data)


class BillingService:
    """Everything the routes ask of the billing side, for one catalogue and one store."""

    def __init__(
        self,
        store: UsageStore,
        plans: Plans,
        clock: Clock,
        *,
        rate_limit_per_minute: int = 0,
        options: WireOptions | None = None,
    ) -> None:
        self.store = store
        self.plans = plans
        self.clock = clock
        self.options = options or WireOptions()
        self.limiter = RateLimiter(rate_limit_per_minute, clock)
        self._entitled_cache: dict[tuple[Subscription, ...], Mapping[str, Entitled]] = {}
        self.plain_batches = 0
        """Batches recorded by :meth:`_track_plain` (read in-process by the tests, which must
        know that the column-wise path was taken: it answers as the general one does)."""

    # -- customers --
    def _entitled(self, customer: Customer) -> Mapping[str, Entitled]:
        """The customer's features (:func:`resolve_entitlements`), remembered per set of
        subscriptions: they depend on nothing else (the plans are fixed for the service's
        life), and a batch of 1,000 events to 100 customers would resolve 100 of them."""
        found = self._entitled_cache.get(customer.subscriptions)
        if found is None:
            if len(self._entitled_cache) >= _ENTITLED_CACHE_SIZE:
                self._entitled_cache.clear()
            found = self._entitled_cache[customer.subscriptions] = resolve_entitlements(
                self.plans, customer
            )
        return found

    def customer(self, customer_id: str) -> Customer:
        found = self.store.get_customer(customer_id)
        if found is None:
            raise customer_not_found(customer_id)
        return found

    def knows(self, customer_id: str) -> bool:
        """Whether the customer exists (the session read endpoints answer an unknown one with
        an empty result, as BillingOS does, instead of an error)."""
        return self.store.get_customer(customer_id) is not None

    def find_customer(self, customer_id: str) -> Customer | None:
        """The customer, or ``None`` when it does not exist (seeding creates it then)."""
        return self.store.get_customer(customer_id)

    def upsert_customer(
        self, customer_id: str, products: Sequence[str], status: str | None
    ) -> Customer:
        """Create or re-subscribe a customer; ``status`` ``None`` means ``active``."""
        errors = [
            FieldError(f"products.{i}", "unknown_product", f"no product {key!r} in the plans")
            for i, key in enumerate(products)
            if key not in self.plans.products
        ]
        if len(set(products)) != len(products):
            errors.append(FieldError("products", "unique", "must not list a product twice"))
        if errors:
            raise invalid_input(errors)
        return self.store.upsert_customer(
            customer_id, products, status or "active", to_micros(self.clock.now())
        )

    def prune_expired(self) -> int:
        """Forget idempotency keys older than the 24-hour window (they protect nothing any
        more); returns how many. Run at start-up and then hourly by the app's lifespan."""
        return self.store.prune_idempotency_keys(to_micros(self.clock.now() - IDEMPOTENCY_WINDOW))

    def ping(self) -> None:
        """Raise if the database cannot answer (for /health)."""
        self.store.ping()

    # -- session tokens --
    def revoke_token(self, jti: str) -> None:
        """Refuse the token ``jti`` from now on; revocations are kept as long as any token
        could still be valid, then forgotten."""
        now_us = to_micros(self.clock.now())
        forget = now_us - (tokens.MAX_TTL_S + 3600) * 1_000_000
        self.store.revoke_token(jti, now_us, forget)

    def is_revoked(self, jti: str) -> bool:
        return self.store.is_revoked(jti)

    # -- tracking --
    def track(self, cmd: TrackCommand) -> Tracked:
        """Record one event (or replay it); raise the BillingOS refusal otherwise."""
        return self.record(cmd, self.admit(cmd.customer_id))

    def admit(self, customer_id: str) -> dict[str, str]:
        """Count one track against the customer's rate limit: its headers, or raise the 429.
        (Memory only: the routes call it on the event loop, then hand the event to the group
        commit, so a track is counted once however it is written.)"""
        if not self.limiter.enabled:
            return {}
        decision = self.limiter.hit(customer_id)
        headers = decision.headers()
        if not decision.allowed:
            raise _rate_limited(decision.reset_s, headers)
        return headers

    def record(self, cmd: TrackCommand, rate_headers: dict[str, str] | None = None) -> Tracked:
        """Record one admitted event alone, waiting for the database's write lock if need be.
        (The HTTP routes record through :mod:`billing_ui.server.group_commit` instead.)"""
        [answer] = self.record_group([cmd])
        if isinstance(answer, ApiProblem):
            raise answer
        return Tracked(answer, rate_headers or {})

    def track_batch(
        self,
        cmds: Sequence[Command] | Columns,
        *,
        now: datetime | None = None,
        rate_limited: bool = True,
    ) -> TrackedBatch:
        """Record many events in one transaction; each succeeds or fails on its own.

        ``now`` and ``rate_limited=False`` are for seeding and bulk loading only. What events
        share is worked out once per request (a customer's entitlements, a feature's period,
        the rate limit per customer), so the work per event is a few dict lookups.
        """
        refused: dict[int, ApiProblem] = {}
        if rate_limited and self.limiter.enabled:
            cmds = cmds.commands() if isinstance(cmds, Columns) else cmds
            refused = self._rate_limit(cmds)
        batch = _Batch(now or self.clock.now())
        if not refused and (isinstance(cmds, Columns) or cmds):
            columns = cmds if isinstance(cmds, Columns) else _columns(cmds)
            plain = None if columns is None else self._track_plain(columns, batch)
            if plain is not None:
                return plain
        events = cmds.commands() if isinstance(cmds, Columns) else cmds
        decided = self._decide(events, refused, batch, self._many)
        assert decided is not None  # track_many always answers
        return self._batch_answer(len(events), decided, batch)

    def _track_plain(self, columns: Columns, batch: _Batch) -> TrackedBatch | None:
        """The batch recorded and answered column-wise (:meth:`UsageStore.track_plain`,
        :func:`~billing_ui.server.batch_answer.recorded_now`) when every event will be
        recorded, the common case; ``None``, having written nothing, when any may not (no
        target, metadata, a key missing or given twice, a replay, a limit reached: the
        general path then decides each event, with the same outcome for the others).

        The general path's Python per event (resolve, decide, answer: three passes over
        1,000 events) cost more CPU than the database's statements for the same rows
        (``bench/db_ceiling.py``); here the per-event work is ``map``/``zip`` in C over
        plain columns: each event's target is an index into the batch's distinct
        (customer, feature) pairs, keyed by the customer alone when the batch has one
        feature (a string's hash is cached, a tuple's is not)."""
        customer_ids, feature_keys, quantities, keys = columns
        n = len(keys)
        if not n or (len(set(keys)) != n and len(set(zip(customer_ids, keys, strict=True))) != n):
            return None  # a key given twice for one customer
        features = set(feature_keys)
        groups: Sequence[Any] = customer_ids
        if len(features) != 1:
            groups = list(zip(customer_ids, feature_keys, strict=True))
        index = {group: i for i, group in enumerate(dict.fromkeys(groups))}
        self._look_up(batch, list(dict.fromkeys(customer_ids)))
        targets: list[_Target] = []
        for group in index:
            cid, feature = (group, feature_keys[0]) if len(features) == 1 else group
            target = self._target(cid, feature, batch)
            if isinstance(target, ApiProblem):
                return None
            targets.append(target)
        micros = {q: V.quantity_to_micros(q) for q in set(quantities)}
        if min(micros.values()) <= 0:
            return None
        of_event = list(map(index.__getitem__, groups))
        q_micros = list(map(micros.__getitem__, quantities))
        plain = PlainBatch(
            [t.aggregate for t in targets],
            [
                MAX_CONSUMED_MICROS
                if t.hard_limit_micros is None
                else min(t.hard_limit_micros, MAX_CONSUMED_MICROS)
                for t in targets
            ],
            of_event,
            q_micros,
            keys,
            batch.hour_us,
            batch.now_us,
            batch.cutoff_us,
        )

        def answer(before: PlainOutcome) -> TrackedBatch:
            """(Run while the commit runs, on SQLite: see ``SqliteStore.track_plain``.)"""
            running = list(before)
            consumed: list[int] = []
            add = consumed.append
            for i, q in zip(of_event, q_micros, strict=True):
                running[i] = usage = running[i] + q
                add(usage)
            shapes = [batch.shape(t) for t in targets]
            return recorded_now(batch.now, shapes, of_event, q_micros, consumed, keys)

        done = self.store.track_plain(plain, answer)
        self.plain_batches += done is not None
        return done

    def record_group(self, cmds: Sequence[TrackCommand]) -> list[dict[str, Any] | ApiProblem]:
        """Record admitted single events of different requests in one transaction (group
        commit, :mod:`billing_ui.server.group_commit`): each event's answer (a
        ``TrackUsageResult`` as plain data) or refusal, as if each had been recorded alone,
        in order. Waits for the database's write lock if need be."""
        answers = self._write_each(cmds, {}, _Batch(self.clock.now()), self._many)
        assert answers is not None
        return answers

    def record_group_now(
        self, cmds: Sequence[TrackCommand]
    ) -> list[dict[str, Any] | ApiProblem] | None:
        """:meth:`record_group` if the store can do it at once without waiting on anything
        (SQLite with its write lock free: for the event loop); ``None``, having written
        nothing, otherwise."""
        if not self.store.inline_reads:
            return None
        return self._write_each(cmds, {}, _Batch(self.clock.now()), self.store.track_now)

    def _many(
        self, items: Sequence[TrackItem], now_us: int, cutoff_us: int
    ) -> list[TrackOutcome] | None:
        return self.store.track_many(items, now_us, cutoff_us)

    def _write_each(
        self,
        cmds: Sequence[Command],
        refused: Mapping[int, ApiProblem],
        batch: _Batch,
        write: Callable[[Sequence[TrackItem], int, int], list[TrackOutcome] | None],
    ) -> list[dict[str, Any] | ApiProblem] | None:
        """Each command's answer or refusal (those in ``refused`` are not written), all
        written in one call of ``write``; ``None`` if ``write`` declined."""
        decided = self._decide(cmds, refused, batch, write)
        if decided is None:
            return None
        problems, items, chosen, outcomes = decided
        done = zip(items, chosen, outcomes, strict=True)
        answers: list[dict[str, Any] | ApiProblem] = []
        for i in range(len(cmds)):
            if problems and i in problems:
                answers.append(problems[i])
            else:
                item, target, outcome = next(done)
                answers.append(self._answer(outcome, item[3], target, batch))
        return answers

    def _batch_answer(self, n: int, decided: _Decided, batch: _Batch) -> TrackedBatch:
        """A batch's answer written straight as JSON text (:mod:`.batch_answer`): a
        recorded or replayed event from its target's :class:`Shape`, anything else from
        :meth:`_answer`, so each rule of an answer is written once."""
        problems, items, chosen, outcomes = decided
        out = BatchAnswer(batch.now, batch.now_us)
        shapes: dict[int, Shape] = {}
        recorded, replayed = TrackStatus.RECORDED, TrackStatus.REPLAYED
        done = zip(items, chosen, outcomes, strict=True)
        for i in range(n):
            if problems and i in problems:
                out.problem(i, problems[i])
                continue
            item, target, outcome = next(done)
            status, feature_key, quantity_micros, recorded_at_us, consumed = outcome
            if (status is recorded or status is replayed) and feature_key == target.aggregate[1]:
                found = shapes.get(id(target))
                if found is None:
                    found = shapes[id(target)] = batch.shape(target)
                out.usage(
                    i, found, status is replayed, quantity_micros, recorded_at_us, consumed, item[3]
                )
                continue
            answer = self._answer(outcome, item[3], target, batch)
            if isinstance(answer, ApiProblem):
                out.problem(i, answer)
            else:
                out.answer(i, answer)
        return out.finish()

    def _decide(
        self,
        cmds: Sequence[Command],
        refused: Mapping[int, ApiProblem],
        batch: _Batch,
        write: Callable[[Sequence[TrackItem], int, int], list[TrackOutcome] | None],
    ) -> _Decided | None:
        """Resolve each command's target, write those that have one (not those in
        ``refused``) in one call of ``write``: the refusals by index, the items written,
        their targets and their outcomes; ``None`` if ``write`` declined.

        The per-event work is written inline, with plain tuples (the store's items, and the
        targets and outcomes zipped back): it runs once per event of every batch, and
        ``bench/db_ceiling.py`` compares the whole with the database's own statements."""
        self._look_up(batch, list({cmd[0]: None for cmd in cmds}))
        problems = dict(refused)
        items: list[TrackItem] = []
        chosen: list[_Target] = []
        targets, hour_us, to_micros = batch.targets, batch.hour_us, V.quantity_to_micros
        micros: dict[float, int] = {}  # per quantity: a batch repeats a few
        for i, (customer_id, feature_key, quantity, idempotency_key, metadata) in enumerate(cmds):
            if problems and i in problems:
                continue
            target = targets.get((customer_id, feature_key))
            if target is None:
                target = self._target(customer_id, feature_key, batch)
            if isinstance(target, ApiProblem):
                problems[i] = target
                continue
            q = micros.get(quantity)
            if q is None:
                q = micros[quantity] = to_micros(quantity)
            items.append(
                (target.aggregate, q, hour_us, idempotency_key, metadata, target.hard_limit_micros)
            )
            chosen.append(target)
        outcomes = write(items, batch.now_us, batch.cutoff_us) if items else []
        if outcomes is None:
            return None
        return problems, items, chosen, outcomes

    def _rate_limit(self, cmds: Sequence[Command]) -> dict[int, ApiProblem]:
        """The events the rate limit refuses, by index: one count per customer per request,
        with the same outcome as counting the events one by one (the first ones fit)."""
        per_customer: dict[str, list[int]] = {}
        for i, cmd in enumerate(cmds):
            per_customer.setdefault(cmd[0], []).append(i)
        refused: dict[int, ApiProblem] = {}
        for cid, indexes in per_customer.items():
            allowed, decision = self.limiter.hit_up_to(cid, len(indexes))
            if allowed < len(indexes):
                problem = _rate_limited(decision.reset_s, decision.headers())
                refused.update(dict.fromkeys(indexes[allowed:], problem))
        return refused

    def _look_up(self, batch: _Batch, customer_ids: Sequence[str]) -> None:
        """Fetch these customers (one query however many) and resolve their entitlements."""
        found = self.store.get_customers(customer_ids)
        for cid in customer_ids:
            customer = batch.customers[cid] = found.get(cid)
            if customer is not None:
                batch.entitlements[cid] = self._entitled(customer)

    def _target(self, customer_id: str, feature_key: str, batch: _Batch) -> _Target | ApiProblem:
        """Resolve who and what a track is about (once per customer and feature in a
        request), or the refusal; looks each customer up once per request."""
        if customer_id not in batch.customers:
            self._look_up(batch, [customer_id])
        customer = batch.customers[customer_id]
        found: _Target | ApiProblem
        if customer is None:
            found = customer_not_found(customer_id)
        else:
            # BillingOS's order: first the grant (404), then the feature's type (400).
            feature = self.plans.features.get(feature_key)
            entitled = batch.entitlements[customer_id].get(feature_key)
            if feature is None or entitled is None or not entitled.active:
                found = ApiProblem(404, "RES_NOT_FOUND", NO_SUBSCRIPTION)
            elif feature.type != "usage_quota" or feature.reset is None:
                found = bad_request(BillingOSMessage.NOT_USAGE_QUOTA)
            else:
                period, key = batch.period(feature.key, feature.reset)
                grant = entitled.grant
                limit = grant.limit_micros
                found = _Target(
                    (customer.pk, key.feature_key, key.start_us, key.end_us),
                    grant,
                    period,
                    limit if grant.hard_limit else None,
                    None if limit is None else limit / _MICROS,
                    period.end if period.resets else None,
                )
        batch.targets[(customer_id, feature_key)] = found
        return found

    def _answer(
        self, outcome: TrackOutcome, idempotency_key: str | None, target: _Target, batch: _Batch
    ) -> dict[str, Any] | ApiProblem:
        """A ``TrackUsageResult`` as plain data (its fields in the model's order, so that it
        encodes to the model's bytes), or the refusal."""
        status, feature_key, quantity_micros, recorded_at_us, consumed = outcome
        if status is TrackStatus.QUOTA_EXCEEDED:
            return bad_request(
                BillingOSMessage.QUOTA_EXCEEDED,
                details={
                    "feature_key": feature_key,
                    "limit": target.grant.limit,
                    "consumed": V.micros_to_quantity(consumed),
                    "requested": V.micros_to_quantity(quantity_micros),
                },
            )
        if status is TrackStatus.KEY_REUSED and self.options.reject_reused_keys:
            return ApiProblem(
                409,
                "IDEMPOTENCY_KEY_REUSED",
                "This idempotency key was used in the last 24 hours for a different feature "
                "or quantity; use a new key for a new event",
                details={"idempotency_key": idempotency_key},
            )
        usage = None  # a reused key replays another feature's event (BillingOS's way)
        if feature_key == target.aggregate[1]:
            limit = target.grant.limit_micros
            usage = {  # a UsageSnapshot, in its fields' order
                "consumed_units": consumed / _MICROS,
                "limit_units": target.limit_units,
                "remaining_units": None if limit is None else max(0, limit - consumed) / _MICROS,
                "period_start": target.period.start,
                "period_end": target.period_end,
            }
        return {
            "success": True,
            "feature_key": feature_key,
            "quantity": quantity_micros / _MICROS,
            "recorded_at": (
                batch.now if recorded_at_us == batch.now_us else from_micros(recorded_at_us)
            ),
            "usage": usage,
            "duplicate": status is not TrackStatus.RECORDED,
            "idempotency_key": idempotency_key,
        }

    # -- reading --
    # Each read has an ``*_if_known`` form for the session endpoints, which answer an unknown
    # customer with an empty result: ``None`` then, from the same single customer lookup.
    def metrics(self, customer_id: str, feature_key: str | None = None) -> list[UsageMetric]:
        """Usage of each metered feature of the customer's active subscriptions, in its
        current period; only ``feature_key`` when given (an unknown key gives none)."""
        found = self.metrics_if_known(customer_id, feature_key)
        if found is None:
            raise customer_not_found(customer_id)
        return found

    def metrics_if_known(
        self, customer_id: str, feature_key: str | None = None
    ) -> list[UsageMetric] | None:
        """The customer and the usage of every metered feature of the catalogue are read
        together, in one round trip (:meth:`UsageStore.customer_usage`); the customer's
        entitlements then pick which of them to show."""
        now = self.clock.now()
        periods = self._metered_periods(now)
        read = self.store.customer_usage(customer_id, _period_keys(periods))
        return self.metrics_of(UsageNow(read, periods, now), feature_key)

    async def metrics_async(
        self, customer_id: str, feature_key: str | None = None
    ) -> list[UsageMetric]:
        """:meth:`metrics` from an ``async`` route, on the event loop (:meth:`usage_now`)."""
        found = self.metrics_of(await self.usage_now(customer_id), feature_key)
        if found is None:
            raise customer_not_found(customer_id)
        return found

    async def usage_now(self, customer_id: str, revoked_jti: str | None = None) -> UsageNow:
        """The metrics read from an ``async`` route: the customer, its usage in every metered
        period, and whether the session token ``revoked_jti`` was revoked, in one statement
        that waits on the event loop (:meth:`UsageStore.customer_usage_async`), so a session
        metrics read is one round trip and no thread hop. :meth:`metrics_of` renders it."""
        now = self.clock.now()
        periods = self._metered_periods(now)
        read = await self.store.customer_usage_async(
            customer_id, _period_keys(periods), revoked_jti
        )
        return UsageNow(read, periods, now)

    def _metered_periods(self, now: datetime) -> dict[str, Period]:
        return {
            key: period_containing(f.reset or "never", now)
            for key, f in self.plans.features.items()
            if f.type == "usage_quota"
        }

    def metrics_of(
        self, usage: UsageNow, feature_key: str | None = None
    ) -> list[UsageMetric] | None:
        """The metrics of the customer read in ``usage`` (``None`` if unknown); only
        ``feature_key`` when given."""
        customer = usage.read.customer
        if customer is None:
            return None
        if (
            feature_key is not None
            and feature_key not in self.plans.features
            and not self.options.strict_feature_filter
        ):
            feature_key = None  # BillingOS skips a filter whose feature it cannot find
        return [
            _metric(e, usage.periods[key], usage.read.consumed[key], usage.now)
            for key, e in self._entitled(customer).items()
            if e.active
            and e.grant.feature.type == "usage_quota"
            and (feature_key is None or key == feature_key)
        ]

    def entitlements(self, customer_id: str) -> list[FeatureEntitlement]:
        return self._entitlements(self.customer(customer_id))

    def entitlements_if_known(self, customer_id: str) -> list[FeatureEntitlement] | None:
        customer = self.find_customer(customer_id)
        return None if customer is None else self._entitlements(customer)

    def _entitlements(self, customer: Customer) -> list[FeatureEntitlement]:
        return [
            FeatureEntitlement(
                feature_key=key,
                feature_title=e.grant.feature.title,
                feature_type=e.grant.feature.type,
                granted_at=from_micros(e.subscription.granted_at_us),
                product_name=e.product.name,
                subscription_status=e.subscription.status,
                properties=e.grant.properties() or None,
            )
            for key, e in self._entitled(customer).items()
        ]

    def check(self, customer_id: str, feature_key: str) -> FeatureCheck:
        """May the customer use the feature now? (``useFeature`` / ``useFeatureGate``)."""
        return self._check(self.customer(customer_id), feature_key)

    def check_if_known(self, customer_id: str, feature_key: str) -> FeatureCheck | None:
        customer = self.find_customer(customer_id)
        return None if customer is None else self._check(customer, feature_key)

    def _check(self, customer: Customer, feature_key: str) -> FeatureCheck:
        entitled = self._entitled(customer).get(feature_key)
        if entitled is None:
            return FeatureCheck(
                feature_key=feature_key, has_access=False, reason="no_active_subscription"
            )
        grant, feature = entitled.grant, entitled.grant.feature
        if not entitled.active:
            return FeatureCheck(
                feature_key=feature_key, has_access=False, reason="subscription_not_active"
            )
        if feature.type != "usage_quota" or feature.reset is None:
            return FeatureCheck(
                feature_key=feature_key,
                has_access=True,
                limit=grant.limit,
                metadata=FeatureCheckMetadata(type=feature.type),
            )
        period = period_containing(feature.reset, self.clock.now())
        used = self.store.consumed(
            customer.pk, [PeriodKey(feature_key, to_micros(period.start), to_micros(period.end))]
        )[feature_key]
        exhausted = (
            grant.hard_limit and grant.limit_micros is not None and used >= grant.limit_micros
        )
        return FeatureCheck(
            feature_key=feature_key,
            has_access=not exhausted,
            reason="quota_exceeded" if exhausted else None,
            limit=grant.limit,
            unlimited=grant.unlimited,
            usage=V.micros_to_quantity(used),
            metadata=FeatureCheckMetadata(
                remaining=_remaining(grant, used) if not grant.unlimited else 0.0,
                resets_at=period.end if period.resets else None,
                type=feature.type,
            ),
        )

    def history(self, customer_id: str, feature_key: str, bucket: Bucket | None) -> UsageHistory:
        """Usage per hour or day over the current period (hourly buckets, never raw events)."""
        customer = self.customer(customer_id)
        feature = self.plans.features.get(feature_key)
        if feature is None:
            raise ApiProblem(404, "RES_NOT_FOUND", f"Feature not found: {feature_key}")
        if feature.type != "usage_quota" or feature.reset is None:
            raise bad_request(BillingOSMessage.NOT_USAGE_QUOTA)
        bucket = bucket or ("hour" if feature.reset == "day" else "day")
        span = _BUCKET_SPAN[bucket]
        now = self.clock.now()
        period = period_containing(feature.reset, now)
        last = _bucket_floor(now, bucket)
        first = max(period.start, last - span * (MAX_HISTORY_POINTS[bucket] - 1))
        rows = self.store.hourly(customer.pk, feature_key, to_micros(first), to_micros(last + span))
        total = self.store.consumed(
            customer.pk, [PeriodKey(feature_key, to_micros(period.start), to_micros(period.end))]
        )[feature_key]
        per_bucket: dict[datetime, int] = {}
        for row in rows:
            at = _bucket_floor(from_micros(row.hour_start_us), bucket)
            per_bucket[at] = per_bucket.get(at, 0) + row.quantity_micros
        running = total - sum(per_bucket.values())  # usage of the period before the window
        points = []
        at = first
        while at <= last:
            running += per_bucket.get(at, 0)
            points.append(
                UsageHistoryPoint(
                    at=at,
                    quantity=V.micros_to_quantity(per_bucket.get(at, 0)),
                    cumulative=V.micros_to_quantity(running),
                )
            )
            at += span
        return UsageHistory(
            feature_key=feature_key,
            period_start=period.start,
            period_end=period.end if period.resets else None,
            bucket=bucket,
            points=points,
        )


# --- helpers ----------------------------------------------------------------------------
def _columns(cmds: Sequence[Command]) -> Columns | None:
    """``cmds`` as :class:`Columns`, or ``None`` if any has metadata or no idempotency key."""
    customer_ids, feature_keys, quantities, keys, metadata = zip(*cmds, strict=True)
    if metadata.count(None) != len(cmds) or None in keys:
        return None
    return Columns(customer_ids, feature_keys, quantities, keys)


def _rate_limited(retry_after_s: int, headers: Mapping[str, str]) -> ApiProblem:
    return ApiProblem(
        429,
        "RATE_LIMIT_EXCEEDED",
        f"Too many requests; retry after {retry_after_s} s",
        details={"retryAfter": retry_after_s},
        headers=headers,
    )


def _remaining(grant: Grant, used_micros: int) -> float | None:
    if grant.limit_micros is None:
        return None
    return V.micros_to_quantity(max(0, grant.limit_micros - used_micros))


def _metric(e: Entitled, period: Period, consumed_micros: int, now: datetime) -> UsageMetric:
    grant = e.grant
    limit = grant.limit_micros
    percentage = percentage_used(consumed_micros, limit)  # as BillingOS: a whole number
    return UsageMetric(
        feature_key=grant.feature.key,
        feature_title=grant.feature.title,
        product_name=e.product.name,
        consumed=V.micros_to_quantity(consumed_micros),
        limit=grant.limit,
        remaining=_remaining(grant, consumed_micros),
        percentage_used=percentage,
        period_start=period.start,
        period_end=period.end if period.resets else None,
        resets_in_days=period.resets_in_days(now) if period.resets else None,
        unlimited=grant.unlimited,
    )


def _bucket_floor(when: datetime, bucket: str) -> datetime:
    hour = hour_floor(when)
    return hour if bucket == "hour" else hour.replace(hour=0)
