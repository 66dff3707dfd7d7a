"""Input rules shared by every mutation. Each check appends FieldViolations so that one
error names every bad field at once."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ledger_server.core.errors import FieldViolation
from ledger_server.core.model import INT64_MAX, INT64_MIN

# ISO 4217 codes are three letters; custom credit units (CREDITS, POINTS_V2) are longer.
# ASCII only, checked before upper-casing: "\u0131sd".upper() (dotless i) is "ISD".
CURRENCY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{1,15}$", re.ASCII)
# Canonical UUID text only: uuid.UUID() also takes braces, "urn:uuid:", no dashes,
# padding and non-ASCII digits, which would let many spellings name one resource.
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MAX_EXTERNAL_REF = 128
MAX_EXTERNAL_ID = 128
MAX_DESCRIPTION = 1000
MAX_REASON = 500  # why an account's status or details changed
MAX_METADATA_ENTRIES = 50
MAX_METADATA_KEY = 40
MAX_METADATA_VALUE = 500


class Violations(list[FieldViolation]):
    def add(self, field: str, description: str) -> None:
        if not any(v.field == field for v in self):
            self.append(FieldViolation(field, description))


def normalize_currency(code: str) -> str:
    """Upper-case a valid code; anything else is left as it is for check_currency to refuse."""
    return code.upper() if CURRENCY_RE.match(code) else code


def check_currency(v: Violations, field: str, code: str) -> None:
    if not code:
        v.add(field, "required")
    elif not CURRENCY_RE.match(code):
        v.add(field, "must be an ISO 4217 code or a unit of 2-16 letters, digits or _ starting with a letter")


def check_text(v: Violations, field: str, text: str, max_len: int, *, required: bool = False) -> None:
    if required and not text:
        v.add(field, "required")
    elif len(text) > max_len:
        v.add(field, f"at most {max_len} characters (got {len(text)})")
    elif any(ord(c) < 32 and c not in "\t\n" for c in text):
        v.add(field, "must not contain control characters")


def check_metadata(v: Violations, field: str, metadata: Mapping[str, str]) -> None:
    if len(metadata) > MAX_METADATA_ENTRIES:
        v.add(field, f"at most {MAX_METADATA_ENTRIES} entries (got {len(metadata)})")
        return
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY:
            v.add(f"{field}[{key[:MAX_METADATA_KEY]!r}]", f"keys must be 1 to {MAX_METADATA_KEY} characters")
        elif len(value) > MAX_METADATA_VALUE:
            v.add(f"{field}[{key!r}]", f"values must be at most {MAX_METADATA_VALUE} characters")


def check_positive_amount(v: Violations, field: str, amount: int) -> None:
    if amount <= 0:
        v.add(field, "must be a positive number of minor units")
    elif amount > INT64_MAX:
        v.add(field, "must fit in int64")


def check_floor(v: Violations, field: str, floor: int) -> None:
    if floor > 0:
        v.add(field, "must be <= 0 (0 forbids overdraft, negative is a credit line)")
    elif floor < INT64_MIN:
        v.add(field, "must fit in int64")


def check_account(
    v: Violations,
    *,
    external_ref: str | None = None,
    currency: str | None = None,
    balance_floor: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """An account's fields as CreateAccount and UpdateAccount take them (None: not given)."""
    if external_ref is not None:
        check_text(v, "account.external_ref", external_ref, MAX_EXTERNAL_REF)
    if currency is not None:
        check_currency(v, "account.currency", currency)
    if balance_floor is not None:
        check_floor(v, "account.balance_floor", balance_floor)
    if metadata is not None:
        check_metadata(v, "account.metadata", metadata)


def canonical_uuid(text: str) -> str | None:
    """The UUID in canonical lower-case form, or None unless `text` is one (any case)."""
    lowered = text.lower()
    return lowered if UUID_RE.match(lowered) else None


def normalize_request_id(v: Violations, field: str, request_id: str) -> str:
    """AIP-155: request ids are UUIDs; compared in canonical lower-case form."""
    if not request_id:
        return ""
    canonical = canonical_uuid(request_id)
    if canonical is None:
        v.add(field, "must be a UUID such as 3f0c1f8e-0d5b-4a47-9b8e-2f1d3c4b5a69")
        return ""
    return canonical
