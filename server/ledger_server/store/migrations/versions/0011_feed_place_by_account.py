"""ledger_feed_place (migration 0009), which places the change of a statement touching
several accounts (an atomic batch, a transfer) in the feed, reads each account's clock by
its key. It read them with `account_id = ANY(touched)`, which Postgres, where the clocks
had no statistics or old ones, took to match 0.5 % of the rows per account: for a batch
of 100 it read every clock, one per account the ledger has posted to. Postgres only (the
clocks are Postgres's).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OWN_XID = "CAST(CAST(pg_current_xact_id() AS text) AS bigint)"
# {latest}: the highest place of the touched accounts' clocks (NULL: none yet).
FEED_PLACE = f"""CREATE OR REPLACE FUNCTION ledger_feed_place(touched varchar[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  place bigint;
BEGIN
  SELECT GREATEST({OWN_XID}, COALESCE(MAX(xid), 0)) INTO place FROM {{latest}};
  INSERT INTO account_feed_clocks (account_id, xid) SELECT DISTINCT unnest(touched), place
  ON CONFLICT (account_id) DO UPDATE SET xid = EXCLUDED.xid;
  RETURN place;
END $$"""
# Each clock by its key: LIMIT 1 keeps each a lookup, whatever Postgres estimates.
BY_KEY = (
    "unnest(touched) AS t(account_id) CROSS JOIN LATERAL "
    "(SELECT xid FROM account_feed_clocks k WHERE k.account_id = t.account_id LIMIT 1) AS k"
)
BY_ANY = "account_feed_clocks WHERE account_id = ANY(touched)"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FEED_PLACE.format(latest=BY_KEY))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FEED_PLACE.format(latest=BY_ANY))
