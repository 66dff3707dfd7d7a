"""An index of each tenant's pending transactions (its open holds) by seq, so that
ListTransactions with status PENDING reads them without scanning the tenant's history. It
is partial: only pending rows are in it, so postings pay nothing for it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index(
        "ix_transactions_pending",
        "transactions",
        ["tenant_id", "seq"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_transactions_pending", "transactions")
