"""One module of wire schemas: every request and response model, the error envelope and the
literal types of the wire are defined once, in billing_ui/core/models.py, and both the client
and the local server use those very classes (the server's own types — plans, periods, store
rows — stay in the server)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import billing_ui
from billing_ui.core import models
from billing_ui.server.app import create_app
from billing_ui.server.plans import load_plans
from billing_ui.server.sqlite_store import SqliteStore

PACKAGE = Path(billing_ui.__file__).parent
SHARED = [
    "UpsertCustomerRequest", "UsageHistory", "UsageHistoryPoint", "SubscriptionStatus", "Bucket",
    "HealthStatus", "Success", "ErrorEnvelope", "ACTIVE_STATUSES",
]  # fmt: skip


@pytest.mark.parametrize("name", SHARED)
def test_each_wire_schema_is_defined_once(name: str) -> None:
    definition = re.compile(rf"^(class {name}\b|{name}(: [^=]+)? = )", re.M)
    where = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*.py"))
        if definition.search(path.read_text())
    ]
    assert where == ["billing_ui/core/models.py"]


def test_the_server_answers_with_the_shared_models(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "b.db")
    try:
        app = create_app(store=store, plans=load_plans())
        used = {
            route.response_model
            for route in app.routes
            if getattr(route, "response_model", None) is not None
        }
    finally:
        store.close()
    assert used and all(getattr(models, m.__name__) is m for m in used)
