"""Account lifecycle: why, when and by which token an account's status last changed
(FreezeAccount, UnfreezeAccount, CloseAccount), and an index to list accounts by status.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A column with a constant default: no table rewrite on Postgres 11+ or SQLite.
    op.add_column("accounts", sa.Column("status_reason", sa.Text, nullable=False, server_default=""))
    op.add_column("accounts", sa.Column("status_changed_at", sa.BigInteger))
    op.add_column("accounts", sa.Column("status_changed_by_token_id", sa.String(32)))
    op.add_column("accounts", sa.Column("status_changed_by_token_name", sa.String(200)))
    op.create_index("ix_accounts_tenant_id_status_seq", "accounts", ["tenant_id", "status", "seq"])


def downgrade() -> None:
    op.drop_index("ix_accounts_tenant_id_status_seq", "accounts")
    with op.batch_alter_table("accounts") as batch:
        for column in (
            "status_changed_by_token_name",
            "status_changed_by_token_id",
            "status_changed_at",
            "status_reason",
        ):
            batch.drop_column(column)
