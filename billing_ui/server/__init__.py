"""The embedded local billing server: the BillingOS HTTP API over SQLite (embedded) or
PostgreSQL (several processes).

Start it with ``python -m billing_ui.server`` (see ``--help``); embed it with
:func:`create_app`; run it inside tests with :func:`billing_ui.server.testing.running_server`.
The contract it implements is docs/api.md.
"""

from __future__ import annotations

from billing_ui.server.app import create_app
from billing_ui.server.clock import Clock, ManualClock, SystemClock
from billing_ui.server.plans import Plans, PlansError, load_plans
from billing_ui.server.sqlite_store import SqliteStore
from billing_ui.server.store import StoreError, UsageStore, open_store

__all__ = [
    "Clock",
    "ManualClock",
    "Plans",
    "PlansError",
    "SqliteStore",
    "StoreError",
    "SystemClock",
    "UsageStore",
    "create_app",
    "load_plans",
    "open_store",
]
