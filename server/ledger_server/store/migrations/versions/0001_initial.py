"""Initial ledger schema: tenants, accounts, transactions, entries, idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import secrets
import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    tenants = op.create_table(
        "tenants",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
    )
    op.create_table(
        "accounts",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("purpose", sa.String(32)),
        sa.Column("shard", sa.SmallInteger),
        sa.Column("external_ref", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(16), nullable=False),
        sa.Column("balance_floor", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("posted", sa.BigInteger, nullable=False),
        sa.Column("pending", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_accounts"),
        sa.UniqueConstraint("id", name="uq_accounts_id"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_accounts_tenant_id_tenants"),
    )
    op.create_index("ix_accounts_tenant_id_kind_seq", "accounts", ["tenant_id", "kind", "seq"])
    op.create_index(
        "ix_accounts_tenant_id_external_ref_seq", "accounts", ["tenant_id", "external_ref", "seq"]
    )
    op.create_index(
        "ix_accounts_tenant_id_currency_purpose_shard",
        "accounts",
        ["tenant_id", "currency", "purpose", "shard"],
        unique=True,
    )
    op.create_table(
        "transactions",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("posting_date", sa.Date, nullable=False),
        sa.Column("external_id", sa.String(128)),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("ending_balance", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_transactions"),
        sa.UniqueConstraint("id", name="uq_transactions_id"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_transactions_tenant_id_tenants"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_transactions_account_id_accounts"),
    )
    op.create_index(
        "ix_transactions_tenant_id_external_id", "transactions", ["tenant_id", "external_id"], unique=True
    )
    op.create_index(
        "ix_transactions_tenant_id_account_id_seq", "transactions", ["tenant_id", "account_id", "seq"]
    )
    op.create_index("ix_transactions_tenant_id_seq", "transactions", ["tenant_id", "seq"])
    op.create_table(
        "entries",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("transaction_id", sa.String(36), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("running_balance", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_entries"),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["transactions.id"], name="fk_entries_transaction_id_transactions"
        ),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_entries_account_id_accounts"),
    )
    op.create_index("ix_entries_account_id_seq", "entries", ["account_id", "seq"])
    op.create_index("ix_entries_transaction_id", "entries", ["transaction_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(32), nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "request_id", name="pk_idempotency_keys"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_idempotency_keys_tenant_id_tenants"),
    )
    settings = op.create_table(
        "settings",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_settings"),
    )
    # The single tenant until tenancy lands; every row already carries its tenant_id.
    op.bulk_insert(
        tenants, [{"id": "default", "name": "Default tenant", "created_at": int(time.time() * 1e6)}]
    )
    # Signs page tokens; in the database so that every replica accepts every other's tokens.
    op.bulk_insert(settings, [{"key": "page_token_secret", "value": secrets.token_hex(32)}])


def downgrade() -> None:
    for table in ("settings", "idempotency_keys", "entries", "transactions", "accounts", "tenants"):
        op.drop_table(table)
