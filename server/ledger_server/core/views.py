"""Accounts and transactions as of now. Expired credit lots and lapsed holds are
written off by the next write to their account or by the expiry worker; until then,
reads already leave them out, so no caller ever sees expired credit as spendable."""

from __future__ import annotations

import datetime as dt

from ledger_server.core.model import (
    Account,
    Expiration,
    Transaction,
    TransactionStatus,
    TransactionType,
    evolve,
)
from ledger_server.core.ports import ReadUnit

MAX_NEXT_EXPIRATIONS = 10


def account_now(r: ReadUnit, account: Account, now: dt.datetime) -> Account:
    pending = account.pending
    if pending > 0:
        pending -= sum(h.amount for h in r.expired_holds(account.id, now))
    if account.expiring <= 0:
        return evolve(account, pending=pending)
    expired = 0
    upcoming: dict[dt.datetime, int] = {}
    for lot in r.open_lots(account.id):
        if lot.expires_at <= now:
            expired += lot.remaining
        elif len(upcoming) < MAX_NEXT_EXPIRATIONS or lot.expires_at in upcoming:
            upcoming[lot.expires_at] = upcoming.get(lot.expires_at, 0) + lot.remaining
    return evolve(
        account,
        posted=account.posted - expired,
        pending=pending,
        expiring=account.expiring - expired,
        next_expirations=tuple(Expiration(amount, at) for at, amount in sorted(upcoming.items())),
    )


def transaction_now(txn: Transaction, now: dt.datetime) -> Transaction:
    """A hold past its expiry time is void, whether or not it has been released yet."""
    if (
        txn.type is TransactionType.HOLD
        and txn.status is TransactionStatus.PENDING
        and txn.expires_at is not None
        and txn.expires_at <= now
    ):
        return evolve(txn, status=TransactionStatus.VOIDED, updated_at=txn.expires_at)
    return txn
