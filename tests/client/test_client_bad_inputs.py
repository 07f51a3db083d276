"""A catalogue of bad arguments, through both clients: each is refused before any request with
an :class:`InvalidInputError` naming the field and the broken rule, and the server sees
nothing (the recording proxy in front of it saw no request; its database is unchanged)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from faults import FaultProxy

from billing_ui.core import InvalidInputError
from billing_ui.server.testing import RunningServer

from .conftest import Api

CID = "cus_bad_inputs"
GOOD = {"customer_id": CID, "feature_key": "api_calls", "quantity": 1}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def track(**override: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    return "track_usage", (), {**GOOD, **override}


def call(method: str, *args: Any, **kwargs: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    return method, args, kwargs


def case(
    id: str, target: tuple[str, tuple[Any, ...], dict[str, Any]], field: str, rule: str
) -> Any:
    return pytest.param(*target, field, rule, id=id)


CATALOGUE = [
    # feature_key
    case("feature-empty", track(feature_key=""), "feature_key", "non_empty"),
    case("feature-too-long", track(feature_key="a" * 65), "feature_key", "max_length"),
    case("feature-space", track(feature_key="api calls"), "feature_key", "pattern"),
    case("feature-slash", track(feature_key="api/calls"), "feature_key", "pattern"),
    case("feature-leading-dash", track(feature_key="-api"), "feature_key", "pattern"),
    case("feature-unicode", track(feature_key="appels_é"), "feature_key", "pattern"),
    case("feature-newline", track(feature_key="api\ncalls"), "feature_key", "printable"),
    case("feature-int", track(feature_key=42), "feature_key", "type"),
    case("feature-none", track(feature_key=None), "feature_key", "type"),
    # quantity
    case("quantity-zero", track(quantity=0), "quantity", "gt_zero"),
    case("quantity-negative", track(quantity=-1), "quantity", "gt_zero"),
    case("quantity-nan", track(quantity=math.nan), "quantity", "finite"),
    case("quantity-inf", track(quantity=math.inf), "quantity", "finite"),
    case("quantity-minus-inf", track(quantity=-math.inf), "quantity", "finite"),
    case("quantity-decimal-nan", track(quantity=Decimal("NaN")), "quantity", "finite"),
    case("quantity-bool", track(quantity=True), "quantity", "type"),
    case("quantity-str", track(quantity="7"), "quantity", "type"),
    case("quantity-none", track(quantity=None), "quantity", "type"),
    case("quantity-list", track(quantity=[1]), "quantity", "type"),
    case("quantity-1e30", track(quantity=1e30), "quantity", "max"),
    case("quantity-huge-int", track(quantity=10**30), "quantity", "max"),
    case("quantity-10**400", track(quantity=10**400), "quantity", "max"),
    case("quantity--10**400", track(quantity=-(10**400)), "quantity", "gt_zero"),
    case("quantity-decimal-1e400", track(quantity=Decimal("1e400")), "quantity", "max"),
    case("quantity-decimal-300-digits", track(quantity=Decimal("9" * 300)), "quantity", "max"),
    case("quantity-decimal-tiny", track(quantity=Decimal("1e-400")), "quantity", "decimals"),
    case("quantity-7-decimals", track(quantity=0.1234567), "quantity", "decimals"),
    case("quantity-float-noise", track(quantity=0.1 + 0.2), "quantity", "decimals"),
    # metadata
    case("metadata-str", track(metadata="plan=pro"), "metadata", "type"),
    case("metadata-list", track(metadata=[1, 2]), "metadata", "type"),
    case("metadata-set", track(metadata={1, 2}), "metadata", "type"),
    case("metadata-int-key", track(metadata={1: "a"}), "metadata", "string_keys"),
    case("metadata-nested-int-key", track(metadata={"a": {2: 1}}), "metadata", "string_keys"),
    case("metadata-nan", track(metadata={"ratio": math.nan}), "metadata", "json"),
    case("metadata-set-inside", track(metadata={"tags": {"a"}}), "metadata", "json"),
    case("metadata-object", track(metadata={"when": object()}), "metadata", "json"),
    case("metadata-too-big", track(metadata={"blob": "x" * 5000}), "metadata", "max_bytes"),
    case("metadata-too-deep", track(metadata=nested(6)), "metadata", "max_depth"),
    # customer_id
    case("customer-empty", track(customer_id=""), "customer_id", "non_empty"),
    case("customer-blank", track(customer_id="   "), "customer_id", "no_surrounding_space"),
    case("customer-padded", track(customer_id=" user_1"), "customer_id", "no_surrounding_space"),
    case("customer-control", track(customer_id="user\x001"), "customer_id", "printable"),
    case("customer-newline", track(customer_id="user\n1"), "customer_id", "printable"),
    case("customer-too-long", track(customer_id="u" * 256), "customer_id", "max_length"),
    case("customer-int", track(customer_id=123), "customer_id", "type"),
    # idempotency_key
    case("key-too-long", track(idempotency_key="k" * 256), "idempotency_key", "max_length"),
    case("key-empty", track(idempotency_key=""), "idempotency_key", "non_empty"),
    case("key-control", track(idempotency_key="a\x00b"), "idempotency_key", "printable"),
    case("key-int", track(idempotency_key=7), "idempotency_key", "type"),
    # batches
    case("batch-empty", call("track_usage_batch", []), "events", "non_empty"),
    case("batch-str", call("track_usage_batch", "events"), "events", "type"),
    case("batch-dict", call("track_usage_batch", GOOD), "events", "type"),
    case(
        "batch-one-bad-event",
        call("track_usage_batch", [GOOD, {**GOOD, "quantity": 0}]),
        "events.1.quantity",
        "gt_zero",
    ),
    case("batch-non-event", call("track_usage_batch", [GOOD, 5]), "events.1", "type"),
    case(
        "batch-unknown-field",
        call("track_usage_batch", [{**GOOD, "qty": 1}]),
        "events.0.qty",
        "unknown_field",
    ),
    case(
        "batch-missing-field",
        call("track_usage_batch", [{"customer_id": CID, "quantity": 1}]),
        "events.0.feature_key",
        "required",
    ),
    case(
        "batch-event-metadata-too-big",
        call("track_usage_batch", [GOOD, GOOD, {**GOOD, "metadata": {"b": "x" * 5000}}]),
        "events.2.metadata",
        "max_bytes",
    ),
    # the other methods
    case(
        "metrics-customer",
        call("get_usage_metrics", customer_id=""),
        "customer_id",
        "non_empty",
    ),
    case(
        "metrics-filter",
        call("get_usage_metrics", customer_id=CID, feature_key="bad key"),
        "feature_key",
        "pattern",
    ),
    case(
        "entitlements-customer", call("get_entitlements", customer_id=None), "customer_id", "type"
    ),
    case(
        "check-feature",
        call("check_feature", customer_id=CID, feature_key=""),
        "feature_key",
        "non_empty",
    ),
    case(
        "history-bucket",
        call("get_usage_history", customer_id=CID, feature_key="api_calls", bucket="week"),
        "bucket",
        "choice",
    ),
    case(
        "token-too-short",
        call("create_session_token", customer_id=CID, expires_in=59),
        "expires_in",
        "greater_than_equal",
    ),
    case(
        "token-too-long",
        call("create_session_token", customer_id=CID, expires_in=86401),
        "expires_in",
        "less_than_equal",
    ),
    case(
        "token-str-lifetime",
        call("create_session_token", customer_id=CID, expires_in="3600"),
        "expires_in",
        "int_type",
    ),
    case(
        "token-customer",
        call("create_session_token", customer_id=" x"),
        "customer_id",
        "no_surrounding_space",
    ),
    case("revoke-int", call("revoke_session_token", 123), "token_or_jti", "type"),
    case("revoke-empty", call("revoke_session_token", ""), "token_or_jti", "non_empty"),
    case(
        "customer-products-str",
        call("upsert_customer", customer_id=CID, products="pro"),
        "products",
        "list_type",
    ),
    case(
        "customer-product-key",
        call("upsert_customer", customer_id=CID, products=["pro", "bad key"]),
        "products.1",
        "pattern",
    ),
    case(
        "customer-status",
        call("upsert_customer", customer_id=CID, products=["pro"], status="bogus"),
        "status",
        "literal_error",
    ),
]


@pytest.fixture
def recorded(make_api: Any, proxy: FaultProxy) -> Api:
    """A client whose every request would pass the recording proxy (none should)."""
    return make_api(proxy.url)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("method", "args", "kwargs", "field", "rule"), CATALOGUE)
async def test_bad_input_is_refused_before_any_request(
    recorded: Api,
    proxy: FaultProxy,
    server: RunningServer,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    field: str,
    rule: str,
) -> None:
    before = server.fingerprint()
    with pytest.raises(InvalidInputError) as err:
        await getattr(recorded, method)(*args, **kwargs)
    assert (err.value.field, err.value.rule) == (field, rule), err.value.errors
    assert isinstance(err.value, ValueError)  # also catchable as the builtin
    assert field in str(err.value)
    assert proxy.seen() == []
    assert server.fingerprint() == before


@pytest.mark.parametrize("customer_id", ["", " x", "x\n", 5, None])
def test_for_customer_refuses_a_bad_customer_at_once(recorded: Api, customer_id: Any) -> None:
    with pytest.raises(InvalidInputError) as err:
        recorded.for_customer(customer_id)
    assert err.value.field == "customer_id"


async def test_a_bound_view_refuses_events_for_another_customer(
    recorded: Api, proxy: FaultProxy
) -> None:
    view = recorded.for_customer(CID)
    with pytest.raises(InvalidInputError) as err:
        await view.track_usage_batch(
            [{"feature_key": "api_calls", "quantity": 1, "customer_id": "other"}]
        )
    assert (err.value.field, err.value.rule) == ("events.0.customer_id", "bound_customer")
    assert proxy.seen() == []


async def test_every_broken_rule_is_reported(recorded: Api) -> None:
    with pytest.raises(InvalidInputError) as err:
        await recorded.track_usage(customer_id="", feature_key="", quantity=0)
    assert [(e.field, e.rule) for e in err.value.errors] == [
        ("customer_id", "non_empty"),
        ("feature_key", "non_empty"),
        ("quantity", "gt_zero"),
    ]
