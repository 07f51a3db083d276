"""Property tests of the input rules (hypothesis): every valid input is accepted and kept
exactly (quantities to the millionth), every invalid one is refused with a named rule."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_ui.core import _constants as C
from billing_ui.core import validation as V
from billing_ui.core.errors import InvalidInputError
from billing_ui.core.models import TrackUsageRequest

MAX_MICROS = int(C.MAX_QUANTITY) * 10**C.QUANTITY_DECIMALS
micros = st.integers(min_value=1, max_value=MAX_MICROS)


@given(micros)
def test_float_quantities_round_trip_exactly_to_micros(n: int) -> None:
    quantity = n / 10**C.QUANTITY_DECIMALS
    assert V.check_quantity(quantity) == quantity
    assert V.quantity_to_micros(V.check_quantity(quantity)) == n
    assert V.micros_to_quantity(n) == quantity


@given(micros)
def test_decimal_quantities_round_trip_exactly_to_micros(n: int) -> None:
    quantity = Decimal(n).scaleb(-C.QUANTITY_DECIMALS)
    assert V.quantity_to_micros(V.check_quantity(quantity)) == n


@given(st.integers(min_value=1, max_value=int(C.MAX_QUANTITY)))
def test_integer_quantities(n: int) -> None:
    assert V.check_quantity(n) == float(n)


@given(st.integers(min_value=1, max_value=10**14).filter(lambda n: n % 10 != 0))
def test_seven_decimals_are_refused(n: int) -> None:
    for value in (n / 10**7, Decimal(n).scaleb(-7)):
        with pytest.raises(InvalidInputError) as err:
            V.check_quantity(value)
        assert (err.value.field, err.value.rule) == ("quantity", "decimals")


@given(
    st.one_of(
        st.floats(max_value=0.0),
        st.integers(max_value=0),
        st.floats(min_value=C.MAX_QUANTITY, exclude_min=True),
        st.integers(min_value=int(C.MAX_QUANTITY) + 1),
        st.sampled_from([math.nan, math.inf, -math.inf, Decimal("NaN"), Decimal("sNaN")]),
        st.booleans(),
        st.text(),
        st.none(),
        st.lists(st.integers()),
    )
)
def test_invalid_quantities_are_refused_with_a_rule(value: Any) -> None:
    with pytest.raises(InvalidInputError) as err:
        V.check_quantity(value)
    assert err.value.field == "quantity"
    assert err.value.rule in {"type", "finite", "gt_zero", "max"}


@given(st.from_regex(C.FEATURE_KEY_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 64))
def test_valid_feature_keys_are_kept(key: str) -> None:
    assert V.check_feature_key(key) == key


@given(st.text(max_size=80).filter(lambda s: not C.FEATURE_KEY_PATTERN.fullmatch(s)))
def test_invalid_feature_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        V.check_feature_key(key)
    assert err.value.rule in {"non_empty", "printable", "pattern"}


@given(st.text(min_size=65, alphabet="abc"))
def test_long_feature_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        V.check_feature_key(key)
    assert err.value.rule == "max_length"


printable = st.characters(codec="utf-8", categories=["L", "N", "P", "S"])


@given(
    st.text(alphabet=printable, min_size=1, max_size=100).flatmap(
        lambda core: st.just(core) | st.just(core[0] + " " + core[-1])
    )
)
def test_valid_customer_ids_are_kept(customer_id: str) -> None:
    assert V.check_customer_id(customer_id) == customer_id


@given(st.text(alphabet=printable, max_size=20), st.sampled_from("\x00\n\t\x1b\x7f\u200b"))
def test_control_characters_in_customer_ids_are_refused(prefix: str, bad: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        V.check_customer_id(prefix + bad + "x")
    assert err.value.rule == "printable"


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_json_metadata_is_accepted_unchanged(metadata: dict[str, Any]) -> None:
    if V._depth(metadata) > C.METADATA_MAX_DEPTH:  # recursive() may nest deeper than allowed
        return
    assert V.check_metadata(metadata) == metadata


@given(
    st.dictionaries(st.text(max_size=10), json_values, max_size=3),
    st.sampled_from([math.nan, math.inf, {1, 2}, object(), {3: "int key"}]),
)
def test_non_json_metadata_is_refused(metadata: dict[str, Any], poison: Any) -> None:
    with pytest.raises(InvalidInputError) as err:
        V.check_metadata({**metadata, "poison": {"inside": [poison]}})
    assert err.value.rule in {"json", "string_keys", "max_depth"}


@given(micros, st.from_regex(C.FEATURE_KEY_PATTERN, fullmatch=True).filter(lambda s: len(s) <= 64))
def test_track_request_round_trips_through_json(n: int, key: str) -> None:
    request = TrackUsageRequest(
        customer_id="user_1", feature_key=key, quantity=n / 10**6, idempotency_key="k"
    )
    again = TrackUsageRequest.model_validate_json(request.model_dump_json())
    assert again == request
    assert V.quantity_to_micros(again.quantity) == n
