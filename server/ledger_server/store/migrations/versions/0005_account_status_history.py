"""Every status change of an account (ListAccountStatusChanges), not only the latest. An
account changed before this revision gets its latest change as its first entry; the
status it came from is known for FROZEN (from ACTIVE) and ACTIVE (from FROZEN), not for
CLOSED (either).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "account_status_changes",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("previous_status", sa.String(16)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("changed_at", sa.BigInteger, nullable=False),
        sa.Column("token_id", sa.String(32)),
        sa.Column("token_name", sa.String(200)),
        sa.PrimaryKeyConstraint("seq", name="pk_account_status_changes"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_account_status_changes_account_id_accounts"
        ),
    )
    op.create_index(
        "ix_account_status_changes_account_id_seq", "account_status_changes", ["account_id", "seq"]
    )
    op.execute(
        "INSERT INTO account_status_changes (account_id, previous_status, status, reason, changed_at, "
        "token_id, token_name) SELECT id, CASE status WHEN 'frozen' THEN 'active' "
        "WHEN 'active' THEN 'frozen' END, status, status_reason, status_changed_at, "
        "status_changed_by_token_id, status_changed_by_token_name FROM accounts "
        "WHERE status_changed_at IS NOT NULL ORDER BY status_changed_at, seq"
    )


def downgrade() -> None:
    op.drop_index("ix_account_status_changes_account_id_seq", "account_status_changes")
    op.drop_table("account_status_changes")
