"""The demo's customers: who may be picked on the sign-in page.

By default the customers seeded by the local server's sample catalogue
(``billing_ui/server/plans.toml``), read straight from the TOML so the two never disagree and
without importing the server. ``BILLING_UI_DEMO_CUSTOMERS`` (comma-separated ids) replaces the
list, e.g. for customers that exist in a hosted BillingOS, or for the e2e tests' own customers.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

ENV_CUSTOMERS = "BILLING_UI_DEMO_CUSTOMERS"


@dataclass(frozen=True, slots=True)
class DemoCustomer:
    customer_id: str
    plan: str
    blurb: str


@cache
def catalogue() -> dict[str, Any]:
    """The sample catalogue (features, products, customers) as parsed TOML."""
    text = resources.files("billing_ui.server").joinpath("plans.toml").read_text("utf-8")
    return tomllib.loads(text)


def _from_catalogue(customer_id: str) -> DemoCustomer:
    data = catalogue()
    spec = data.get("customers", {}).get(customer_id, {})
    products = [data.get("products", {}).get(p, {}) for p in spec.get("products", [])]
    plan = " + ".join(p.get("name", "?") for p in products) or "No plan"
    status = spec.get("status", "active")
    if products and status != "active":
        plan = f"{plan} ({status})"
    blurb = products[0].get("description", "") if products else "Signed up, never subscribed."
    return DemoCustomer(customer_id, plan, blurb)


def demo_customers() -> list[DemoCustomer]:
    """The customers the sign-in page offers, in order."""
    override = os.environ.get(ENV_CUSTOMERS, "").strip()
    if override:
        ids = [c.strip() for c in override.split(",") if c.strip()]
    else:
        ids = list(catalogue().get("customers", {}))
    return [_from_catalogue(c) for c in ids]


def is_demo_customer(customer_id: object) -> bool:
    return isinstance(customer_id, str) and any(
        c.customer_id == customer_id for c in demo_customers()
    )
