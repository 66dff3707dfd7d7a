"""The credit lifecycle: holds, refunds, transfers, credit lots, balances as of a time
or a posting date.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("expiring", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_posting_date", sa.Date))
    with op.batch_alter_table("transactions") as batch:
        batch.alter_column(
            "status", type_=sa.String(24), existing_type=sa.String(16), existing_nullable=False
        )
        batch.add_column(sa.Column("type", sa.String(16), nullable=False, server_default="standard"))
        batch.add_column(sa.Column("expires_at", sa.BigInteger))
        batch.add_column(sa.Column("counterparty_account_id", sa.String(36)))
        batch.add_column(sa.Column("counterparty_ending_balance", sa.BigInteger))
        batch.add_column(sa.Column("related_transaction_id", sa.String(36)))
        batch.add_column(sa.Column("refunded_amount", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("captured_amount", sa.BigInteger, nullable=False, server_default="0"))
        batch.create_foreign_key(
            "fk_transactions_counterparty_account_id_accounts",
            "accounts",
            ["counterparty_account_id"],
            ["id"],
        )
    op.create_index(
        "ix_transactions_tenant_id_counterparty_account_id_seq",
        "transactions",
        ["tenant_id", "counterparty_account_id", "seq"],
    )
    op.create_index(
        "ix_transactions_open_holds",
        "transactions",
        ["expires_at", "account_id"],
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.add_column("entries", sa.Column("posting_date", sa.Date))
    op.add_column("entries", sa.Column("date_balance", sa.BigInteger))
    # Existing customer legs: their transaction's date, and (history so far having been
    # posted in date order or not) date balances recomputed below.
    op.execute(
        "UPDATE entries SET posting_date = (SELECT t.posting_date FROM transactions t "
        "WHERE t.id = entries.transaction_id AND t.account_id = entries.account_id)"
    )
    op.execute(
        "UPDATE entries SET date_balance = (SELECT SUM(e2.amount) FROM entries e2 "
        "WHERE e2.account_id = entries.account_id AND e2.posting_date IS NOT NULL AND "
        "(e2.posting_date < entries.posting_date OR "
        "(e2.posting_date = entries.posting_date AND e2.seq <= entries.seq))) "
        "WHERE posting_date IS NOT NULL"
    )
    op.execute(
        "UPDATE accounts SET last_posting_date = (SELECT MAX(e.posting_date) FROM entries e "
        "WHERE e.account_id = accounts.id)"
    )
    op.drop_index("ix_entries_account_id_seq", "entries")
    op.create_index("ix_entries_account_id_created_at_seq", "entries", ["account_id", "created_at", "seq"])
    op.create_index(
        "ix_entries_account_id_posting_date_seq", "entries", ["account_id", "posting_date", "seq"]
    )
    op.create_table(
        "lots",
        sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("transaction_id", sa.String(36), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_lots"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_lots_tenant_id_tenants"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_lots_account_id_accounts"),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["transactions.id"], name="fk_lots_transaction_id_transactions"
        ),
    )
    op.create_index(
        "ix_lots_open",
        "lots",
        ["account_id", "expires_at", "seq"],
        sqlite_where=sa.text("remaining > 0"),
        postgresql_where=sa.text("remaining > 0"),
    )
    op.create_index(
        "ix_lots_open_by_expiry",
        "lots",
        ["expires_at"],
        sqlite_where=sa.text("remaining > 0"),
        postgresql_where=sa.text("remaining > 0"),
    )
    op.create_table(
        "lot_uses",
        sa.Column("transaction_id", sa.String(36), nullable=False),
        sa.Column("lot_seq", SeqType, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("restored", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("transaction_id", "lot_seq", name="pk_lot_uses"),
        sa.ForeignKeyConstraint(
            ["transaction_id"], ["transactions.id"], name="fk_lot_uses_transaction_id_transactions"
        ),
        sa.ForeignKeyConstraint(["lot_seq"], ["lots.seq"], name="fk_lot_uses_lot_seq_lots"),
    )


def downgrade() -> None:
    op.drop_table("lot_uses")
    op.drop_table("lots")
    op.drop_index("ix_entries_account_id_posting_date_seq", "entries")
    op.drop_index("ix_entries_account_id_created_at_seq", "entries")
    op.create_index("ix_entries_account_id_seq", "entries", ["account_id", "seq"])
    with op.batch_alter_table("entries") as batch:
        batch.drop_column("date_balance")
        batch.drop_column("posting_date")
    op.drop_index("ix_transactions_open_holds", "transactions")
    op.drop_index("ix_transactions_tenant_id_counterparty_account_id_seq", "transactions")
    with op.batch_alter_table("transactions") as batch:
        batch.drop_constraint("fk_transactions_counterparty_account_id_accounts", type_="foreignkey")
        for column in (
            "captured_amount",
            "refunded_amount",
            "related_transaction_id",
            "counterparty_ending_balance",
            "counterparty_account_id",
            "expires_at",
            "type",
        ):
            batch.drop_column(column)
        batch.alter_column(
            "status", type_=sa.String(16), existing_type=sa.String(24), existing_nullable=False
        )
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("last_posting_date")
        batch.drop_column("expiring")
