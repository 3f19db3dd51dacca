"""dpp.money: every property of SPEC §2 "Money", checked against oracles that share no code with it."""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dpp.http.errors import ApplicationError
from dpp.money import (
    GRANULE_MICROS,
    MAX_COST_MICROS,
    ceil100,
    format_usd,
    minimum_fee,
    parse_max_cost,
    parse_usd,
)
from tests.helpers.money import USD

# 12 whole digits: beyond that an amount in micros no longer fits PostgreSQL's BIGINT (9.2e18).
WHOLE_DIGITS = 12
granular = st.integers(min_value=0, max_value=10**WHOLE_DIGITS * USD - 1).map(lambda m: m - m % GRANULE_MICROS)
ascii_digits = st.text(alphabet="0123456789", min_size=1, max_size=WHOLE_DIGITS)


def _refused(value: Any, reason: str, parse: Any = parse_usd) -> ApplicationError:
    with pytest.raises(ApplicationError) as raised:
        parse(value)
    assert raised.value.reason_code == reason
    assert raised.value.status == 422
    assert raised.value.errors
    assert raised.value.errors[0]["field"]
    return raised.value


def _oracle_micros(text: str) -> int:
    """The value of a valid money string by exact rational arithmetic (no float, no code shared with money.py)."""
    return int(Fraction(text) * USD)


# --- format and parse ----------------------------------------------------------------------------------------


@given(granular)
@example(0)
@example(100)
@example(999_999_999_999_999_900)
def test_round_trip_of_canonical_strings(micros: int) -> None:
    text = format_usd(micros)
    assert re.fullmatch(r"(0|[1-9][0-9]*)\.[0-9]{4}", text)
    parsed = parse_usd(text)
    assert type(parsed) is int
    assert parsed == micros
    assert format_usd(parsed) == text


@given(granular)
def test_negative_amounts_keep_their_sign(micros: int) -> None:
    if micros:
        assert format_usd(-micros) == "-" + format_usd(micros)
    else:
        assert format_usd(0) == "0.0000"


@given(ascii_digits, st.one_of(st.none(), st.text(alphabet="0123456789", min_size=1, max_size=4)))
@example("0", None)
@example("007", "5")
@example("10000", "0000")
def test_every_valid_shape_parses_to_its_exact_value(whole: str, fraction: str | None) -> None:
    text = whole if fraction is None else f"{whole}.{fraction}"
    parsed = parse_usd(text)
    assert type(parsed) is int
    assert parsed == _oracle_micros(text)
    assert parsed % GRANULE_MICROS == 0
    assert parse_usd(format_usd(parsed)) == parsed  # and its canonical form means the same


@pytest.mark.parametrize(
    ("text", "micros"),
    [("0.0050", 5_000), ("1", 1_000_000), ("1.5", 1_500_000), ("0.0001", 100), ("10000.0000", 10_000_000_000)],
)
def test_worked_values(text: str, micros: int) -> None:
    assert parse_usd(text) == micros


@given(ascii_digits, st.text(alphabet="0123456789", min_size=5, max_size=12))
@example("0", "00500")
@example("1", "00001")
def test_more_than_four_decimals_is_a_scale_error(whole: str, fraction: str) -> None:
    _refused(f"{whole}.{fraction}", "INVALID_MONEY_SCALE")


@given(
    st.one_of(
        st.integers(),
        st.floats(allow_nan=True),
        st.decimals(allow_nan=False),
        st.none(),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
)
@example(5)
@example(0.05)
@example(True)  # noqa: FBT003 - a JSON boolean is one of the inputs under test
@example(None)
@example(Decimal("0.0500"))
def test_anything_but_a_string_is_invalid_money(value: Any) -> None:
    """JSON numbers, null, booleans, arrays and objects: INVALID_MONEY, never coerced."""
    error = _refused(value, "INVALID_MONEY")
    assert "JSON string" in error.detail


VALID = re.compile(r"[0-9]{1,13}(\.[0-9]{1,4})?")
OVER_SCALE = re.compile(r"[0-9]+\.[0-9]{5,}")


@given(st.text(alphabet=st.sampled_from("0123456789.-+eE ,x٠١\u00a0"), max_size=10) | st.text(max_size=8))
@example("")
@example(".5")
@example("1.")
@example("-1")
@example("+1")
@example(" 1")
@example("1 ")
@example("1e3")
@example("1,5")
@example("0x10")
@example("١.٠٠٠٠")  # Arabic-Indic digits: str.isdigit() says yes, the SPEC's \d (ASCII) says no
@example("1.2.3")
def test_arbitrary_text_is_parsed_or_refused_as_the_spec_says(text: str) -> None:
    if VALID.fullmatch(text):
        assert parse_usd(text) == _oracle_micros(text)
    elif OVER_SCALE.fullmatch(text):
        _refused(text, "INVALID_MONEY_SCALE")
    else:
        _refused(text, "INVALID_MONEY")


@pytest.mark.parametrize("text", ["99999999999999999999", "0001234567890123.5", "1234567890123.5"])
def test_too_many_digits_says_so(text: str) -> None:
    error = _refused(text, "INVALID_MONEY")
    assert error.detail == "amount has more than 12 digits before the decimal point."


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0000000000000000000000000.0500", 50_000),
        ("0000000000001.0000", 1_000_000),
        ("0000999999999999.9999", 999_999_999_999_999_900),
        ("0" * 40, 0),
    ],
)
def test_leading_zeros_do_not_count_as_digits(text: str, micros: int) -> None:
    """SPEC §2 accepts ^\\d+(\\.\\d{1,4})?$: leading zeros add no value, so they do not count against the 12."""
    assert parse_usd(text) == micros


def test_field_name_is_reported() -> None:
    error = _refused("abc", "INVALID_MONEY", parse=lambda v: parse_usd(v, field="reservation.max_cost_usd"))
    assert error.errors == [{"field": "reservation.max_cost_usd", "message": "not a money amount"}]


# --- max_cost_usd --------------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2 * MAX_COST_MICROS // GRANULE_MICROS).map(lambda n: n * GRANULE_MICROS))
@example(0)
@example(100)
@example(MAX_COST_MICROS)
@example(MAX_COST_MICROS + 100)
def test_max_cost_is_more_than_zero_and_at_most_10000(micros: int) -> None:
    text = format_usd(micros)
    if 0 < micros <= 10_000 * USD:
        assert parse_max_cost(text) == micros
    else:
        _refused(text, "INVALID_MONEY", parse=parse_max_cost)


@pytest.mark.parametrize(
    ("text", "reason"), [("0", "INVALID_MONEY"), ("10001", "INVALID_MONEY"), (0.05, "INVALID_MONEY")]
)
def test_max_cost_refusals(text: Any, reason: str) -> None:
    _refused(text, reason, parse=parse_max_cost)


def test_max_cost_scale_error_wins_over_bounds() -> None:
    _refused("0.00001", "INVALID_MONEY_SCALE", parse=parse_max_cost)


def test_max_cost_bounds_exactly() -> None:
    assert parse_max_cost("0.0001") == 100
    assert parse_max_cost("10000") == parse_max_cost("10000.0000") == 10_000_000_000


# --- minimum fee ---------------------------------------------------------------------------------------------


def _oracle_fee(reserved: int) -> int:
    """SPEC: min(reserved, clamp(ceil100(reserved × 2 / 100), 5 000, 100 000)), by exact fractions."""
    two_percent = Fraction(reserved * 2, 100)
    rounded = -(-two_percent.numerator // (two_percent.denominator * 100)) * 100  # ceil to a multiple of 100
    return min(reserved, max(5_000, min(rounded, 100_000)))


@given(st.integers(min_value=1, max_value=MAX_COST_MICROS // GRANULE_MICROS).map(lambda n: n * GRANULE_MICROS))
@example(100)
@example(5_000)
@example(250_000)
@example(250_100)
@example(5_000_000)
@example(5_000_100)
@example(MAX_COST_MICROS)
def test_minimum_fee_matches_the_spec_formula(reserved: int) -> None:
    fee = minimum_fee(reserved)
    assert type(fee) is int
    assert fee == _oracle_fee(reserved)
    assert fee % GRANULE_MICROS == 0
    assert 0 < fee <= reserved
    assert fee <= 100_000
    assert fee >= min(reserved, 5_000)


@given(st.integers(min_value=1, max_value=MAX_COST_MICROS // GRANULE_MICROS - 1))
def test_minimum_fee_never_decreases_with_the_reservation(n: int) -> None:
    assert minimum_fee(n * GRANULE_MICROS) <= minimum_fee((n + 1) * GRANULE_MICROS)


@pytest.mark.parametrize(
    ("reserved", "fee"),
    [
        ("0.0500", "0.0050"),  # 2 % = 0.0010, raised to the floor
        ("1.0000", "0.0200"),  # 2 %
        ("10.0000", "0.1000"),  # 2 % = 0.2000, capped
        ("0.0030", "0.0030"),  # the floor is more than was reserved: the reservation
        ("0.2550", "0.0051"),  # 2 % = 0.0051 exactly
        ("0.2501", "0.0051"),  # 2 % = 0.005002, rounded UP to the next 0.0001
    ],
)
def test_minimum_fee_worked_values(reserved: str, fee: str) -> None:
    assert format_usd(minimum_fee(parse_usd(reserved))) == fee


# --- no float anywhere ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.5, 1.0, Decimal("0.0500"), True, False, "0.0500", None])
def test_format_refuses_anything_but_int(value: Any) -> None:
    with pytest.raises(TypeError):
        format_usd(value)


@given(st.integers(min_value=-(10**15), max_value=10**15).filter(lambda m: m % GRANULE_MICROS))
def test_format_refuses_amounts_off_the_granule(micros: int) -> None:
    with pytest.raises(ValueError, match="not a multiple of 100"):
        format_usd(micros)


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_ceil100_rounds_up_to_the_next_granule(micros: int) -> None:
    rounded = ceil100(micros)
    assert type(rounded) is int
    assert rounded % GRANULE_MICROS == 0
    assert micros <= rounded < micros + GRANULE_MICROS
