"""The tables, as SQLAlchemy Core (the ORM is too slow for the posting path). Alembic
migrations create them; tests/test_migrations.py fails if the two ever drift apart.

Timestamps are integer microseconds since the Unix epoch (UTC): exact, portable, cheap."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)

# SQLite only auto-increments an INTEGER PRIMARY KEY (its rowid); Postgres gets BIGINT.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    # customer accounts belong to callers; system accounts are the tenant's counter-accounts,
    # split into shards (purpose + shard number) so that no single row is locked by every posting.
    Column("kind", String(16), nullable=False),
    Column("purpose", String(32)),
    Column("shard", SmallInteger),
    Column("external_ref", String(128), nullable=False),
    Column("currency", String(16), nullable=False),
    Column("balance_floor", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("metadata", Text, nullable=False),
    Column("posted", BigInteger, nullable=False),
    Column("pending", BigInteger, nullable=False),
    # The part of posted held in credit lots (= the sum of the lots' remainders).
    Column("expiring", BigInteger, nullable=False, server_default="0"),
    # The latest posting date of its entries: a posting dated before it is a backfill.
    Column("last_posting_date", Date),
    Column("created_at", BigInteger, nullable=False),
    # Never decreases: entries take max(now, updated_at) as their time, so that the
    # entries of an account are ordered alike by time and by seq ("balance as of T").
    Column("updated_at", BigInteger, nullable=False),
    # The latest status change (FreezeAccount, UnfreezeAccount, CloseAccount): why, when
    # and by which API token.
    Column("status_reason", Text, nullable=False, server_default=""),
    Column("status_changed_at", BigInteger),
    Column("status_changed_by_token_id", String(32)),
    Column("status_changed_by_token_name", String(200)),
    Index(None, "tenant_id", "kind", "seq"),
    Index(None, "tenant_id", "external_ref", "seq"),
    Index(None, "tenant_id", "status", "seq"),  # ListAccounts by status (few are frozen)
    Index(None, "tenant_id", "currency", "purpose", "shard", unique=True),
)

# Every status change of a customer account, newest last (the account row keeps the
# latest too, so GetAccount reads no history). ListAccountStatusChanges pages it by seq.
account_status_changes = Table(
    "account_status_changes",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False),
    # NULL: not known (a change made before this table existed, to CLOSED).
    Column("previous_status", String(16)),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("changed_at", BigInteger, nullable=False),
    Column("token_id", String(32)),
    Column("token_name", String(200)),
    Index(None, "account_id", "seq"),
)

# Every UpdateAccount that changed an account's details: each changed field's value
# before and after, NULL in both for the fields it left as they were. ListAccountUpdates
# pages it by seq.
account_updates = Table(
    "account_updates",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False),
    Column("previous_external_ref", String(128)),
    Column("external_ref", String(128)),
    Column("previous_balance_floor", BigInteger),
    Column("balance_floor", BigInteger),
    Column("previous_metadata", Text),
    Column("metadata", Text),
    Column("reason", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("token_id", String(32)),
    Column("token_name", String(200)),
    Index(None, "account_id", "seq"),
)

transactions = Table(
    "transactions",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(36), nullable=False, unique=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(16), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("status", String(24), nullable=False),
    Column("description", Text, nullable=False),
    Column("posting_date", Date, nullable=False),
    # NULL when the caller gave none: unique per tenant only when present.
    Column("external_id", String(128)),
    Column("metadata", Text, nullable=False),
    Column("ending_balance", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # The API token that created it (id and name at the time); NULL before tokens existed.
    Column("creator_token_id", String(32)),
    Column("creator_token_name", String(200)),
    Column("type", String(16), nullable=False, server_default="standard"),
    # A credit lot's or a hold's expiry time.
    Column("expires_at", BigInteger),
    # The destination of a transfer, and its balance after it.
    Column("counterparty_account_id", String(36), ForeignKey("accounts.id")),
    Column("counterparty_ending_balance", BigInteger),
    # Refund -> original, capture -> hold, expiry -> the transaction that created the lot.
    Column("related_transaction_id", String(36)),
    Column("refunded_amount", BigInteger, nullable=False, server_default="0"),
    Column("captured_amount", BigInteger, nullable=False, server_default="0"),
    Index(None, "tenant_id", "external_id", unique=True),
    # An account's history by the account alone (hot_sql's account_history; migration 0010).
    Index(None, "account_id", "seq"),
    Index(None, "tenant_id", "seq"),
    # Open holds by expiry: for the expiry worker and for sweeping one account.
    Index(
        "ix_transactions_open_holds",
        "expires_at",
        "account_id",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
    # What points at a transaction (its refunds, a hold's capture, a lot's expiry): only
    # those rows are in it, so a plain posting pays nothing for it.
    Index(
        "ix_transactions_related",
        "tenant_id",
        "related_transaction_id",
        "seq",
        sqlite_where=text("related_transaction_id IS NOT NULL"),
        postgresql_where=text("related_transaction_id IS NOT NULL"),
    ),
    # The transfers an account received (the column is NULL for every other transaction).
    Index(
        "ix_transactions_counterparty",
        "counterparty_account_id",
        "seq",
        sqlite_where=text("counterparty_account_id IS NOT NULL"),
        postgresql_where=text("counterparty_account_id IS NOT NULL"),
    ),
    # The tenant's open holds, newest first (ListTransactions' status filter): without it
    # that page scans the tenant's whole history for a few holds.
    Index(
        "ix_transactions_pending",
        "tenant_id",
        "seq",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
)

# The change feed (ListTransactionChanges): a row for every transaction inserted and for
# every change of its status, refunded or captured amount, with those fields as they were
# right after it (the rest of a transaction never changes). Written by triggers on
# `transactions` (migration 0009), so no write path can leave a change out. Read in
# (xid, seq) order. On Postgres, xid is the writing transaction's id or, where higher, the
# xid of the latest change of the same accounts (account_feed_clocks): a change of an
# account comes after those committed before it. A reader takes only rows whose xid is
# below its snapshot's horizon (every transaction below it has ended), so a change
# committed late can never land behind a cursor already handed out. On SQLite, whose
# writers take turns, xid is 0 and seq alone is commit order.
transaction_changes = Table(
    "transaction_changes",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("xid", BigInteger, nullable=False),
    Column("transaction_id", String(36), nullable=False),
    Column("created", SmallInteger, nullable=False),  # 1: the insert, 0: a later change
    Column("status", String(24), nullable=False),
    Column("refunded_amount", BigInteger, nullable=False),
    Column("captured_amount", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index(None, "tenant_id", "xid", "seq"),
)

# Postgres: each account's latest place in the change feed (see transaction_changes).
account_feed_clocks = Table(
    "account_feed_clocks",
    metadata,
    Column("account_id", String(36), primary_key=True),
    Column("xid", BigInteger, nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("transaction_id", String(36), ForeignKey("transactions.id"), nullable=False),
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    # The account's posted balance after this entry: "balance as of" is one index lookup.
    Column("running_balance", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # Customer legs only: the transaction's posting date, and the account's balance over
    # every entry ordered by (posting_date, seq) up to this one ("balance as of date D").
    Column("posting_date", Date),
    Column("date_balance", BigInteger),
    Index(None, "account_id", "created_at", "seq"),
    Index(None, "account_id", "posting_date", "seq"),
    Index(None, "transaction_id"),
)

# Credit lots: credit that expires. Created by a credit with an expiry time (or by a
# transfer of such credit); debits consume them soonest-expiring first.
lots = Table(
    "lots",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False),
    Column("transaction_id", String(36), ForeignKey("transactions.id"), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index(
        "ix_lots_open",
        "account_id",
        "expires_at",
        "seq",
        sqlite_where=text("remaining > 0"),
        postgresql_where=text("remaining > 0"),
    ),
    Index(
        "ix_lots_open_by_expiry",
        "expires_at",
        sqlite_where=text("remaining > 0"),
        postgresql_where=text("remaining > 0"),
    ),
)

# What each debit took from each lot, so that refunding it gives the credit back there.
lot_uses = Table(
    "lot_uses",
    metadata,
    Column("transaction_id", String(36), ForeignKey("transactions.id"), primary_key=True),
    Column("lot_seq", SeqType, ForeignKey("lots.seq"), primary_key=True),
    Column("amount", BigInteger, nullable=False),
    Column("restored", BigInteger, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("tenant_id", String(64), ForeignKey("tenants.id"), primary_key=True),
    Column("request_id", String(36), primary_key=True),
    Column("fingerprint", LargeBinary(32), nullable=False),
    Column("response", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("scopes", String(200), nullable=False),  # space-separated
    Column("secret_hash", String(64), nullable=False),  # SHA-256 hex of the secret; never the secret
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger),
    Column("revoked_at", BigInteger),
    Index(None, "tenant_id"),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
