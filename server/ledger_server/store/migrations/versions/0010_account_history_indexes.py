"""An account's history (ListTransactions by account) is found by the account alone:
(account_id, seq) and, for the transfers it received, (counterparty_account_id, seq),
where both began with tenant_id. With the tenant in the index and the query, Postgres
could not tell them from the tenant's other (tenant_id, ...) indexes on tables it had
not analyzed, and read a page by scanning the tenant's whole history backwards,
filtering by account; a prepared statement kept that plan as the tables grew. Account ids
are unique across tenants; the reader checks the rows' tenant. The counterparty index
holds transfers only (the column is NULL for every other transaction), so a plain
posting no longer pays for it.

On a large ledger this builds two indexes over `transactions`, which blocks writes to it
on Postgres while it runs.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRANSFERS = sa.text("counterparty_account_id IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_transactions_account_id_seq", "transactions", ["account_id", "seq"])
    op.create_index(
        "ix_transactions_counterparty",
        "transactions",
        ["counterparty_account_id", "seq"],
        sqlite_where=TRANSFERS,
        postgresql_where=TRANSFERS,
    )
    op.drop_index("ix_transactions_tenant_id_account_id_seq", "transactions")
    op.drop_index("ix_transactions_tenant_id_counterparty_account_id_seq", "transactions")


def downgrade() -> None:
    op.create_index(
        "ix_transactions_tenant_id_counterparty_account_id_seq",
        "transactions",
        ["tenant_id", "counterparty_account_id", "seq"],
    )
    op.create_index(
        "ix_transactions_tenant_id_account_id_seq", "transactions", ["tenant_id", "account_id", "seq"]
    )
    op.drop_index("ix_transactions_counterparty", "transactions")
    op.drop_index("ix_transactions_account_id_seq", "transactions")
