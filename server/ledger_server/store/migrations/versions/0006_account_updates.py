"""Every UpdateAccount that changed an account's details (ListAccountUpdates): each
changed field's value before and after, why, when and by which token. Updates made before
this revision were not kept, so an account's history starts here.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "account_updates",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("previous_external_ref", sa.String(128)),
        sa.Column("external_ref", sa.String(128)),
        sa.Column("previous_balance_floor", sa.BigInteger),
        sa.Column("balance_floor", sa.BigInteger),
        sa.Column("previous_metadata", sa.Text),
        sa.Column("metadata", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.Column("token_id", sa.String(32)),
        sa.Column("token_name", sa.String(200)),
        sa.PrimaryKeyConstraint("seq", name="pk_account_updates"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_account_updates_account_id_accounts"
        ),
    )
    op.create_index("ix_account_updates_account_id_seq", "account_updates", ["account_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_account_updates_account_id_seq", "account_updates")
    op.drop_table("account_updates")
