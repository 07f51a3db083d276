"""Where the local server may differ from BillingOS on purpose, and who may call it from a browser.

A client written for BillingOS must not be able to tell the local server from BillingOS, so
every default here is BillingOS's behaviour; each stricter local behaviour is one explicit,
documented switch (docs/api.md, "Conformance with BillingOS"), off unless asked for.

CORS: BillingOS enables it with the allowed request headers ``Content-Type``, ``Authorization``
and ``X-Requested-With``. Which origins may call is the deployer's choice: a flag
(``--cors-origins``) or ``BILLING_UI_CORS_ORIGINS``; unset, a server bound to loopback allows
the browser origins of a developer's own machine (any port of ``localhost``, ``127.0.0.1``,
``[::1]``), and a server bound to anything else allows none.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # imported where used: reading options needs no web framework
    from fastapi import FastAPI

ENV_CORS_ORIGINS: Final = "BILLING_UI_CORS_ORIGINS"
CORS_ALLOWED_HEADERS: Final = ("Content-Type", "Authorization", "X-Requested-With")
"""BillingOS's ``allowedHeaders``: what a browser may send on a cross-origin call."""
CORS_METHODS: Final = ("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE")
"""NestJS's ``enableCors`` default methods."""
LOOPBACK: Final = "loopback"
"""In an origins list: any port of ``localhost``, ``127.0.0.1`` and ``[::1]``, http or https."""
LOOPBACK_ORIGIN_REGEX: Final = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?"


@dataclass(frozen=True, slots=True)
class WireOptions:
    """The local server's optional departures from BillingOS (all off: BillingOS's way)."""

    reject_reused_keys: bool = False
    """On: an idempotency key reused within 24 h for another feature or quantity is refused
    with 409 ``IDEMPOTENCY_KEY_REUSED`` and nothing is recorded. Off (BillingOS): the first
    event's stored result is returned as a success (``duplicate: true``)."""

    strict_feature_filter: bool = False
    """On: ``usage-metrics?feature_key=`` with a feature the plans do not define answers an
    empty list. Off (BillingOS): a filter whose feature cannot be found is skipped, and every
    metric comes back."""


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Which browser origins may call the server (nothing else about CORS is configurable)."""

    origins: tuple[str, ...] = ()
    loopback: bool = False

    @classmethod
    def parse(cls, text: str) -> CorsPolicy:
        """``"https://app.example.com, loopback"``; ``"*"`` for any origin; ``""`` or
        ``"none"`` for no cross-origin calls."""
        items = [item.strip() for item in text.split(",") if item.strip()]
        if items == ["none"]:
            return cls()
        for item in items:
            if item not in ("*", LOOPBACK) and not item.startswith(("http://", "https://")):
                raise ValueError(
                    f"CORS origin {item!r} must be an http(s):// origin, '*', 'loopback' or 'none'"
                )
        return cls(
            origins=tuple(item.rstrip("/") for item in items if item != LOOPBACK),
            loopback=LOOPBACK in items,
        )

    @classmethod
    def for_host(
        cls, host: str, configured: str | None = None, environ: Mapping[str, str] | None = None
    ) -> CorsPolicy:
        """The flag's value, else the environment's, else the default for a server bound to
        ``host`` (loopback: the developer's own origins; anything else: none)."""
        env = os.environ if environ is None else environ
        text = configured if configured is not None else env.get(ENV_CORS_ORIGINS)
        if text is not None:
            return cls.parse(text)
        return cls(loopback=is_loopback_host(host))

    @property
    def enabled(self) -> bool:
        return bool(self.origins) or self.loopback

    def install(self, app: FastAPI) -> None:
        """Add Starlette's CORS middleware (answers preflights, marks allowed responses),
        in :mod:`billing_ui.server.cors`' form."""
        from billing_ui.server.cors import Cors

        if not self.enabled:
            return
        app.add_middleware(
            Cors,
            allow_origins=list(self.origins),
            allow_origin_regex=LOOPBACK_ORIGIN_REGEX if self.loopback else None,
            allow_methods=list(CORS_METHODS),
            allow_headers=list(CORS_ALLOWED_HEADERS),
        )


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
