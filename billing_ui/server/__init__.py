"""The embedded local billing server: the BillingOS HTTP API over SQLite (embedded) or
PostgreSQL (several processes).

Start it with ``python -m billing_ui.server`` (see ``--help``); embed it with
:func:`create_app`; run it inside tests with :func:`billing_ui.server.testing.running_server`.
The contract it implements is docs/api.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from billing_ui.server.app import create_app
    from billing_ui.server.clock import Clock, ManualClock, SystemClock
    from billing_ui.server.plans import Plans, PlansError, load_plans
    from billing_ui.server.sqlite_store import SqliteStore
    from billing_ui.server.store import StoreError, UsageStore, open_store

_HOMES = {
    "create_app": "app", "Clock": "clock", "ManualClock": "clock", "SystemClock": "clock",
    "Plans": "plans", "PlansError": "plans", "load_plans": "plans",
    "SqliteStore": "sqlite_store", "StoreError": "store", "UsageStore": "store",
    "open_store": "store",
}  # fmt: skip
"""Where each public name lives. Imported on first use (PEP 562), so that importing one
submodule (the store, the test helpers, the CLI) does not import the app and FastAPI with it:
half a second of CPU for each process that only starts servers (every benchmark, many
tests)."""


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


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
