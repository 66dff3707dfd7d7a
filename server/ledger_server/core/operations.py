"""The ledger's mutations, each run inside one write unit on a Book: the rules of
posting, holds, captures, voids, refunds and transfers. A refusal raises LedgerError
before the unit commits, so a refused operation changes nothing."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ledger_server.core.book import ISSUANCE, Book, Held
from ledger_server.core.errors import Category, FieldViolation, LedgerError, not_found
from ledger_server.core.lots import mirrored
from ledger_server.core.model import (
    AccountStatus,
    Direction,
    NewTransaction,
    Transaction,
    TransactionStatus,
    TransactionType,
)

REFUNDABLE_TYPES = (TransactionType.STANDARD, TransactionType.CAPTURE)
REFUNDABLE_STATUSES = (TransactionStatus.POSTED, TransactionStatus.PARTIALLY_REFUNDED)


@dataclass(frozen=True)
class Capture:
    hold: Transaction
    capture: Transaction


@dataclass(frozen=True)
class Refund:
    refund: Transaction
    original: Transaction


def post(book: Book, cmd: NewTransaction) -> Transaction:
    """A credit (optionally expiring) or a debit against the tenant's issuance account."""
    account = book.customer(cmd.account_id, counter=(cmd.currency, ISSUANCE))
    _check_postable(account, cmd.currency)
    _check_expiry(book, cmd, "transaction")
    _check_external_id(book, cmd.external_id)
    assert cmd.direction is not None  # validated by the ledger
    signed = cmd.direction.signed(cmd.amount)
    if signed < 0:
        _require_funds(account, cmd.amount)
    counter = book.counter(account.currency, ISSUANCE)
    txn = book.record(
        _from_command(book, account, cmd, TransactionType.STANDARD), [(account, signed), (counter, -signed)]
    )
    if signed > 0 and cmd.expires_at is not None:
        book.grant(account, txn.id, [(cmd.expires_at, cmd.amount)])
    elif signed < 0:
        book.take(account, cmd.amount, txn.id)
    return txn


def hold(book: Book, cmd: NewTransaction, field: str) -> Transaction:
    """A pending debit: reserves `amount` of the available balance, posts nothing.
    `field` is the request's field holding it (`hold`, or a batch item's `transaction`)."""
    account = book.customer(cmd.account_id)
    _check_postable(account, cmd.currency)
    _check_expiry(book, cmd, field)
    _check_external_id(book, cmd.external_id)
    _require_funds(account, cmd.amount)
    account.pending += cmd.amount
    account.dirty = True
    txn = _from_command(book, account, cmd, TransactionType.HOLD, status=TransactionStatus.PENDING)
    return book.record(txn, [])


def capture(book: Book, account_id: str, hold_id: str, amount: int, details: NewTransaction) -> Capture:
    """Post `amount` (0: all) of a pending hold as a CAPTURE debit; release the rest.
    `details` carries the capture's description, external_id and creator (the capturing
    caller)."""
    account = book.customer(account_id)  # releases the hold first if it has expired
    held = _pending_hold(book, hold_id)
    amount = amount or held.amount
    if amount > held.amount:
        raise LedgerError(
            Category.FAILED_PRECONDITION,
            "AMOUNT_EXCEEDS_HOLD",
            f"capture of {amount} is above the held amount {held.amount}",
            metadata={"hold": f"transactions/{held.id}", "held": str(held.amount), "amount": str(amount)},
        )
    _check_postable(account, held.currency)
    _check_external_id(book, details.external_id)
    date = _dated_after(book, held, details)
    account.pending -= held.amount
    account.dirty = True
    _require_funds(account, amount)
    counter = book.counter(account.currency, ISSUANCE)
    txn = book.new_transaction(
        account,
        Direction.DEBIT,
        amount,
        TransactionType.CAPTURE,
        kind=held.kind,
        description=details.description or held.description,
        external_id=details.external_id,
        metadata=held.metadata,
        creator=details.creator,
        posting_date=date,
        related_id=held.id,
    )
    txn = book.record(txn, [(account, -amount), (counter, amount)])
    book.take(account, amount, txn.id)
    return Capture(book.set_state(held, TransactionStatus.CAPTURED, captured=amount), txn)


def void(book: Book, account_id: str, hold_id: str) -> Transaction:
    """Cancel a pending hold: its whole amount is available again."""
    account = book.customer(account_id)
    held = _pending_hold(book, hold_id)
    account.pending -= held.amount
    account.dirty = True
    return book.set_state(held, TransactionStatus.VOIDED)


def refund(book: Book, account_id: str, original_id: str, amount: int, cmd: NewTransaction) -> Refund:
    """Refund `amount` (0: all that is left) of a posted credit or debit, in the
    opposite direction, linked to the original."""
    account = book.customer(account_id)
    original = _transaction(book, original_id)
    if original.type not in REFUNDABLE_TYPES or original.status not in (
        *REFUNDABLE_STATUSES,
        TransactionStatus.REFUNDED,
    ):
        raise LedgerError(
            Category.FAILED_PRECONDITION,
            "NOT_REFUNDABLE",
            f"a {original.type.value} transaction that is {original.status.value} cannot be refunded",
            metadata={"transaction": f"transactions/{original.id}", "type": original.type.value},
        )
    refundable = original.amount - original.refunded_amount
    amount = amount or refundable
    if refundable == 0 or amount > refundable:
        raise LedgerError(
            Category.FAILED_PRECONDITION,
            "AMOUNT_EXCEEDS_REFUNDABLE",
            f"refund of {amount} is above the {refundable} left to refund of transactions/{original.id}",
            metadata={"transaction": f"transactions/{original.id}", "refundable": str(refundable)},
        )
    _check_postable(account, original.currency)
    _check_external_id(book, cmd.external_id)
    date = _dated_after(book, original, cmd)
    direction = Direction.CREDIT if original.direction is Direction.DEBIT else Direction.DEBIT
    if direction is Direction.DEBIT:
        _require_funds(account, amount)
    counter = book.counter(account.currency, ISSUANCE)
    signed = direction.signed(amount)
    txn = book.new_transaction(
        account,
        direction,
        amount,
        TransactionType.REFUND,
        kind=original.kind,
        description=cmd.description,
        external_id=cmd.external_id,
        metadata=cmd.metadata,
        creator=cmd.creator,
        posting_date=date,
        related_id=original.id,
    )
    txn = book.record(txn, [(account, signed), (counter, -signed)])
    if direction is Direction.CREDIT:
        book.give_back(account, original, amount)
    else:
        book.take(account, amount, txn.id, prefer=original.id)
    refunded = original.refunded_amount + amount
    status = (
        TransactionStatus.REFUNDED if refunded == original.amount else TransactionStatus.PARTIALLY_REFUNDED
    )
    return Refund(txn, book.set_state(original, status, refunded=refunded))


def transfer(book: Book, cmd: NewTransaction) -> Transaction:
    """Move `amount` from cmd.account_id to cmd.counterparty_id. Both accounts are locked
    at once, in id order, so opposite transfers between two accounts cannot deadlock."""
    book.customers((cmd.account_id, cmd.counterparty_id))
    source, destination = book.customer(cmd.account_id), book.customer(cmd.counterparty_id)
    _check_postable(source, cmd.currency)
    _check_postable(destination, cmd.currency, "transfer.counterparty_account")
    _check_external_id(book, cmd.external_id)
    _require_funds(source, cmd.amount)
    txn = _from_command(book, source, cmd, TransactionType.TRANSFER)
    txn = book.record(txn, [(source, -cmd.amount), (destination, cmd.amount)])
    # Expiring credit stays expiring: the destination gets lots with the same expiries.
    book.grant(destination, txn.id, mirrored(book.take(source, cmd.amount, txn.id)))
    return txn


# -- rules ----------------------------------------------------------------------------


def _dated_after(book: Book, original: Transaction, cmd: NewTransaction) -> dt.date:
    """The posting date of a capture or refund: the one asked for (today by default), not
    before its hold's or original's, so a balance as of any date never counts the
    follow-up without what it follows."""
    date = cmd.posting_date or book.now.date()
    if date < original.posting_date:
        raise LedgerError(
            Category.FAILED_PRECONDITION,
            "POSTING_DATE_TOO_EARLY",
            f"posting date {date.isoformat()} is before {original.posting_date.isoformat()}, "
            f"the posting date of transactions/{original.id}",
            metadata={
                "transaction": f"transactions/{original.id}",
                "posting_date": date.isoformat(),
                "earliest": original.posting_date.isoformat(),
            },
        )
    return date


def _from_command(
    book: Book,
    account: Held,
    cmd: NewTransaction,
    type_: TransactionType,
    status: TransactionStatus = TransactionStatus.POSTED,
) -> Transaction:
    assert cmd.direction is not None
    return book.new_transaction(
        account,
        cmd.direction,
        cmd.amount,
        type_,
        kind=cmd.kind,
        status=status,
        description=cmd.description,
        posting_date=cmd.posting_date,
        external_id=cmd.external_id,
        metadata=cmd.metadata,
        creator=cmd.creator,
        expires_at=cmd.expires_at,
        counterparty_id=cmd.counterparty_id,
    )


def _transaction(book: Book, transaction_id: str) -> Transaction:
    txn = book.w.get_transaction(book.tenant_id, transaction_id)
    if txn is None:
        raise not_found("transaction", f"transactions/{transaction_id}")
    return txn


def _pending_hold(book: Book, hold_id: str) -> Transaction:
    txn = _transaction(book, hold_id)
    name = f"transactions/{txn.id}"
    if txn.type is not TransactionType.HOLD:
        raise LedgerError(
            Category.FAILED_PRECONDITION,
            "NOT_A_HOLD",
            f"{name} is a {txn.type.value} transaction, not a hold",
            metadata={"transaction": name, "type": txn.type.value},
        )
    if txn.status is not TransactionStatus.PENDING:
        raise LedgerError(
            Category.FAILED_PRECONDITION,
            "HOLD_NOT_PENDING",
            f"hold {name} is {txn.status.value}",
            metadata={"hold": name, "status": txn.status.value},
        )
    return txn


def _check_postable(account: Held, currency: str, field: str = "transaction.currency") -> None:
    if account.currency != currency:
        raise LedgerError(
            Category.INVALID_ARGUMENT,
            "CURRENCY_MISMATCH",
            f"currency {currency} differs from the account's {account.currency}",
            metadata={
                "account": f"accounts/{account.id}",
                "account_currency": account.currency,
                "currency": currency,
            },
            violations=[FieldViolation(field, f"must be {account.currency}")],
        )
    if account.status != AccountStatus.ACTIVE.value:
        raise LedgerError(
            Category.FAILED_PRECONDITION,
            "ACCOUNT_NOT_ACTIVE",
            f"account accounts/{account.id} is {account.status}",
            metadata={"account": f"accounts/{account.id}", "status": account.status},
        )


def _check_expiry(book: Book, cmd: NewTransaction, field: str) -> None:
    if cmd.expires_at is not None and cmd.expires_at <= book.now:
        raise LedgerError(
            Category.INVALID_ARGUMENT,
            "INVALID_REQUEST",
            f"{field}.expire_time must be in the future",
            violations=[FieldViolation(f"{field}.expire_time", "must be in the future")],
        )


def _check_external_id(book: Book, external_id: str) -> None:
    if not external_id:
        return
    existing = book.w.find_transaction_id_by_external_id(book.tenant_id, external_id)
    if existing is not None:
        name = f"transactions/{existing}"
        raise LedgerError(
            Category.ALREADY_EXISTS,
            "DUPLICATE_EXTERNAL_ID",
            f"external_id {external_id!r} was already used by {name}",
            metadata={"existing_transaction": name, "external_id": external_id},
            resource=("ledger.v1.Transaction", name),
        )


def _require_funds(account: Held, amount: int) -> None:
    """A debit of `amount` must leave the available balance at or above the floor."""
    if account.available - amount >= account.floor:
        return
    raise LedgerError(
        Category.FAILED_PRECONDITION,
        "INSUFFICIENT_FUNDS",
        f"debit of {amount} exceeds the available balance {account.available} "
        f"(floor {account.floor}) of accounts/{account.id}",
        metadata={
            "account": f"accounts/{account.id}",
            "available": str(account.available),
            "balance_floor": str(account.floor),
            "amount": str(amount),
        },
    )
