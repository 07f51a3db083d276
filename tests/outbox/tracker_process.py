"""An app process that tracks usage with a UsageTracker, for the kill -9 tests.

``python tracker_process.py OUTBOX BASE_URL CUSTOMER N LEASE_S`` (OUTBOX: a SQLite file or a
``postgresql://`` URL): track N events of
``api_calls`` for CUSTOMER (N may be 0: only deliver what the outbox holds), print
``queued N`` once every ``track()`` has returned, then keep the worker delivering until
stdin closes, and shut down.
The test kills it with SIGKILL at the moment it chooses. ``LEASE_S`` is the outbox's claim
lease: what a killed process had claimed is claimable again that long after.
"""

from __future__ import annotations

import sys

from billing_ui.core import BillingClient
from billing_ui.core.outbox import Outbox
from billing_ui.core.outbox_postgres import PostgresOutboxStore
from billing_ui.core.outbox_sqlite import SQLiteOutboxStore
from billing_ui.core.tracker import UsageTracker


def main() -> None:
    outbox, base_url, customer = sys.argv[1], sys.argv[2], sys.argv[3]
    n, lease_s = int(sys.argv[4]), float(sys.argv[5])
    client = BillingClient(base_url=base_url, max_retries=0, timeout=2.0)
    store = (
        PostgresOutboxStore(outbox)
        if outbox.startswith("postgresql://")
        else SQLiteOutboxStore(outbox)
    )
    tracker = UsageTracker(client, outbox=Outbox(store, lease_s=lease_s), flush_interval=0.2)
    for _ in range(n):
        tracker.track(customer, "api_calls", 1)
    print(f"queued {n}", flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills us)
    tracker.shutdown()
    client.close()
    store.close()


if __name__ == "__main__":
    main()
