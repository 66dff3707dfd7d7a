"""Domain records passed between the api, the core and the store."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Generic, TypeVar

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
DEFAULT_TENANT = "default"

T = TypeVar("T")


def evolve(record: T, **changes: object) -> T:
    """`dataclasses.replace` for the frozen records of this module (none has a
    __post_init__), without calling __init__: a frozen dataclass's __init__ sets each field
    through object.__setattr__, ~5 us for a Transaction against ~1 this way (measured),
    and the posting path copies one per posting."""
    assert changes.keys() <= vars(record).keys(), f"no such fields: {changes.keys() - vars(record).keys()}"
    new: T = object.__new__(type(record))
    vars(new).update(vars(record), **changes)
    return new


class Direction(enum.Enum):
    CREDIT = "credit"
    DEBIT = "debit"

    def signed(self, amount: int) -> int:
        """`amount` as it moves the account: + for a credit, - for a debit."""
        return amount if self is Direction.CREDIT else -amount


class AccountStatus(enum.Enum):
    ACTIVE = "active"
    FROZEN = "frozen"
    CLOSED = "closed"


class TransactionKind(enum.Enum):
    ADJUSTMENT = "adjustment"
    TOP_UP = "top_up"
    PROMOTION = "promotion"
    PURCHASE = "purchase"


class TransactionType(enum.Enum):
    STANDARD = "standard"
    HOLD = "hold"
    CAPTURE = "capture"
    REFUND = "refund"
    TRANSFER = "transfer"
    EXPIRY = "expiry"


class TransactionStatus(enum.Enum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    CAPTURED = "captured"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    created_at: dt.datetime


@dataclass(frozen=True)
class TokenRecord:
    """An API token as stored: never the secret, only its hash."""

    id: str
    tenant_id: str
    name: str
    scopes: frozenset[str]
    secret_hash: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


@dataclass(frozen=True)
class Creator:
    """The API token a transaction was created with."""

    token_id: str
    token_name: str


@dataclass(frozen=True)
class NewAccount:
    external_ref: str
    currency: str
    balance_floor: int = 0
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AccountChanges:
    """UpdateAccount's new values: None leaves a field as it is."""

    external_ref: str | None = None
    balance_floor: int | None = None
    metadata: dict[str, str] | None = None


UPDATABLE_FIELDS = ("external_ref", "balance_floor", "metadata")  # AccountChanges' fields


@dataclass(frozen=True)
class Account:
    id: str
    tenant_id: str
    external_ref: str
    currency: str
    balance_floor: int
    status: AccountStatus
    metadata: dict[str, str]
    posted: int
    pending: int
    created_at: dt.datetime
    updated_at: dt.datetime
    expiring: int = 0
    next_expirations: tuple[Expiration, ...] = ()
    # The latest status change: why, when and by whom (None until the first).
    status_reason: str = ""
    status_changed_at: dt.datetime | None = None
    status_changed_by: Creator | None = None

    @property
    def available(self) -> int:
        return self.posted - self.pending

    @property
    def permanent(self) -> int:
        return self.posted - self.expiring


@dataclass(frozen=True)
class StatusChange:
    """One change of an account's status (FreezeAccount, UnfreezeAccount, CloseAccount)."""

    previous: AccountStatus | None  # None: not known (recorded before the history was kept)
    status: AccountStatus
    reason: str
    changed_at: dt.datetime
    changed_by: Creator | None


@dataclass(frozen=True)
class AccountUpdate:
    """One UpdateAccount that changed an account's details: the changed fields' values
    before and after (the fields it did not change are None in both)."""

    previous: AccountChanges
    current: AccountChanges
    reason: str
    updated_at: dt.datetime
    updated_by: Creator | None

    @property
    def changed_fields(self) -> list[str]:
        return [name for name in UPDATABLE_FIELDS if getattr(self.current, name) is not None]


@dataclass(frozen=True)
class Expiration:
    amount: int
    expires_at: dt.datetime


# The types of a CreateTransaction (or batch item) that settle another transaction,
# named by its related_id: a hold's capture and a refund.
SETTLING_TYPES = frozenset({TransactionType.CAPTURE, TransactionType.REFUND})


@dataclass(frozen=True)
class NewTransaction:
    account_id: str
    direction: Direction | None
    amount: int
    currency: str
    kind: TransactionKind = TransactionKind.ADJUSTMENT
    description: str = ""
    posting_date: dt.date | None = None
    external_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    creator: Creator | None = None
    # A credit's lot expiry or a hold's lapse time.
    expires_at: dt.datetime | None = None
    # The destination of a transfer.
    counterparty_id: str = ""
    # STANDARD posts it; HOLD places it as a pending debit; CAPTURE captures the hold
    # `related_id` and REFUND refunds the transaction `related_id` (CreateTransaction and
    # batch items may be any of these).
    type: TransactionType = TransactionType.STANDARD
    related_id: str = ""


@dataclass(frozen=True)
class Transaction:
    id: str
    tenant_id: str
    account_id: str
    direction: Direction
    amount: int
    currency: str
    kind: TransactionKind
    description: str
    posting_date: dt.date
    external_id: str
    metadata: dict[str, str]
    status: TransactionStatus
    ending_balance: int
    created_at: dt.datetime
    updated_at: dt.datetime
    creator: Creator | None = None
    type: TransactionType = TransactionType.STANDARD
    expires_at: dt.datetime | None = None
    counterparty_id: str = ""
    counterparty_ending_balance: int = 0
    related_id: str = ""
    refunded_amount: int = 0
    captured_amount: int = 0


@dataclass(frozen=True)
class TransactionChange:
    """One entry of the change feed: a transaction as it was right after it was created
    (`created`) or after a later change of its status, refunded or captured amount."""

    seq: int  # its place in the feed
    created: bool
    transaction: Transaction


@dataclass(frozen=True)
class Entry:
    """One leg of a transaction. Legs of a transaction sum to zero."""

    account_id: str
    amount: int  # signed: + credit to the account, - debit
    running_balance: int  # the account's posted balance after this entry
    # Customer legs: the posting date and the balance over entries up to it by date.
    posting_date: dt.date | None = None
    date_balance: int | None = None


@dataclass(frozen=True)
class Lot:
    """Credit that expires: what is left of it, and when."""

    seq: int
    transaction_id: str
    expires_at: dt.datetime
    remaining: int


@dataclass(frozen=True)
class LotUse:
    """What one debit took from one lot, and how much of that refunds gave back."""

    lot_seq: int
    amount: int
    restored: int


@dataclass(frozen=True)
class TransactionFilter:
    account_id: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    direction: Direction | None = None
    type: TransactionType | None = None
    # As of now: a hold past its expiry is VOIDED (views.transaction_now), stored or not.
    status: TransactionStatus | None = None
    external_id: str = ""
    related_id: str = ""  # transactions whose related_transaction is this one


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: int | None  # keyset position to continue after; None on the last page
