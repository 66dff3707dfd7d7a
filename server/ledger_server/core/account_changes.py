"""Changes to an account itself rather than its balances: its details (UpdateAccount) and
its lifecycle (AIP-216 state changes): ACTIVE and FROZEN may turn into each other,
either into CLOSED, and CLOSED is final. A change to the state or the details an account
already has changes nothing and succeeds, so a retry without a request_id is harmless.
What each status refuses is the postings' rule (operations._check_postable)."""

from __future__ import annotations

from typing import Any

from ledger_server.core import views
from ledger_server.core.book import Book, Held
from ledger_server.core.errors import Category, LedgerError, not_found
from ledger_server.core.model import (
    UPDATABLE_FIELDS,
    Account,
    AccountChanges,
    AccountStatus,
    AccountUpdate,
    Creator,
    StatusChange,
    evolve,
)

ACTIVE, FROZEN, CLOSED = AccountStatus.ACTIVE, AccountStatus.FROZEN, AccountStatus.CLOSED
# The states each target may be reached from.
_FROM = {FROZEN: (ACTIVE,), ACTIVE: (FROZEN,), CLOSED: (ACTIVE, FROZEN)}


def change_status(
    book: Book, account_id: str, target: AccountStatus, reason: str, by: Creator | None
) -> Account:
    """The account in status `target`, changed by `by` for `reason` unless it was in it
    already; its balances as of now (the Book writes off lapsed holds and expired credit
    when it locks it)."""
    held = book.customer(account_id)
    current = AccountStatus(held.status)
    name = f"accounts/{account_id}"
    if current is not target:
        if current not in _FROM[target]:
            raise LedgerError(
                Category.FAILED_PRECONDITION,
                "ACCOUNT_NOT_ACTIVE",
                f"account {name} is {current.value}: it cannot be made {target.value}",
                metadata={"account": name, "status": current.value},
            )
        if target is CLOSED and (held.posted or held.pending or held.expiring):
            raise LedgerError(
                Category.FAILED_PRECONDITION,
                "ACCOUNT_NOT_EMPTY",
                f"account {name} cannot be closed: posted {held.posted}, pending {held.pending}, "
                f"expiring {held.expiring} (all must be 0)",
                metadata={
                    "account": name,
                    "posted": str(held.posted),
                    "pending": str(held.pending),
                    "expiring": str(held.expiring),
                },
            )
        book.w.set_account_status(account_id, StatusChange(current, target, reason, book.now, by))
    return _now(book, held, _read(book, account_id))


def update(book: Book, account_id: str, changes: AccountChanges, reason: str, by: Creator | None) -> Account:
    """The account with `changes` applied (the fields they set; the rest as they are),
    changed by `by` for `reason` where a value differs: only those are written, and kept
    in the account's update history."""
    held = book.customer(account_id)
    name = f"accounts/{account_id}"
    if held.status == CLOSED.value:
        raise LedgerError(
            Category.FAILED_PRECONDITION,
            "ACCOUNT_NOT_ACTIVE",
            f"account {name} is closed: it cannot be changed",
            metadata={"account": name, "status": held.status},
        )
    floor = held.floor if changes.balance_floor is None else changes.balance_floor
    if floor > held.floor and held.available < floor:
        raise LedgerError(
            Category.FAILED_PRECONDITION,
            "BALANCE_BELOW_FLOOR",
            f"balance_floor {floor} is above the available balance {held.available} of {name}",
            metadata={"account": name, "available": str(held.available), "balance_floor": str(floor)},
        )
    current = _read(book, account_id)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for field in UPDATABLE_FIELDS:
        old, new = getattr(current, field), getattr(changes, field)
        if new is not None and new != old:
            before[field], after[field] = old, new
    if after:
        change = AccountUpdate(AccountChanges(**before), AccountChanges(**after), reason, book.now, by)
        book.w.update_account(account_id, change)
        current = evolve(current, **after, updated_at=book.now)
    return _now(book, held, current)


def _read(book: Book, account_id: str) -> Account:
    account = book.w.get_account(book.tenant_id, account_id)
    if account is None:  # locked by the caller, in this transaction
        raise not_found("account", f"accounts/{account_id}")
    return account


def _now(book: Book, held: Held, account: Account) -> Account:
    """`account` (as stored after this unit's own change) as the unit leaves it: the
    balances as the Book holds them (what it wrote off is written back at its flush),
    with the next expirations of its credit as GetAccount shows them."""
    updated = book.now if held.dirty else account.updated_at
    account = evolve(
        account, posted=held.posted, pending=held.pending, expiring=held.expiring, updated_at=updated
    )
    return views.account_now(book.w, account, book.now)
