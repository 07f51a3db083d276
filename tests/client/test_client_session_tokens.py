"""Entitlements need a session token: minted with the secret key, cached per customer, shared
by concurrent callers (one mint), refreshed before expiry, and minted again exactly once when
the server says the token expired (its ManualClock moved) or was revoked.

A forwarding fault proxy records the requests, so the tests can count mints; each test has
its own server because it moves that server's clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from faults import FaultProxy, respond, stall

from billing_ui.core import (
    AsyncBillingClient,
    AuthenticationError,
    BillingClient,
)
from billing_ui.core import _constants as C
from billing_ui.core.backends import BillingOSBackend
from billing_ui.server.testing import RunningServer, create_customer

from .conftest import Api, MakeApi

MINT = "/v1/session-tokens"
ENTITLEMENTS = "/v1/features/entitlements"


@pytest.fixture
def proxy(billing_server: RunningServer) -> Iterator[FaultProxy]:
    with FaultProxy(billing_server.base_url) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def proxied(make_api: MakeApi, proxy: FaultProxy) -> Api:
    return make_api(proxy.url)


def statuses(proxy: FaultProxy) -> list[str]:
    """The session-related requests in order, as ``mint`` / ``get``."""
    names = {MINT: "mint", ENTITLEMENTS: "get"}
    return [names[r.path] for r in proxy.seen() if r.path in names]


def bearer_customer(proxy: FaultProxy, index: int) -> str | None:
    request = proxy.seen(ENTITLEMENTS)[index]
    info = BillingOSBackend().session_token_info(request.headers["authorization"][7:])
    return None if info is None else info.customer_id


async def test_one_mint_serves_many_calls(
    proxied: Api, proxy: FaultProxy, billing_server: RunningServer
) -> None:
    cid = create_customer(billing_server, ["pro"])
    for _ in range(3):
        assert await proxied.get_entitlements(customer_id=cid)
    assert statuses(proxy) == ["mint", "get", "get", "get"]
    [mint] = proxy.seen(MINT)
    assert mint.headers["authorization"] == f"Bearer {C.LOCAL_SECRET_KEY}"  # the secret key
    assert mint.json() == {"externalUserId": cid, "expiresIn": C.SESSION_TOKEN_TTL_S}
    assert bearer_customer(proxy, 0) == cid


async def test_tokens_are_per_customer(
    proxied: Api, proxy: FaultProxy, billing_server: RunningServer
) -> None:
    free, enterprise = (create_customer(billing_server, [p]) for p in ("free", "enterprise"))
    got_free = await proxied.get_entitlements(customer_id=free)
    got_enterprise = await proxied.get_entitlements(customer_id=enterprise)
    assert "sso" not in {e.feature_key for e in got_free}
    assert "sso" in {e.feature_key for e in got_enterprise}
    assert statuses(proxy) == ["mint", "get", "mint", "get"]
    assert [bearer_customer(proxy, i) for i in (0, 1)] == [free, enterprise]


async def test_concurrent_async_callers_share_one_mint(
    proxy: FaultProxy, billing_server: RunningServer
) -> None:
    customers = [create_customer(billing_server, ["pro"]) for _ in range(3)]
    async with AsyncBillingClient(base_url=proxy.url) as client:
        results = await asyncio.gather(
            *(client.get_entitlements(customer_id=cid) for cid in customers for _ in range(10))
        )
    assert all(results)
    assert len(proxy.seen(MINT)) == 3  # one per customer, not one per call
    assert len(proxy.seen(ENTITLEMENTS)) == 30


def test_concurrent_threads_share_one_mint(
    proxy: FaultProxy, billing_server: RunningServer
) -> None:
    cid = create_customer(billing_server, ["pro"])
    with BillingClient(base_url=proxy.url) as client, ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: client.get_entitlements(customer_id=cid), range(10)))
    assert all(results)
    assert len(proxy.seen(MINT)) == 1


async def test_expired_token_is_minted_again_once(
    proxied: Api, proxy: FaultProxy, billing_server: RunningServer
) -> None:
    cid = create_customer(billing_server, ["pro"])
    await proxied.get_entitlements(customer_id=cid)
    # The server's clock jumps past the token's expiry; the client's cache cannot know.
    billing_server.manual_clock.advance(C.SESSION_TOKEN_TTL_S + 1)
    assert await proxied.get_entitlements(customer_id=cid)
    assert statuses(proxy) == ["mint", "get", "get", "mint", "get"]
    refused = proxy.seen(ENTITLEMENTS)[1]
    assert refused.headers["authorization"] != proxy.seen(ENTITLEMENTS)[2].headers["authorization"]
    assert await proxied.get_entitlements(customer_id=cid)  # and the new one is cached
    assert len(proxy.seen(MINT)) == 2


async def test_token_revoked_elsewhere_is_minted_again_once(
    make_api: MakeApi, proxied: Api, proxy: FaultProxy, billing_server: RunningServer
) -> None:
    cid = create_customer(billing_server, ["pro"])
    await proxied.get_entitlements(customer_id=cid)
    cached = proxy.seen(ENTITLEMENTS)[0].headers["authorization"][len("Bearer ") :]
    await make_api(billing_server.base_url).revoke_session_token(cached)  # another process
    assert await proxied.get_entitlements(customer_id=cid)
    assert statuses(proxy) == ["mint", "get", "get", "mint", "get"]


async def test_token_revoked_through_the_client_leaves_its_cache(
    proxied: Api, proxy: FaultProxy, billing_server: RunningServer
) -> None:
    cid = create_customer(billing_server, ["pro"])
    await proxied.get_entitlements(customer_id=cid)
    cached = proxy.seen(ENTITLEMENTS)[0].headers["authorization"][len("Bearer ") :]
    await proxied.revoke_session_token(cached)
    assert await proxied.get_entitlements(customer_id=cid)
    assert statuses(proxy) == ["mint", "get", "mint", "get"]  # no refused attempt


async def test_token_is_refreshed_before_it_expires(
    proxied: Api, proxy: FaultProxy, billing_server: RunningServer
) -> None:
    """On the client's own clock: past ``expiry - SESSION_TOKEN_REFRESH_MARGIN_S`` the cached
    token is not used any more, so no request ever meets a 401."""
    cid = create_customer(billing_server, ["pro"])
    now = [1000.0]
    proxied.target._clock = lambda: now[0]
    await proxied.get_entitlements(customer_id=cid)
    now[0] += C.SESSION_TOKEN_TTL_S - C.SESSION_TOKEN_REFRESH_MARGIN_S - 1
    await proxied.get_entitlements(customer_id=cid)
    assert len(proxy.seen(MINT)) == 1
    now[0] += 2  # inside the margin
    billing_server.manual_clock.advance(C.SESSION_TOKEN_TTL_S - C.SESSION_TOKEN_REFRESH_MARGIN_S)
    await proxied.get_entitlements(customer_id=cid)
    assert statuses(proxy) == ["mint", "get", "get", "mint", "get"]


async def test_a_token_refused_twice_is_an_error_not_a_loop(
    proxied: Api, proxy: FaultProxy, billing_server: RunningServer
) -> None:
    cid = create_customer(billing_server, ["pro"])
    expired = respond(
        401, body={"error": {"code": "AUTH_INVALID_TOKEN", "message": "Token expired"}}
    )
    proxy.on(ENTITLEMENTS, expired, expired, expired)
    with pytest.raises(AuthenticationError, match="Token expired"):
        await proxied.get_entitlements(customer_id=cid)
    assert statuses(proxy) == ["mint", "get", "mint", "get"]


async def test_an_unknown_customer_has_no_entitlements(proxied: Api, proxy: FaultProxy) -> None:
    """As BillingOS: the session endpoint answers an unknown customer with an empty list."""
    assert await proxied.get_entitlements(customer_id="cus_nobody") == []
    assert statuses(proxy) == ["mint", "get"]


async def test_a_cancelled_mint_does_not_fail_the_callers_waiting_on_it(
    proxy: FaultProxy, billing_server: RunningServer
) -> None:
    """The first caller's mint hangs and that caller is cancelled (its request timed out in
    the app, say): the caller that was waiting on the same mint takes over and mints itself."""
    cid = create_customer(billing_server, ["pro"])
    proxy.on(MINT, stall())
    async with AsyncBillingClient(base_url=proxy.url) as client:
        leader = asyncio.create_task(client.get_entitlements(customer_id=cid))
        await asyncio.to_thread(proxy.wait_for, lambda seen: len(seen) == 1)
        follower = asyncio.create_task(client.get_entitlements(customer_id=cid))
        await asyncio.sleep(0)  # let the follower join the leader's flight
        leader.cancel()
        assert await follower
        with pytest.raises(asyncio.CancelledError):
            await leader
    assert statuses(proxy) == ["mint", "mint", "get"]
