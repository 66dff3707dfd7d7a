"""Tests of ledger_client.money: ISO 4217 exponents and exact minor-unit conversion."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_client import exponent, from_minor, is_iso_currency, money, register_unit, to_minor
from ledger_client.money import INT64_MAX, INT64_MIN

# Hypothesis: no example database on disk, no wall-clock deadline on slow CI machines.
PROPERTY = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

SAMPLE_CODES = ["USD", "eur", "JPY", "krw", "KWD", "BHD", "TND", "CLF", "UYW", "CREDITS", "points_v2", "GBP"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("USD", 2),
        ("usd", 2),
        ("Eur", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("ISK", 0),
        ("VND", 0),
        ("XOF", 0),
        ("BHD", 3),
        ("KWD", 3),
        ("iqd", 3),
        ("TND", 3),
        ("CLF", 4),
        ("UYW", 4),
        ("XCG", 2),  # new in 2025
        ("ZWG", 2),  # new in 2024
        ("HRK", 2),  # withdrawn, still known
        ("BYR", 0),  # withdrawn, exponent 0
        ("CREDITS", 0),
        ("credits", 0),
        ("POINTS_2024", 0),
        ("PTS", 0),  # 3 letters but not ISO: a custom unit
    ],
)
def test_exponent(code: str, expected: int) -> None:
    assert exponent(code) == expected


@pytest.fixture(autouse=True)
def _isolated_registry() -> Iterator[None]:
    """register_unit() is process-wide: undo each test's registrations."""
    saved = dict(money._registered)
    yield
    money._registered.clear()
    money._registered.update(saved)


def test_every_non_two_exponent_iso_code() -> None:
    zero = (
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "ISK",
        "JPY",
        "KMF",
        "KRW",
        "PYG",
        "RWF",
        "UGX",
        "UYI",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    )
    three = ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")
    four = ("CLF", "UYW")
    assert {c: exponent(c) for c in zero} == dict.fromkeys(zero, 0)
    assert {c: exponent(c) for c in three} == dict.fromkeys(three, 3)
    assert {c: exponent(c) for c in four} == dict.fromkeys(four, 4)


@pytest.mark.parametrize("code", ["XAU", "xag", "XDR", "XXX", "XTS"])
def test_iso_codes_without_minor_unit_need_registration(code: str) -> None:
    assert is_iso_currency(code)
    with pytest.raises(ValueError, match="no minor unit"):
        exponent(code)
    with pytest.raises(ValueError, match="no minor unit"):
        to_minor("1", code)


def test_registering_an_iso_code_without_minor_unit() -> None:
    register_unit("xpt", 3)
    assert exponent("XPT") == 3
    assert to_minor("1.5", "XPT") == 1500


@pytest.mark.parametrize("code", ["", "U", "1USD", "US D", "USD!", "A" * 17, "€"])
def test_invalid_codes(code: str) -> None:
    with pytest.raises(ValueError, match="invalid currency code"):
        exponent(code)


def test_non_str_code() -> None:
    with pytest.raises(TypeError):
        exponent(840)  # type: ignore[arg-type]


def test_is_iso_currency() -> None:
    assert is_iso_currency("usd")
    assert is_iso_currency("XAU")
    assert not is_iso_currency("CREDITS")
    assert not is_iso_currency("PTS")


def test_register_unit() -> None:
    register_unit("gems", 2)
    assert exponent("GEMS") == 2
    assert exponent("gems") == 2
    assert to_minor("1.25", "Gems") == 125
    assert from_minor(125, "GEMS") == Decimal("1.25")
    register_unit("GEMS", 2)  # same again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_unit("GEMS", 3)
    assert exponent("GEMS") == 2


def test_register_unit_cannot_change_iso_exponents() -> None:
    register_unit("USD", 2)  # agrees with ISO: a no-op
    with pytest.raises(ValueError, match="ISO 4217"):
        register_unit("usd", 3)
    with pytest.raises(ValueError, match="ISO 4217"):
        register_unit("JPY", 2)
    assert exponent("USD") == 2
    assert exponent("JPY") == 0


@pytest.mark.parametrize("bad", [-1, 19, 100])
def test_register_unit_exponent_range(bad: int) -> None:
    with pytest.raises(ValueError, match="between 0 and 18"):
        register_unit("RANGECHECK", bad)


def test_register_unit_exponent_type() -> None:
    with pytest.raises(TypeError):
        register_unit("TYPECHECK", True)
    with pytest.raises(TypeError):
        register_unit("TYPECHECK", 2.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "code", "expected"),
    [
        (Decimal("12.34"), "USD", 1234),
        ("12.34", "usd", 1234),
        ("12.3", "USD", 1230),
        ("12", "USD", 1200),
        (12, "USD", 1200),
        ("0.01", "USD", 1),
        ("-0.01", "USD", -1),
        ("-12.34", "EUR", -1234),
        ("  7.50 ", "GBP", 750),
        ("1_000.25", "USD", 100025),
        ("1E+3", "USD", 100000),
        ("12.340000", "USD", 1234),  # trailing zeros are exact
        ("1.00", "JPY", 1),
        ("500", "JPY", 500),
        (500, "KRW", 500),
        ("1.234", "KWD", 1234),
        ("0.001", "BHD", 1),
        ("1.2345", "CLF", 12345),
        ("42", "CREDITS", 42),
        (Decimal("-0"), "USD", 0),
        ("0E-1000", "USD", 0),
        (Decimal("1234567890123456.78"), "USD", 123456789012345678),
        # 40 significant digits, more than the default decimal context's 28: still exact.
        (Decimal("12.34" + "0" * 36), "USD", 1234),
        ("92233720368547758.07", "USD", INT64_MAX),
        ("-92233720368547758.08", "USD", INT64_MIN),
        ("9223372036854775807", "JPY", INT64_MAX),
    ],
)
def test_to_minor(amount: Decimal | str | int, code: str, expected: int) -> None:
    result = to_minor(amount, code)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        ("0.001", "USD"),
        ("12.345", "USD"),
        (Decimal("0.005"), "EUR"),
        ("1.5", "JPY"),
        ("0.1", "CREDITS"),
        ("1.0001", "KWD"),
        ("1.00001", "CLF"),
        ("1E-999999999", "USD"),  # must not try to build 10**999999999
    ],
)
def test_to_minor_refuses_to_round(amount: Decimal | str, code: str) -> None:
    with pytest.raises(ValueError, match="decimal places"):
        to_minor(amount, code)


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        ("92233720368547758.08", "USD"),
        ("-92233720368547758.09", "USD"),
        ("9223372036854775808", "JPY"),
        (92233720368547759, "USD"),
        (-(2**63) - 1, "JPY"),
        ("1E+999999999", "USD"),  # must not try to build 10**999999999
        (Decimal("1e30"), "CREDITS"),
    ],
)
def test_to_minor_refuses_out_of_int64(amount: Decimal | str | int, code: str) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match="int64"):
        to_minor(amount, code)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    "amount", ["", "abc", "1,50", "1.2.3", "NaN", "sNaN", "Infinity", "-inf", Decimal("NaN")]
)
def test_to_minor_refuses_non_numbers(amount: Decimal | str) -> None:
    with pytest.raises(ValueError):
        to_minor(amount, "USD")


@pytest.mark.parametrize("amount", [0.1, 1.0, float("nan"), True, None, [1], b"1.00"])
def test_to_minor_refuses_floats_and_other_types(amount: object) -> None:
    with pytest.raises(TypeError):
        to_minor(amount, "USD")  # type: ignore[arg-type]


def test_float_error_explains_why() -> None:
    with pytest.raises(TypeError, match="float"):
        to_minor(0.1, "USD")  # type: ignore[arg-type]


def test_to_minor_refuses_bad_currency() -> None:
    with pytest.raises(ValueError, match="invalid currency code"):
        to_minor("1", "U$D")


@pytest.mark.parametrize(
    ("minor", "code", "expected"),
    [
        (1234, "USD", "12.34"),
        (1200, "usd", "12.00"),
        (5, "USD", "0.05"),
        (-5, "USD", "-0.05"),
        (0, "USD", "0.00"),
        (0, "JPY", "0"),
        (500, "JPY", "500"),
        (1, "KWD", "0.001"),
        (12345, "CLF", "1.2345"),
        (42, "CREDITS", "42"),
        (INT64_MAX, "USD", "92233720368547758.07"),
        (INT64_MIN, "USD", "-92233720368547758.08"),
    ],
)
def test_from_minor(minor: int, code: str, expected: str) -> None:
    result = from_minor(minor, code)
    assert isinstance(result, Decimal)
    assert str(result) == expected
    assert result == Decimal(expected)


@pytest.mark.parametrize("minor", [1.0, True, "12", Decimal(12)])
def test_from_minor_refuses_non_int(minor: object) -> None:
    with pytest.raises(TypeError):
        from_minor(minor, "USD")  # type: ignore[arg-type]


def test_table_matches_iso4217_package() -> None:
    """Cross-check against the `iso4217` PyPI package (a dev dependency, not the client's)."""
    import iso4217  # noqa: PLC0415

    for currency in iso4217.Currency:
        assert is_iso_currency(currency.code), currency.code
        if currency.exponent is None:
            with pytest.raises(ValueError):
                exponent(currency.code)
        else:
            assert exponent(currency.code) == currency.exponent, currency.code


# -- properties ----------------------------------------------------------------------


@PROPERTY
@given(code=st.sampled_from(SAMPLE_CODES), minor=st.integers(min_value=INT64_MIN, max_value=INT64_MAX))
def test_minor_round_trips_through_decimal(code: str, minor: int) -> None:
    amount = from_minor(minor, code)
    assert to_minor(amount, code) == minor
    # ... and through its string form, which is what gets stored and typed in.
    assert to_minor(str(amount), code) == minor
    # The Decimal has exactly the currency's number of decimal places.
    assert amount.as_tuple().exponent == -exponent(code)


@PROPERTY
@given(data=st.data(), code=st.sampled_from(SAMPLE_CODES))
def test_decimal_round_trips_through_minor(data: st.DataObject, code: str) -> None:
    exp = exponent(code)
    bound = Decimal(INT64_MAX).scaleb(-exp)
    amount = data.draw(
        st.decimals(min_value=-bound, max_value=bound, places=exp, allow_nan=False, allow_infinity=False)
    )
    minor = to_minor(amount, code)
    assert INT64_MIN <= minor <= INT64_MAX
    assert from_minor(minor, code) == amount


@PROPERTY
@given(
    code=st.sampled_from(SAMPLE_CODES),
    minor=st.integers(min_value=-(10**15), max_value=10**15).filter(lambda n: n % 10 != 0),
)
def test_one_decimal_place_too_many_is_refused(code: str, minor: int) -> None:
    # minor / 10**(exp + 1) has a non-zero digit one place past the currency's exponent.
    amount = Decimal(minor).scaleb(-(exponent(code) + 1))
    with pytest.raises(ValueError):
        to_minor(amount, code)


@PROPERTY
@given(code=st.sampled_from(SAMPLE_CODES), major=st.integers(min_value=-(10**12), max_value=10**12))
def test_int_amounts_are_major_units(code: str, major: int) -> None:
    assert to_minor(major, code) == major * 10 ** exponent(code)
    assert to_minor(major, code) == to_minor(str(major), code) == to_minor(Decimal(major), code)


@PROPERTY
@given(code=st.sampled_from(SAMPLE_CODES), minor=st.integers(min_value=-(10**15), max_value=10**15))
def test_conversion_is_case_insensitive(code: str, minor: int) -> None:
    assert from_minor(minor, code.lower()) == from_minor(minor, code.upper())
    amount = from_minor(minor, code)
    assert to_minor(amount, code.lower()) == to_minor(amount, code.upper()) == minor
