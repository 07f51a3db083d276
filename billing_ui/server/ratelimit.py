"""Per-customer rate limiting of usage tracking (BillingOS: 1,000 tracks a minute).

A fixed window per key that opens at the key's first hit and lasts one minute, as NestJS's
throttler (which BillingOS uses) does. It runs on the server's :class:`Clock`, so a test can
exhaust a window and then move time on instead of sleeping. Memory stays bounded by the keys
seen in the last minute: expired windows are swept when the table grows.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from billing_ui.server.clock import Clock

_WINDOW = timedelta(minutes=1)
_SWEEP_AT = 10_000


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    """Whole seconds until the window closes (``Retry-After`` when refused)."""

    def headers(self) -> dict[str, str]:
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.reset_s)
        return out


class RateLimiter:
    """``limit_per_minute`` hits per key per window; 0 turns limiting off."""

    def __init__(self, limit_per_minute: int, clock: Clock) -> None:
        if limit_per_minute < 0:
            raise ValueError("limit_per_minute must be >= 0")
        self.limit = limit_per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[datetime, int]] = {}  # key -> (window end, hits)

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def hit(self, key: str, cost: int = 1) -> RateDecision:
        """Count ``cost`` hits for ``key`` if they fit in its window; refuse them all if not."""
        return self._count(key, cost, partial=False)[1]

    def hit_up_to(self, key: str, count: int) -> tuple[int, RateDecision]:
        """Count as many of ``count`` single hits for ``key`` as fit: ``(how many fitted,
        the decision for the last one)``, as ``count`` calls of :meth:`hit` in a row would
        (a batch's events, counted per customer once instead of one by one)."""
        return self._count(key, count, partial=True)

    def _count(self, key: str, cost: int, *, partial: bool) -> tuple[int, RateDecision]:
        now = self._clock.now()
        with self._lock:
            if len(self._windows) >= _SWEEP_AT:
                self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
            end, hits = self._windows.get(key, (now, 0))
            if end <= now:  # no window, or it has closed: open a new one
                end, hits = now + _WINDOW, 0
            room = self.limit - hits
            granted = min(cost, room) if partial else (cost if cost <= room else 0)
            hits += granted
            self._windows[key] = (end, hits)
        allowed = granted == cost
        reset_s = max(1, math.ceil((end - now).total_seconds()))
        return granted, RateDecision(allowed, self.limit, max(0, self.limit - hits), reset_s)
