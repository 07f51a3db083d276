"""Which features a customer has: its subscriptions resolved against the catalogue.

When several products grant one feature, the grant from an active subscription wins over one
from an inactive subscription, then the most generous grant (unlimited beats any limit), then
the product listed first. Products no longer in the plans file are ignored, so removing a
product from the file takes its features away without touching the database.
"""

from __future__ import annotations

from dataclasses import dataclass

from billing_ui.core.models import ACTIVE_STATUSES
from billing_ui.server.plans import Grant, Plans, Product
from billing_ui.server.store import Customer, Subscription


@dataclass(frozen=True, slots=True)
class Entitled:
    """A feature as a customer has it: the winning grant, its product and subscription."""

    grant: Grant
    product: Product
    subscription: Subscription

    @property
    def active(self) -> bool:
        return self.subscription.status in ACTIVE_STATUSES


def resolve_entitlements(plans: Plans, customer: Customer) -> dict[str, Entitled]:
    """Feature key -> the grant that applies (see the module docstring for the rule).
    Products no longer in the plans file are ignored."""
    best: dict[str, Entitled] = {}
    for sub in customer.subscriptions:
        product = plans.products.get(sub.product_key)
        if product is None:
            continue
        for key, grant in product.grants.items():
            candidate = Entitled(grant, product, sub)
            current = best.get(key)
            if current is None or _rank(candidate) > _rank(current):
                best[key] = candidate
    order = list(plans.features)
    return dict(sorted(best.items(), key=lambda kv: order.index(kv[0])))


def _rank(e: Entitled) -> tuple[bool, float]:
    return (e.active, e.grant.generosity())
