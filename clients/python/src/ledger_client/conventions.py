"""Small helpers for callers that bring conventions of another API to the ledger.

* **Signed amounts** (the customer-balance convention, as in seed 002's
  ``balance_transactions``): one signed integer instead of a direction and a positive
  amount. A *negative* amount is a credit to the customer (it adds to what the ledger
  holds for them), a *positive* amount is a debit (it takes from it). Balances are
  signed the same way: a balance in that convention is what the customer *owes*, the
  negative of the ledger's posted balance.

  ====================  ========================  =============================
  signed amount         ledger direction, amount  ledger balance change
  ====================  ========================  =============================
  ``-2000``             CREDIT, 2000              +2000
  ``5000``              DEBIT, 5000               -5000
  ``0``                 refused (ValueError)      the ledger has no 0 amounts
  ====================  ========================  =============================

* **Length limits** stricter than the ledger's own (a memo of at most 50 characters,
  as FinerWorks requires, where the ledger's description takes 1000): the ledger stores
  whatever fits its own rules, so the stricter limit is the caller's to enforce, before
  sending; :func:`check_length` does it.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from ledger.v1 import transaction_pb2, transaction_service_pb2

from .money import INT64_MAX
from .requests import KindLike, transaction_request

__all__ = [
    "check_length",
    "from_signed_amount",
    "signed_transaction_request",
    "to_signed_amount",
    "to_signed_balance",
]


def from_signed_amount(amount: int) -> tuple[transaction_pb2.Direction.ValueType, int]:
    """A signed amount (negative: credit to the customer, positive: debit) as the
    ledger's ``(direction, amount)``: ``-2000`` -> ``(DIRECTION_CREDIT, 2000)``,
    ``5000`` -> ``(DIRECTION_DEBIT, 5000)``. 0 raises ValueError (the ledger posts no
    zero amounts), as does an amount whose magnitude does not fit in int64."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"a signed amount must be an int of minor units, not {type(amount).__name__}")
    if amount == 0:
        raise ValueError("a signed amount of 0 moves nothing: the ledger refuses zero amounts")
    if abs(amount) > INT64_MAX:
        raise ValueError(f"signed amount {amount} is outside the int64 range")
    if amount < 0:
        return transaction_pb2.DIRECTION_CREDIT, -amount
    return transaction_pb2.DIRECTION_DEBIT, amount


def to_signed_amount(transaction: transaction_pb2.Transaction) -> int:
    """The signed amount of a ledger transaction, seen from its ``account``: a credit is
    negative, a debit (also a HOLD, CAPTURE or the source side of a TRANSFER) positive."""
    if transaction.direction == transaction_pb2.DIRECTION_CREDIT:
        return -transaction.amount
    if transaction.direction == transaction_pb2.DIRECTION_DEBIT:
        return transaction.amount
    raise ValueError(f"transaction {transaction.name or '(unnamed)'} has no direction")


def to_signed_balance(balance: int) -> int:
    """A ledger balance (``ending_balance``, ``AccountBalance.posted``...) in the signed
    convention: what the customer owes, so the ledger's credit of 3000 is ``-3000`` and
    its overdraft of 5000 (balance ``-5000``) is ``5000``."""
    if isinstance(balance, bool) or not isinstance(balance, int):
        raise TypeError(f"a balance must be an int of minor units, not {type(balance).__name__}")
    return -balance


def signed_transaction_request(
    *,
    account: str,
    amount: int,
    currency: str,
    kind: KindLike | None = None,
    description: str = "",
    posting_date: datetime.date | None = None,
    external_id: str = "",
    metadata: Mapping[str, str] | None = None,
    request_id: str | None = None,
) -> transaction_service_pb2.CreateTransactionRequest:
    """:func:`~ledger_client.transaction_request` from a signed ``amount`` (negative:
    credit to the customer, positive: debit), for a batch or an import; post one alone
    with ``ledger.batch_create_transactions([request])`` or spell it out with
    :func:`from_signed_amount` and ``create_transaction``."""
    direction, magnitude = from_signed_amount(amount)
    return transaction_request(
        account=account,
        direction=direction,
        amount=magnitude,
        currency=currency,
        kind=kind,
        description=description,
        posting_date=posting_date,
        external_id=external_id,
        metadata=metadata,
        request_id=request_id,
    )


def check_length(value: str, max_length: int, *, field: str = "description") -> str:
    """``value`` unchanged if it has at most ``max_length`` characters; else ValueError
    naming ``field``. For limits stricter than the ledger's own, which the caller
    enforces before sending: ``description=check_length(memo, 50, field="memo")``."""
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, not {type(value).__name__}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 0:
        raise ValueError(f"max_length must be an int >= 0, got {max_length!r}")
    if len(value) > max_length:
        raise ValueError(f"{field} is at most {max_length} characters (got {len(value)})")
    return value
