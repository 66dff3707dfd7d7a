"""Exact conversion between decimal amounts and the ledger's integer minor units.

The ledger stores every amount as an int64 count of *minor units* of the account's
currency (cents for USD, yen for JPY, fils for KWD). How many minor units make one
major unit is the currency's ISO 4217 exponent ("minor unit"): 10**exponent.

* ISO 4217 codes use their ISO exponent. Most are 2; the exceptions are listed below.
* ISO codes with no minor unit in ISO 4217 (gold ``XAU``, ``XDR``, ``XXX``...) have no
  agreed exponent: :func:`exponent` refuses them until one is chosen with
  :func:`register_unit`.
* Anything else (custom credit units such as ``CREDITS`` or ``POINTS``) has exponent 0
  (one credit is one minor unit) unless registered with :func:`register_unit`.

Codes are case-insensitive. Conversions never round: an amount that is not an exact
multiple of the minor unit, or that falls outside int64, is refused with ValueError;
floats are refused with TypeError because binary floating point cannot represent most
decimal amounts (``0.1 + 0.2 != 0.3``).

The table is written out here on purpose rather than taken from a library: it is small,
ISO changes it a few times a decade, and a ledger must not have an exponent change
under it because a dependency was upgraded. It follows the ISO 4217 list published
2026-01-01.
"""

from __future__ import annotations

import re
import threading
from decimal import Decimal, InvalidOperation

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "exponent",
    "from_minor",
    "is_iso_currency",
    "register_unit",
    "to_minor",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Largest exponent that still lets one major unit fit in an int64 (10**18 < 2**63).
_MAX_EXPONENT = 18


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ISO 4217 codes whose minor unit is not 2.
_ISO_EXPONENT_0 = _codes("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF")
_ISO_EXPONENT_3 = _codes("BHD IQD JOD KWD LYD OMR TND")
_ISO_EXPONENT_4 = _codes("CLF UYW")

# ISO 4217 codes with no minor unit ("N.A."): precious metals, SDR, bond-market units,
# the testing code and "no currency".
_ISO_NO_MINOR_UNIT = _codes("XAG XAU XBA XBB XBC XBD XDR XPD XPT XSU XTS XUA XXX")

# Every other active ISO 4217 code (list of 2026-01-01): minor unit 2.
_ISO_EXPONENT_2 = _codes(
    """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BMD BND BOB BOV BRL BSD BTN BWP BYN
    BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW
    KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR
    MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG
    SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD
    USN UYU UZS VED VES WST XAD XCD XCG YER ZAR ZMW ZWG
    """
)

# Codes withdrawn from ISO 4217 in recent years that still turn up in books and old
# records. Kept with their last ISO exponent so that they are not mistaken for custom
# credit units (which would silently be exponent 0).
_WITHDRAWN_EXPONENTS: dict[str, int] = {
    "ANG": 2,  # Netherlands Antillean guilder, replaced by XCG (2025)
    "BGN": 2,  # Bulgarian lev, replaced by EUR (2026)
    "BYR": 0,  # Belarusian ruble, replaced by BYN (2016)
    "CUC": 2,  # Cuban convertible peso (2021)
    "HRK": 2,  # Croatian kuna, replaced by EUR (2023)
    "LTL": 2,  # Lithuanian litas, replaced by EUR (2015)
    "LVL": 2,  # Latvian lats, replaced by EUR (2014)
    "MRO": 2,  # Mauritanian ouguiya, replaced by MRU (2018)
    "SLL": 2,  # Sierra Leonean leone, replaced by SLE (2024)
    "STD": 2,  # Sao Tome dobra, replaced by STN (2018)
    "VEF": 2,  # Venezuelan bolivar fuerte, replaced by VES (2018)
    "ZWL": 2,  # Zimbabwean dollar, replaced by ZWG (2024)
}

_ISO_EXPONENTS: dict[str, int] = {
    **{code: 2 for code in _ISO_EXPONENT_2},
    **{code: 0 for code in _ISO_EXPONENT_0},
    **{code: 3 for code in _ISO_EXPONENT_3},
    **{code: 4 for code in _ISO_EXPONENT_4},
    **_WITHDRAWN_EXPONENTS,
}

# The server's rule for a currency or credit unit: a letter then 1 to 15 letters,
# digits or underscores.
_CODE_RE = re.compile(r"[A-Z][A-Z0-9_]{1,15}")

_registered: dict[str, int] = {}
_registered_lock = threading.Lock()


def _normalise(code: str) -> str:
    if not isinstance(code, str):
        raise TypeError(f"currency code must be a str, not {type(code).__name__}")
    upper = code.upper()
    if not _CODE_RE.fullmatch(upper):
        raise ValueError(
            f"invalid currency code {code!r}: expected an ISO 4217 code or a credit unit "
            "of a letter followed by 1 to 15 letters, digits or '_'"
        )
    return upper


def is_iso_currency(code: str) -> bool:
    """Whether ``code`` (any case) is an ISO 4217 code this module knows, including the
    codes without a minor unit and the recently withdrawn ones."""
    upper = code.upper() if isinstance(code, str) else ""
    return upper in _ISO_EXPONENTS or upper in _ISO_NO_MINOR_UNIT


def register_unit(code: str, exponent: int) -> None:
    """Declare the exponent of a custom credit unit (or of an ISO code that has no minor
    unit, such as ``XAU``): one major unit is ``10**exponent`` minor units.

    Registering the same exponent again is a no-op. Changing the exponent of an already
    registered unit, or overriding the ISO exponent of a currency, raises ValueError:
    it would silently rescale every amount in that unit.
    """
    upper = _normalise(code)
    if isinstance(exponent, bool) or not isinstance(exponent, int):
        raise TypeError(f"exponent must be an int, not {type(exponent).__name__}")
    if not 0 <= exponent <= _MAX_EXPONENT:
        raise ValueError(f"exponent must be between 0 and {_MAX_EXPONENT}, got {exponent}")
    iso = _ISO_EXPONENTS.get(upper)
    if iso is not None:
        if iso == exponent:
            return
        raise ValueError(f"{upper} is an ISO 4217 currency with exponent {iso}; it cannot be changed")
    with _registered_lock:
        current = _registered.get(upper)
        if current is not None and current != exponent:
            raise ValueError(f"{upper} is already registered with exponent {current}")
        _registered[upper] = exponent


def exponent(currency: str) -> int:
    """The number of decimal places of ``currency``'s minor unit (2 for USD, 0 for JPY,
    3 for KWD, 0 for an unregistered custom credit unit)."""
    upper = _normalise(currency)
    iso = _ISO_EXPONENTS.get(upper)
    if iso is not None:
        return iso
    registered = _registered.get(upper)
    if registered is not None:
        return registered
    if upper in _ISO_NO_MINOR_UNIT:
        raise ValueError(
            f"{upper} has no minor unit in ISO 4217; choose one with register_unit({upper!r}, exponent)"
        )
    return 0


def _check_int64(minor: int, amount: object, currency: str) -> int:
    if not INT64_MIN <= minor <= INT64_MAX:
        raise ValueError(f"{amount!r} {currency} is {minor} minor units, outside the int64 range")
    return minor


def to_minor(amount: Decimal | str | int, currency: str) -> int:
    """Convert an amount in major units (``Decimal("12.34")``, ``"12.34"`` or ``12``) to
    integer minor units of ``currency`` (1234 for USD), exactly.

    Raises ValueError if the amount is not a finite number, is not an exact multiple of
    the currency's minor unit (``"0.001"`` USD, ``"1.5"`` JPY; trailing zeros such as
    ``"1.00"`` JPY are fine) or does not fit in an int64; TypeError for a float, a bool
    or any other type.
    """
    exp = exponent(currency)
    if isinstance(amount, (bool, float)):
        raise TypeError(
            f"refusing {type(amount).__name__} amount {amount!r}: binary floats cannot hold most "
            "decimal amounts exactly; pass a Decimal, a str or an int"
        )
    if isinstance(amount, int):
        return _check_int64(amount * 10**exp, amount, currency)
    if isinstance(amount, str):
        try:
            value = Decimal(amount)
        except InvalidOperation:
            raise ValueError(f"not a decimal amount: {amount!r}") from None
    elif isinstance(amount, Decimal):
        value = amount
    else:
        raise TypeError(f"amount must be a Decimal, str or int, not {type(amount).__name__}")
    if not value.is_finite():
        raise ValueError(f"amount must be finite, got {amount!r}")

    sign, digits, dec_exp = value.as_tuple()
    assert isinstance(dec_exp, int)  # finite Decimals have an int exponent
    # Strip trailing zeros so that the exponent is as large as possible; the value is
    # unchanged ("1.500" -> 15 * 10**-1).
    coefficient = int("".join(map(str, digits)) or "0")
    if coefficient == 0:
        return 0
    while coefficient % 10 == 0:
        coefficient //= 10
        dec_exp += 1
    shift = dec_exp + exp  # minor = coefficient * 10**shift
    if shift < 0:
        raise ValueError(
            f"{amount!r} has more decimal places than {currency.upper()} allows ({exp}); refusing to round"
        )
    # Cheap bound before computing a possibly huge power of ten (int64 has 19 digits).
    if len(str(coefficient)) + shift > 19:
        raise ValueError(f"{amount!r} {currency} is outside the int64 range of minor units")
    minor = coefficient * 10**shift
    return _check_int64(-minor if sign else minor, amount, currency)


def from_minor(minor: int, currency: str) -> Decimal:
    """Convert integer minor units of ``currency`` to an exact Decimal amount in major
    units with the currency's number of decimal places (1234 USD -> ``Decimal("12.34")``,
    5 JPY -> ``Decimal("5")``)."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"minor units must be an int, not {type(minor).__name__}")
    exp = exponent(currency)
    digits = tuple(int(d) for d in str(abs(minor)))
    return Decimal((1 if minor < 0 else 0, digits, -exp))
