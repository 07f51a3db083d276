"""The session-token cache policy, on a clock the test holds (no waiting): when a cached token
is reused, when it is dropped, how its lifetime is read. (The same policy end to end, with the
server's ManualClock expiring and revoking tokens: test_client_session_tokens.py.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from billing_ui.core import _constants as C
from billing_ui.core._base_client import SessionTokenCache
from billing_ui.core.backends import BillingOSBackend


def make_token(claims: dict[str, object], key: str = "sk_test_x") -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    unsigned = f"bos_session_test_{payload}"
    sig = hmac.new(key.encode(), unsigned.encode(), hashlib.sha256).hexdigest()
    return f"{unsigned}.{sig}"


def test_token_is_reused_until_the_refresh_margin_before_expiry() -> None:
    cache = SessionTokenCache()
    refresh_at = cache.refresh_at(minted_at=100.0, lifetime=3600)
    assert refresh_at == 100.0 + 3600 - C.SESSION_TOKEN_REFRESH_MARGIN_S
    cache.put("u1", "tok-a", jti="j1", refresh_at=refresh_at)
    assert cache.get("u1", now=100.0) == "tok-a"
    assert cache.get("u1", now=refresh_at - 0.001) == "tok-a"
    assert cache.get("u1", now=refresh_at) is None  # due: dropped, the caller mints
    assert cache.get("u1", now=0.0) is None  # and gone for good


def test_short_tokens_are_kept_for_half_their_life() -> None:
    cache = SessionTokenCache()
    assert cache.refresh_at(minted_at=0.0, lifetime=60) == 30.0  # not "already stale"


def test_a_refused_token_is_dropped_but_a_newer_one_is_kept() -> None:
    cache = SessionTokenCache()
    cache.put("u1", "tok-new", jti="j2", refresh_at=1e9)
    # A request that used the old token learns it was revoked, after someone re-minted:
    assert cache.get("u1", now=0.0, stale="tok-old") == "tok-new"
    assert cache.get("u1", now=0.0, stale="tok-new") is None


def test_customers_are_isolated_and_the_cache_is_bounded_lru() -> None:
    cache = SessionTokenCache(capacity=2)
    cache.put("a", "ta", jti=None, refresh_at=1e9)
    cache.put("b", "tb", jti=None, refresh_at=1e9)
    assert cache.get("a", now=0) == "ta"  # a is now the most recently used
    cache.put("c", "tc", jti=None, refresh_at=1e9)
    assert len(cache) == 2
    assert cache.get("b", now=0) is None
    assert (cache.get("a", now=0), cache.get("c", now=0)) == ("ta", "tc")


def test_discard_by_jti() -> None:
    cache = SessionTokenCache()
    cache.put("a", "ta", jti="tok_1", refresh_at=1e9)
    cache.put("b", "tb", jti="tok_2", refresh_at=1e9)
    cache.discard(jti="tok_1")
    assert cache.get("a", now=0) is None
    assert cache.get("b", now=0) == "tb"


def test_backend_reads_the_public_claims_of_a_session_token() -> None:
    token = make_token(
        {"jti": "tok_" + "a" * 32, "iat": 1_000, "exp": 4_600, "external_user_id": "user_1"}
    )
    info = BillingOSBackend().session_token_info(token)
    assert info is not None
    assert (info.jti, info.lifetime, info.customer_id) == ("tok_" + "a" * 32, 3600.0, "user_1")


def test_backend_rejects_what_is_not_a_session_token() -> None:
    backend = BillingOSBackend()
    assert backend.session_token_info("tok_" + "a" * 32) is None  # a bare jti
    assert backend.session_token_info("bos_session_test_!!!.ab") is None
    assert backend.session_token_info("bos_session_test_e30") is None  # no signature part
    assert backend.session_token_info(make_token({"jti": "x", "iat": "0", "exp": 1})) is None
    assert backend.session_token_info(make_token({"jti": "x", "iat": True, "exp": 1})) is None
