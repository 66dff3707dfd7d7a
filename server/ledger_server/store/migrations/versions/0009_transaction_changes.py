"""The change feed (ListTransactionChanges): a row for every transaction inserted and for
every later change of its status, refunded or captured amount, written by triggers on
`transactions` so that every write path (postings, batches, imports, the expiry worker)
feeds it. Transactions made before this revision enter it once each, in their order, as
they are now.

Rows are read in (xid, seq) order (schema.transaction_changes). On Postgres xid is a
change's place: its writing transaction's id (xid8 as bigint) or, where higher, the place
of the latest change of the same accounts (account_feed_clocks); readers take only rows
below their snapshot's xmin, so that a change committed after a later-numbered one is
never skipped. Statement-level triggers with transition tables write a batch's rows in
one INSERT. On SQLite xid is 0: its writers take turns, so seq is commit order. A later
migration that rebuilds `transactions` on SQLite (Alembic's batch mode copies the table)
must create these triggers again.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# What a change row copies from the transaction row (the rest never changes).
STATE = "status, refunded_amount, captured_amount, updated_at"
COLUMNS = f"tenant_id, xid, transaction_id, created, {STATE}"
# The three are NOT NULL: <> is enough.
CHANGED = (
    "{old}.status <> {new}.status OR {old}.refunded_amount <> {new}.refunded_amount "
    "OR {old}.captured_amount <> {new}.captured_amount"
)
# A change's place in the feed on Postgres (its xid column): the writing transaction's id,
# raised to the place of the latest change of the same accounts where that is higher.
# Changes of one account are made under its row lock, so this keeps them (and each
# transaction's) in commit order, where a writer that took its id before another could
# commit after it. `account_feed_clocks` keeps each account's latest place; only writers
# holding the account's lock change its row. Most statements touch one account: its clock
# is then moved in one statement (the general path's = ANY and unnest cost a lone
# posting's trigger 89 us against 36, measured).
OWN_XID = "CAST(CAST(pg_current_xact_id() AS text) AS bigint)"
POSTGRES = [
    f"""CREATE FUNCTION ledger_feed_place(touched varchar[]) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  place bigint;
BEGIN
  SELECT GREATEST({OWN_XID}, COALESCE(MAX(xid), 0)) INTO place
  FROM account_feed_clocks WHERE account_id = ANY(touched);
  INSERT INTO account_feed_clocks (account_id, xid) SELECT DISTINCT unnest(touched), place
  ON CONFLICT (account_id) DO UPDATE SET xid = EXCLUDED.xid;
  RETURN place;
END $$""",
    *(
        f"""CREATE FUNCTION ledger_transactions_{name}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  first_account varchar;
  last_account varchar;
  transfers boolean;
  place bigint;
BEGIN
  SELECT min(n.account_id), max(n.account_id), bool_or(n.counterparty_account_id IS NOT NULL)
  INTO first_account, last_account, transfers FROM {rows} WHERE {where};
  IF first_account IS NULL THEN
    RETURN NULL;
  ELSIF first_account = last_account AND NOT transfers THEN
    INSERT INTO account_feed_clocks AS k (account_id, xid) VALUES (first_account, {OWN_XID})
    ON CONFLICT (account_id) DO UPDATE SET xid = GREATEST(k.xid, EXCLUDED.xid) RETURNING xid INTO place;
  ELSE
    place := ledger_feed_place(ARRAY(
      SELECT n.account_id FROM {rows} WHERE {where} UNION SELECT n.counterparty_account_id
      FROM {rows} WHERE n.counterparty_account_id IS NOT NULL AND ({where})));
  END IF;
  INSERT INTO transaction_changes ({COLUMNS})
  SELECT n.tenant_id, place, n.id, {created}, n.status, n.refunded_amount, n.captured_amount, n.updated_at
  FROM {rows} WHERE {where} ORDER BY n.seq;
  RETURN NULL;
END $$"""
        for name, created, rows, where in (
            ("inserted", 1, "inserted n", "true"),
            ("updated", 0, "updated n JOIN previous o ON o.seq = n.seq", CHANGED.format(old="o", new="n")),
        )
    ),
    # A page of the feed after change `after`, up to the horizon: the oldest transaction
    # still running when the caller's snapshot was taken (every change placed below it is
    # committed or gone for good). A function so that its plan does not depend on table
    # statistics: as a plain statement on tables not yet analyzed (a young database),
    # Postgres's custom plans read every change after `after` (a bitmap scan and a sort:
    # 15-39 ms a page of 51 in a feed of 100,000; through this function 0.4-0.8 ms
    # wherever it starts, analyzed or not, measured). A SQL function is planned
    # generically at each call, and its SET clause also keeps it from being inlined into
    # the caller's (custom) plan; ROWS tells the caller's plan that a page is small.
    """CREATE FUNCTION ledger_feed_page(tenant varchar, after bigint, page_size integer)
RETURNS SETOF transaction_changes LANGUAGE sql STABLE ROWS 50 SET enable_bitmapscan = off AS $$
  SELECT * FROM transaction_changes c WHERE c.tenant_id = tenant
  AND (c.xid, c.seq) > (COALESCE((SELECT xid FROM transaction_changes WHERE seq = after), -1), after)
  AND c.xid < CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) AS bigint)
  ORDER BY c.xid, c.seq LIMIT page_size
$$""",
    "CREATE TRIGGER transactions_inserted AFTER INSERT ON transactions "
    "REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION ledger_transactions_inserted()",
    "CREATE TRIGGER transactions_updated AFTER UPDATE ON transactions "
    "REFERENCING OLD TABLE AS previous NEW TABLE AS updated FOR EACH STATEMENT "
    "EXECUTE FUNCTION ledger_transactions_updated()",
]

SQLITE = [
    f"""CREATE TRIGGER transactions_inserted AFTER INSERT ON transactions BEGIN
  INSERT INTO transaction_changes ({COLUMNS}) VALUES
  (NEW.tenant_id, 0, NEW.id, 1, NEW.status, NEW.refunded_amount, NEW.captured_amount, NEW.updated_at);
END""",
    f"""CREATE TRIGGER transactions_updated AFTER UPDATE OF status, refunded_amount, captured_amount
ON transactions WHEN {CHANGED.format(old="OLD", new="NEW")} BEGIN
  INSERT INTO transaction_changes ({COLUMNS}) VALUES
  (NEW.tenant_id, 0, NEW.id, 0, NEW.status, NEW.refunded_amount, NEW.captured_amount, NEW.updated_at);
END""",
]


def upgrade() -> None:
    op.create_table(
        "transaction_changes",
        sa.Column("seq", Seq, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("xid", sa.BigInteger, nullable=False),
        sa.Column("transaction_id", sa.String(36), nullable=False),
        sa.Column("created", sa.SmallInteger, nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("refunded_amount", sa.BigInteger, nullable=False),
        sa.Column("captured_amount", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_transaction_changes"),
    )
    op.create_index(
        "ix_transaction_changes_tenant_id_xid_seq", "transaction_changes", ["tenant_id", "xid", "seq"]
    )
    op.create_table(
        "account_feed_clocks",
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("xid", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_account_feed_clocks"),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    # Postgres: every earlier change in one place, before any later writer's.
    place = OWN_XID if postgres else "0"
    op.execute(
        f"INSERT INTO transaction_changes ({COLUMNS}) "
        f"SELECT tenant_id, {place}, id, 1, {STATE} FROM transactions ORDER BY seq"
    )
    for statement in POSTGRES if postgres else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in ("inserted", "updated"):
        op.execute(f"DROP TRIGGER transactions_{name}" + (" ON transactions" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION ledger_transactions_{name}()")
    if postgres:
        op.execute("DROP FUNCTION ledger_feed_place(varchar[])")
        op.execute("DROP FUNCTION ledger_feed_page(varchar, bigint, integer)")
    op.drop_table("account_feed_clocks")
    op.drop_index("ix_transaction_changes_tenant_id_xid_seq", "transaction_changes")
    op.drop_table("transaction_changes")
