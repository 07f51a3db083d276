"""Every default of the client and every input limit, in one place.

Kept together so that a reader can see the whole contract at a glance, and so the
local server and the client agree on the limits they both enforce.
"""

from __future__ import annotations

import re
from typing import Final

# --- where and how the client talks -------------------------------------------------
DEFAULT_BASE_URL: Final = "http://127.0.0.1:8700"
"""The embedded local billing server (``python -m billing_ui.server``)."""

LOCAL_SECRET_KEY: Final = "sk_test_billing_ui_local"
"""The secret key the local server accepts when none is configured. Not a secret."""

ENV_BASE_URL: Final = "BILLINGOS_API_URL"
ENV_SECRET_KEY: Final = "BILLINGOS_SECRET_KEY"
API_VERSION_HEADER: Final = "X-BillingOS-Version"
API_VERSION: Final = "2026-01-01"
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"

DEFAULT_TIMEOUT_S: Final = 10.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
DEFAULT_MAX_RETRIES: Final = 2
INITIAL_RETRY_DELAY_S: Final = 0.5
MAX_RETRY_DELAY_S: Final = 8.0
MAX_RETRY_AFTER_S: Final = 60.0
"""A ``Retry-After`` longer than this is not waited for: the error is raised instead."""

DEFAULT_MAX_CONNECTIONS: Final = 100
DEFAULT_MAX_KEEPALIVE: Final = 20
DEFAULT_MAX_WAITING: Final = 1000
"""Async calls that may wait for a free connection at once; more fail at once with
``PoolExhaustedError`` (a bounded queue in front of the billing API, see ``_transport.py``)."""

SESSION_TOKEN_TTL_S: Final = 3600
SESSION_TOKEN_REFRESH_MARGIN_S: Final = 300
"""Refresh a cached session token this long before it expires (as the React SDK does)."""
SESSION_TOKEN_CACHE_SIZE: Final = 10_000
"""Customers whose session tokens a client keeps (least recently used dropped first)."""

# --- input limits (enforced by the client before any request, and by the server) ----
FEATURE_KEY_MAX_LEN: Final[int] = 64
FEATURE_KEY_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
FEATURE_KEY_RULE: Final = (
    "1-64 characters: letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
)
CUSTOMER_ID_MAX_LEN: Final[int] = 255
IDEMPOTENCY_KEY_MAX_LEN: Final[int] = 255
MAX_QUANTITY: Final[float] = 1_000_000_000.0
QUANTITY_DECIMALS: Final = 6
"""Quantities are stored exactly as integer millionths (BillingOS uses DECIMAL(20,6))."""
METADATA_MAX_BYTES: Final[int] = 4096
METADATA_MAX_DEPTH: Final[int] = 5
MAX_BATCH_SIZE: Final[int] = 1000

NEVER_RESETS_DAYS: Final = 36_500
"""What the UI's ``resets_in_days`` holds for a quota that never resets (the API sends
``null``): the meter then says "Does not reset"."""
