"""An index of the transactions that point at another (refunds, captures, expiries) by
the one they point at, for ListTransactions' related_transaction filter. Partial: plain
postings (no related transaction) are not in it and pay nothing for it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RELATED = sa.text("related_transaction_id IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_transactions_related",
        "transactions",
        ["tenant_id", "related_transaction_id", "seq"],
        sqlite_where=RELATED,
        postgresql_where=RELATED,
    )


def downgrade() -> None:
    op.drop_index("ix_transactions_related", "transactions")
