"""A unit's statements off the hot path, built with SQLAlchemy Core: settings, tenants and
tokens, the expiry worker's scan, and VerifyLedger's audit queries. (The hot path's
statements are prebuilt text on the DBAPI cursor: hot_sql.py and sql_unit.py.)"""

from __future__ import annotations

import datetime as dt
from typing import TypeVarTuple

from sqlalchemy import Connection, CursorResult, func, insert, select, union, update
from sqlalchemy.sql.selectable import TypedReturnsRows

from ledger_server.call_greenlet import blocking
from ledger_server.core.model import Tenant, TokenRecord, TransactionStatus
from ledger_server.core.ports import AccountAudit, BrokenLink
from ledger_server.store.rows import from_micros, to_micros, token_of
from ledger_server.store.schema import accounts, api_tokens, entries, lots, settings, tenants, transactions

_Ts = TypeVarTuple("_Ts")


class AdminQueries:
    """Part of SqlUnit (sql_unit.py), whose connection these statements run on."""

    _conn: Connection
    _offload: bool  # the unit runs on the event loop, its statements in worker threads

    def _query(self, statement: TypedReturnsRows[*_Ts]) -> CursorResult[*_Ts]:
        """A read through SQLAlchemy (off the hot path), in a worker thread when the unit
        is offloaded: psycopg has every row of the result when execute returns."""
        if self._offload:
            return blocking(lambda: self._conn.execute(statement))
        return self._conn.execute(statement)

    def setting(self, key: str) -> str | None:
        value = self._query(select(settings.c.value).where(settings.c.key == key)).scalar()
        return None if value is None else str(value)

    def get_token(self, token_id: str) -> TokenRecord | None:
        row = self._query(select(api_tokens).where(api_tokens.c.id == token_id)).first()
        return None if row is None else token_of(row)

    def list_tokens(self, tenant_id: str | None) -> list[TokenRecord]:
        q = select(api_tokens).order_by(api_tokens.c.tenant_id, api_tokens.c.created_at)
        if tenant_id is not None:
            q = q.where(api_tokens.c.tenant_id == tenant_id)
        return [token_of(row) for row in self._query(q)]

    def list_tenants(self) -> list[Tenant]:
        rows = self._query(select(tenants).order_by(tenants.c.id))
        return [Tenant(row.id, row.name, from_micros(row.created_at)) for row in rows]

    def insert_tenant(self, tenant: Tenant) -> None:
        self._conn.execute(
            insert(tenants).values(id=tenant.id, name=tenant.name, created_at=to_micros(tenant.created_at))
        )

    def insert_token(self, token: TokenRecord) -> None:
        self._conn.execute(
            insert(api_tokens).values(
                id=token.id,
                tenant_id=token.tenant_id,
                name=token.name,
                scopes=" ".join(sorted(token.scopes)),
                secret_hash=token.secret_hash,
                created_at=to_micros(token.created_at),
                expires_at=None if token.expires_at is None else to_micros(token.expires_at),
                revoked_at=None,
            )
        )

    def revoke_token(self, token_id: str, now: dt.datetime) -> bool:
        result = self._conn.execute(
            update(api_tokens)
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=to_micros(now))
        )
        return result.rowcount == 1

    def due_for_expiry(self, now: dt.datetime, limit: int) -> list[tuple[str, str]]:
        us = to_micros(now)
        t, lot = transactions.c, lots.c
        holds = select(t.tenant_id, t.account_id).where(
            t.status == TransactionStatus.PENDING.value, t.expires_at <= us
        )
        expired = select(lot.tenant_id, lot.account_id).where(lot.remaining > 0, lot.expires_at <= us)
        rows = self._query(union(holds, expired).limit(limit))
        return [(row[0], row[1]) for row in rows]

    def audit_accounts(self, tenant_id: str) -> list[AccountAudit]:
        a, e, t, lot = accounts.c, entries.c, transactions.c, lots.c
        entry_sum = select(func.coalesce(func.sum(e.amount), 0)).where(e.account_id == a.id).scalar_subquery()
        last_running = (
            select(e.running_balance)
            .where(e.account_id == a.id)
            .order_by(e.created_at.desc(), e.seq.desc())
            .limit(1)
            .scalar_subquery()
        )
        open_holds = (
            select(func.coalesce(func.sum(t.amount), 0))
            .where(t.account_id == a.id, t.type == "hold", t.status == TransactionStatus.PENDING.value)
            .scalar_subquery()
        )
        remainders = (
            select(func.coalesce(func.sum(lot.remaining), 0)).where(lot.account_id == a.id).scalar_subquery()
        )
        rows = self._query(
            select(
                a.id,
                a.kind,
                a.balance_floor,
                a.posted,
                a.pending,
                a.expiring,
                entry_sum,
                last_running,
                open_holds,
                remainders,
            )
            .where(a.tenant_id == tenant_id)
            .order_by(a.seq)
        )
        return [
            AccountAudit(
                id=row[0],
                kind=row[1],
                balance_floor=row[2],
                posted=row[3],
                pending=row[4],
                expiring=row[5],
                entry_sum=int(row[6]),
                last_running_balance=row[7],
                open_holds=int(row[8]),
                lot_remainders=int(row[9]),
            )
            for row in rows
        ]

    def unbalanced_transactions(self, tenant_id: str) -> list[tuple[str, int]]:
        e, t = entries.c, transactions.c
        total = func.sum(e.amount)
        rows = self._query(
            select(t.id, total)
            .join(entries, e.transaction_id == t.id)
            .where(t.tenant_id == tenant_id)
            .group_by(t.id)
            .having(total != 0)
        )
        return [(row[0], int(row[1])) for row in rows]

    def broken_running_balances(self, tenant_id: str) -> list[BrokenLink]:
        e, a = entries.c, accounts.c
        previous = func.lag(e.running_balance, 1, 0).over(
            partition_by=e.account_id, order_by=(e.created_at, e.seq)
        )
        chain = (
            select(e.account_id, e.transaction_id, e.amount, e.running_balance, previous.label("previous"))
            .join(accounts, a.id == e.account_id)
            .where(a.tenant_id == tenant_id)
            .subquery()
        )
        c = chain.c
        rows = self._query(
            select(c.account_id, c.transaction_id, c.previous + c.amount, c.running_balance).where(
                c.previous + c.amount != c.running_balance
            )
        )
        return [BrokenLink(row[0], row[1], int(row[2]), int(row[3])) for row in rows]

    def count_transactions(self, tenant_id: str) -> int:
        t = transactions.c
        return int(self._query(select(func.count()).where(t.tenant_id == tenant_id)).scalar_one())
