"""``python -m billing_ui.server``: start the local billing server.

    python -m billing_ui.server --port 8700 --db ./billing.db --plans billing_ui/server/plans.toml
    python -m billing_ui.server --database-url postgresql://user:pass@host/billing

Every option has a default that works out of the box (loopback, port 8700, ./billing.db, the
packaged sample plans with demo customers, the public local key ``sk_test_billing_ui_local``).
``--database-url`` (or ``$BILLING_UI_DATABASE_URL``) puts the data in PostgreSQL instead, where
any number of server processes (on one host behind a load balancer, or on several) share it
with the same guarantees.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI

from billing_ui.core._constants import ENV_SECRET_KEY, LOCAL_SECRET_KEY
from billing_ui.server import workers
from billing_ui.server.app import create_app
from billing_ui.server.clock import SystemClock
from billing_ui.server.options import ENV_CORS_ORIGINS, CorsPolicy, WireOptions
from billing_ui.server.plans import PlansError, default_plans_path, load_plans
from billing_ui.server.seed import seed_demo_customers
from billing_ui.server.slow_requests import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    protocol_with_deadlines,
)
from billing_ui.server.store import StoreError, UsageStore, is_postgres_url, open_store

DEFAULT_PORT = 8700
DEFAULT_RATE_LIMIT = 1000  # BillingOS: 1,000 tracks per customer per minute
ENV_DATABASE_URL = "BILLING_UI_DATABASE_URL"

log = logging.getLogger("billing_ui.server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m billing_ui.server",
        description="The billing_ui local billing server (BillingOS-compatible API over SQLite "
        "or PostgreSQL).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="(default: %(default)s)")
    parser.add_argument(
        "--db",
        default="./billing.db",
        help="SQLite file, created if missing (default: %(default)s)",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"postgresql://user:password@host:port/dbname: keep the data in PostgreSQL instead "
        f"of --db (default: ${ENV_DATABASE_URL}, else SQLite)",
    )

    parser.add_argument(
        "--plans", default=None, help=f"plans TOML (default: the sample {default_plans_path()})"
    )
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"the secret key clients must send (default: ${ENV_SECRET_KEY}, else "
        f"{LOCAL_SECRET_KEY})",
    )
    parser.add_argument(
        "--seed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="create the plans' demo customers with some usage (default: on; idempotent)",
    )
    parser.add_argument(
        "--rate-limit-per-minute",
        type=int,
        default=DEFAULT_RATE_LIMIT,
        help="tracked events per customer per minute, 0 = off (default: %(default)s); "
        "counted in each server process, so N workers admit up to N times this",
    )
    parser.add_argument(
        "--cors-origins",
        default=None,
        help=f"browser origins allowed to call, comma-separated: http(s) origins, 'loopback' "
        f"(any port of localhost/127.0.0.1/[::1]), '*' or 'none' (default: ${ENV_CORS_ORIGINS}, "
        "else 'loopback' when --host is loopback and 'none' otherwise)",
    )
    parser.add_argument(
        "--reject-reused-keys",
        action="store_true",
        help="refuse an idempotency key reused for another event with 409 (default: off, "
        "BillingOS's behaviour: replay the first event)",
    )
    parser.add_argument(
        "--strict-feature-filter",
        action="store_true",
        help="usage metrics filtered by an unknown feature answer [] (default: off, BillingOS's "
        "behaviour: the filter is skipped)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=DEFAULT_HEADER_TIMEOUT_S,
        help="seconds a client has to send a request head, else it is disconnected "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT_S,
        help="seconds a client has to send a request body once its head arrived "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port, each with its own database connections "
        "(the guarantees hold across them; the rate limit is counted per process) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log every request: uvicorn's line and billing_ui's structured record (default: on)",
    )
    return parser


def _database(args: argparse.Namespace) -> str:
    """``--database-url``, else $BILLING_UI_DATABASE_URL, else the ``--db`` SQLite file."""
    url: str = args.database_url or os.environ.get(ENV_DATABASE_URL, "").strip()
    if not url:
        return str(args.db)
    if not is_postgres_url(url):
        raise StoreError("--database-url must start with postgresql:// or postgres://")
    return url


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(message)s")
    if not args.access_log:  # the structured request records are the access log's fields
        logging.getLogger("billing_ui.server.requests").setLevel(logging.WARNING)
    if args.rate_limit_per_minute < 0:
        print("error: --rate-limit-per-minute must be >= 0", file=sys.stderr)
        return 2
    if args.header_timeout <= 0 or args.body_timeout <= 0:
        print("error: --header-timeout and --body-timeout must be > 0", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return 2
    api_key = args.api_key or os.environ.get(ENV_SECRET_KEY) or LOCAL_SECRET_KEY
    try:
        cors = CorsPolicy.for_host(args.host, args.cors_origins)
        plans = load_plans(args.plans)
        database = _database(args)
        store = open_store(database)  # created and migrated once, before any worker starts
    except (PlansError, StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def make_app(store: UsageStore) -> FastAPI:
        return create_app(
            store=store,
            plans=plans,
            clock=SystemClock(),
            api_key=api_key,
            rate_limit_per_minute=args.rate_limit_per_minute,
            options=WireOptions(
                reject_reused_keys=args.reject_reused_keys,
                strict_feature_filter=args.strict_feature_filter,
            ),
            cors=cors,
        )

    config = {
        "log_level": args.log_level,
        "access_log": args.access_log,
        "http": protocol_with_deadlines(
            header_timeout=args.header_timeout, body_timeout=args.body_timeout
        ),
    }
    try:
        app = make_app(store)
        if args.seed:
            seeded = seed_demo_customers(app.state.service)
            if seeded:
                log.info("demo customers: %s", ", ".join(seeded))
        if api_key == LOCAL_SECRET_KEY and args.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("listening on %s with the public default key: set --api-key", args.host)
        log.info(
            "billing server on http://%s:%s (db %s, %d products, %d worker%s, docs at /docs)",
            args.host, args.port, store.location, len(plans.products), args.workers,
            "" if args.workers == 1 else "s",
        )  # fmt: skip
        if args.workers > 1 and args.rate_limit_per_minute:
            log.info(
                "rate limit counted per worker: up to %d tracks per customer per minute "
                "across the %d workers (docs/architecture.md)",
                args.workers * args.rate_limit_per_minute, args.workers,
            )  # fmt: skip
        if args.workers == 1:
            freeze_startup_heap()
            uvicorn.run(app, host=args.host, port=args.port, **config)
            return 0
    finally:
        store.close()
    sock = workers.listen(args.host, args.port)
    return workers.serve(
        sock,
        args.workers,
        lambda ready: _serve_one(sock, database, make_app, args.host, config, ready),
    )


def freeze_startup_heap() -> None:
    """Keep what start-up made (modules, the app, pydantic's schemas: most of the heap, and
    alive for the process's life) out of every later garbage collection (``gc.freeze``).

    A 1,000-event batch allocates tens of thousands of short-lived objects; the collections
    they trigger otherwise traverse the whole start-up heap each time (15-30 % of a
    batch's CPU in process, in the commit that added this). Only for the server's own
    process: an app that embeds the server keeps its own heap policy."""
    gc.collect()
    gc.freeze()


def _serve_one(
    sock: socket.socket,
    database: str,
    make_app: Callable[[UsageStore], FastAPI],
    host: str,
    config: dict[str, Any],
    ready: Callable[[], None],
) -> None:
    """One worker: its own store (connections are never shared across a fork) and app,
    serving the shared listening socket until told to stop; ``ready()`` once it serves.

    The parent created and migrated the database before forking, so the worker opens it
    without the migration's write transaction: a worker paused or slow at start-up never
    holds a lock another worker waits for."""
    store = open_store(database, migrate=False)
    try:
        server_config = uvicorn.Config(make_app(store), host=host, port=0, **config)
        freeze_startup_heap()
        _ReportingServer(server_config, ready).run(sockets=[sock])
    finally:
        store.close()


class _ReportingServer(uvicorn.Server):
    """uvicorn that calls ``ready()`` once its start-up is complete (it accepts connections
    from then on), so the parent announces the server only when every worker serves."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:  # not when the application's start-up failed
            self._ready()


if __name__ == "__main__":
    sys.exit(main())
