"""Configuration: arguments, then environment, then defaults; the local key only on loopback."""

from __future__ import annotations

import httpx
import pytest

from billing_ui.core import AsyncBillingClient, BillingClient, BillingError
from billing_ui.core import _constants as C


@pytest.mark.parametrize("cls", [BillingClient, AsyncBillingClient])
def test_defaults_are_the_local_server(cls: type[BillingClient]) -> None:
    client = cls()
    assert client.base_url == C.DEFAULT_BASE_URL
    assert client.api_key == C.LOCAL_SECRET_KEY
    assert client.max_retries == C.DEFAULT_MAX_RETRIES
    assert (client.timeout.read, client.timeout.connect) == (
        C.DEFAULT_TIMEOUT_S,
        C.DEFAULT_CONNECT_TIMEOUT_S,
    )
    pool = client._http._transport._pool  # type: ignore[union-attr]
    assert pool._max_connections == C.DEFAULT_MAX_CONNECTIONS
    assert pool._max_keepalive_connections == C.DEFAULT_MAX_KEEPALIVE


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:9000",
        "http://127.0.0.2:8700/",
        "http://[::1]:8700",
        "http://app.localhost",
    ],
)
def test_the_local_key_is_the_default_on_loopback_only(url: str) -> None:
    client = BillingClient(base_url=url)
    assert client.api_key == C.LOCAL_SECRET_KEY
    assert not client.base_url.endswith("/")


def test_a_remote_url_needs_a_key() -> None:
    with pytest.raises(BillingError, match=C.ENV_SECRET_KEY):
        BillingClient(base_url="https://api.billingos.example")
    client = BillingClient(base_url="https://api.billingos.example", api_key="sk_live_x")
    assert client.api_key == "sk_live_x"


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(C.ENV_BASE_URL, "https://billing.example/")
    monkeypatch.setenv(C.ENV_SECRET_KEY, "sk_test_env")
    client = BillingClient()
    assert (client.base_url, client.api_key) == ("https://billing.example", "sk_test_env")
    explicit = BillingClient(base_url="http://127.0.0.1:1", api_key="sk_test_arg")
    assert (explicit.base_url, explicit.api_key) == ("http://127.0.0.1:1", "sk_test_arg")


@pytest.mark.parametrize("bad", ["ftp://x", "127.0.0.1:8700", "not a url"])
def test_base_url_must_be_http(bad: str) -> None:
    with pytest.raises(BillingError, match="http"):
        BillingClient(base_url=bad)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_max_retries_must_be_a_count(bad: object) -> None:
    with pytest.raises(BillingError, match="max_retries"):
        BillingClient(max_retries=bad)  # type: ignore[arg-type]


def test_timeout_as_seconds_or_httpx_timeout() -> None:
    assert BillingClient(timeout=3).timeout == httpx.Timeout(3.0)
    custom = httpx.Timeout(1.0, connect=0.5)
    assert BillingClient(timeout=custom).timeout is custom


def test_with_options_to_a_remote_host_does_not_carry_the_local_key() -> None:
    local = BillingClient()
    with pytest.raises(BillingError, match=C.ENV_SECRET_KEY):
        local.with_options(base_url="https://api.billingos.example")
    remote = local.with_options(base_url="https://api.billingos.example", api_key="sk_live_y")
    assert remote.api_key == "sk_live_y" and remote._tokens is not local._tokens
    same = local.with_options(max_retries=5)
    assert same._tokens is local._tokens  # same credentials: the token cache is shared


def test_an_injected_http_client_is_used_and_not_closed() -> None:
    with httpx.Client() as http:
        client = BillingClient(http_client=http)
        assert client._http is http
        client.close()
        assert not http.is_closed


def test_repr_does_not_leak_the_key() -> None:
    client = BillingClient(api_key="sk_test_secret_value")
    assert "sk_test_secret_value" not in repr(client)
