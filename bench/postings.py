"""The postings the load generator makes."""

from __future__ import annotations

import random

from ledger.v1 import transaction_pb2

CURRENCY = "USD"


def random_posting(account: str, rng: random.Random) -> transaction_pb2.Transaction:
    """A small credit or debit (even odds); accounts are funded so that debits never fail."""
    credit = rng.random() < 0.5
    return transaction_pb2.Transaction(
        account=account,
        direction=transaction_pb2.DIRECTION_CREDIT if credit else transaction_pb2.DIRECTION_DEBIT,
        amount=rng.randint(1, 100),
        currency=CURRENCY,
        kind=transaction_pb2.TRANSACTION_KIND_TOP_UP if credit else transaction_pb2.TRANSACTION_KIND_PURCHASE,
    )
