"""Demo customers from the plans file, with usage so that a dashboard has something to show.

Idempotent across restarts: a customer that exists is left as it is (changes made through the
API survive a restart), and usage is only added to a period that has none yet for that
feature, each chunk under an idempotency key naming the period. The usage is spread over the
part of the period that has elapsed, so the history chart has a shape.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from billing_ui.core import validation as V
from billing_ui.server.clock import to_micros
from billing_ui.server.entitlements import resolve_entitlements
from billing_ui.server.periods import Period, period_containing
from billing_ui.server.plans import Feature
from billing_ui.server.service import BillingService, TrackCommand
from billing_ui.server.store import PeriodKey

MAX_CHUNKS = 30


def seed_demo_customers(service: BillingService) -> list[str]:
    """Create the plans' ``[customers.*]`` and seed their usage; returns their ids."""
    now = service.clock.now()
    seeded = []
    for spec in service.plans.customers:
        customer = service.find_customer(spec.customer_id)
        if customer is None:
            customer = service.upsert_customer(spec.customer_id, spec.products, spec.status)
        entitled = resolve_entitlements(service.plans, customer)
        for feature_key, quantity in spec.usage.items():
            if feature_key not in entitled or not entitled[feature_key].active:
                continue
            feature = service.plans.features[feature_key]
            period = period_containing(feature.reset or "never", now)
            key = PeriodKey(feature_key, to_micros(period.start), to_micros(period.end))
            if service.store.consumed(customer.pk, [key])[feature_key] > 0:
                continue
            stamp = period.start.strftime("%Y%m%dT%H")
            for i, (at, micros) in enumerate(_spread(quantity, feature, period, now)):
                cmd = TrackCommand(
                    spec.customer_id,
                    feature_key,
                    V.micros_to_quantity(micros),
                    idempotency_key=f"seed:{feature_key}:{stamp}:{i}",
                    metadata={"seed": True},
                )
                service.track_batch([cmd], now=at, rate_limited=False)
        seeded.append(spec.customer_id)
    return seeded


def _spread(
    quantity: float, feature: Feature, period: Period, now: datetime
) -> list[tuple[datetime, int]]:
    """Split ``quantity`` into uneven chunks at past instants of the period (whole units
    when the quantity is whole)."""
    if not period.resets:
        return [(now, V.quantity_to_micros(quantity))]
    step = timedelta(hours=1) if feature.reset == "day" else timedelta(days=1)
    elapsed = now - period.start
    count = max(1, min(MAX_CHUNKS, int(elapsed / step) + 1))
    total = V.quantity_to_micros(quantity)
    grain = 1_000_000 if total % 1_000_000 == 0 else 1
    units = total // grain
    weights = [2 + (i * 7919) % 5 for i in range(count)]
    shares = [units * w // sum(weights) for w in weights]
    for i in range(units - sum(shares)):
        shares[i % count] += 1
    first = max(period.start, now - step * (count - 1))
    chunks = []
    for i, share in enumerate(shares):
        if share:
            chunks.append((min(now, first + step * i), share * grain))
    return chunks
