"""What a browser may track: the app's allowlist of features, each with a :class:`TrackRule`.

Any browser can send any payload, so a track that comes from one is checked on the server
against the app's ``trackable`` mapping before anything is sent: the feature must be listed,
the quantity must pass the core rules and the feature's rule (whole numbers, a per-call
maximum), and the metadata is size-capped. Shared by the Reflex states
(``TrackUsageState``) and the ASGI router (:mod:`billing_ui.asgi`), so both refuse the same
things with the same field and rule names.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from billing_ui.core.errors import InvalidInputError
from billing_ui.core.validation import (
    check_feature_key,
    check_idempotency_key,
    check_metadata,
    check_quantity,
)

__all__ = ["TrackRule", "check_browser_track"]


@dataclass(frozen=True, slots=True)
class TrackRule:
    """What a browser may track for one feature in one call."""

    max_quantity: float = 100.0
    integer_only: bool = True
    metadata_max_bytes: int = 1024


def check_browser_track(
    trackable: Mapping[str, TrackRule], feature_key: object, quantity: object, metadata: object
) -> tuple[str, float, dict[str, Any] | None, str]:
    """Check a track request that came from a browser against ``trackable``; returns (key,
    quantity, metadata, idempotency key — the caller's ``metadata["idempotency_key"]`` as in
    the SDK's example, or a fresh one) or raises :class:`InvalidInputError` naming the field
    and the rule."""
    key = check_feature_key(feature_key)
    rule = trackable.get(key)
    if rule is None:
        raise InvalidInputError.single(
            "feature_key", "allowlist", f"{key!r} may not be tracked from the browser"
        )
    amount = check_quantity(quantity)
    if rule.integer_only and not amount.is_integer():
        raise InvalidInputError.single("quantity", "integer", "must be a whole number")
    if amount > rule.max_quantity:
        raise InvalidInputError.single(
            "quantity", "max", f"must be at most {rule.max_quantity:g} per call"
        )
    meta = check_metadata(metadata)
    if meta is not None and len(json.dumps(meta).encode()) > rule.metadata_max_bytes:
        raise InvalidInputError.single(
            "metadata", "max_bytes", f"must be at most {rule.metadata_max_bytes} bytes"
        )
    caller_key = meta.pop("idempotency_key", None) if meta else None
    idem = check_idempotency_key(caller_key, field="metadata.idempotency_key") or str(uuid.uuid4())
    return key, amount, meta, idem
