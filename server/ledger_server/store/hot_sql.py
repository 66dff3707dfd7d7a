"""The statements of the posting path, as SQL text rendered once per dialect and run
with exec_driver_sql: building SQLAlchemy Core statements costs ~1 ms per posting in
Python (measured), more than the database work itself. Kept to the plainest SQL that
SQLite and Postgres share; `{lock}`/`{skip_locked}` become row locks on Postgres only."""

from __future__ import annotations

import re
from functools import cache

_STATEMENTS = {
    "find_response": (
        "SELECT fingerprint, response FROM idempotency_keys "
        "WHERE tenant_id = :tenant_id AND request_id = :request_id"
    ),
    "save_response": (
        "INSERT INTO idempotency_keys (tenant_id, request_id, fingerprint, response, created_at) "
        "VALUES (:tenant_id, :request_id, :fingerprint, :response, :created_at)"
    ),
    "lock_customer": (
        "SELECT id, currency, balance_floor, status, posted, pending FROM accounts "
        "WHERE id = :id AND tenant_id = :tenant_id AND kind = 'customer'{lock}"
    ),
    "lock_by_id": (
        "SELECT id, currency, balance_floor, status, posted, pending FROM accounts WHERE id = :id{lock}"
    ),
    "lock_any_counter": (
        "SELECT id, currency, balance_floor, status, posted, pending FROM accounts "
        "WHERE tenant_id = :tenant_id AND currency = :currency AND purpose = :purpose "
        "ORDER BY random() LIMIT 1{skip_locked}"
    ),
    "lock_counter_shard": (
        "SELECT id, currency, balance_floor, status, posted, pending FROM accounts "
        "WHERE tenant_id = :tenant_id AND currency = :currency AND purpose = :purpose "
        "AND shard = :shard{lock}"
    ),
    "find_external_id": (
        "SELECT id FROM transactions WHERE tenant_id = :tenant_id AND external_id = :external_id"
    ),
    "insert_transaction": (
        "INSERT INTO transactions (id, tenant_id, account_id, direction, amount, currency, kind, status, "
        "description, posting_date, external_id, metadata, ending_balance, created_at, updated_at, "
        "creator_token_id, creator_token_name) VALUES (:id, :tenant_id, :account_id, :direction, :amount, "
        ":currency, :kind, :status, :description, :posting_date, :external_id, :metadata, :ending_balance, "
        ":created_at, :updated_at, :creator_token_id, :creator_token_name)"
    ),
    "insert_entry": (
        "INSERT INTO entries (transaction_id, account_id, amount, running_balance, created_at) "
        "VALUES (:transaction_id, :account_id, :amount, :running_balance, :created_at)"
    ),
    "set_posted": "UPDATE accounts SET posted = :posted, updated_at = :updated_at WHERE id = :id",
    # Customer accounts, and counter-account shards (created once, concurrently: no-op on conflict).
    "insert_account": (
        "INSERT INTO accounts (id, tenant_id, kind, purpose, shard, external_ref, currency, "
        "balance_floor, status, metadata, posted, pending, created_at, updated_at) "
        "VALUES (:id, :tenant_id, :kind, :purpose, :shard, :external_ref, :currency, :balance_floor, "
        ":status, :metadata, 0, 0, :created_at, :created_at) ON CONFLICT DO NOTHING"
    ),
}


@cache
def sql(dialect: str, name: str) -> str:
    """The statement `name` in the dialect's parameter style, with its row locks."""
    text = _STATEMENTS[name]
    if dialect == "postgresql":
        text = text.format(lock=" FOR UPDATE", skip_locked=" FOR UPDATE SKIP LOCKED")
        return re.sub(r":(\w+)", r"%(\1)s", text)
    return text.format(lock="", skip_locked="")
