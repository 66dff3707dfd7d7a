"""Tenants and their API tokens: what `ledger-server tenants|tokens` administers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from ledger_server.core.auth import TENANT_ID_RE, check_scopes, new_token
from ledger_server.core.errors import WriteConflict
from ledger_server.core.model import Tenant, TokenRecord
from ledger_server.core.ports import Store

MAX_TOKEN_NAME = 200  # the api_tokens.name column; it is also stored on what the token creates


class AdminError(Exception):
    """A refused administrative command; the message says why."""


class Admin:
    def __init__(
        self, store: Store, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    ) -> None:
        self._store = store
        self._clock = clock

    def create_tenant(self, tenant_id: str, name: str) -> Tenant:
        if not TENANT_ID_RE.match(tenant_id):
            raise AdminError(
                "a tenant id is 1-63 lower-case letters, digits or '-', starting with a letter or digit"
            )
        tenant = Tenant(tenant_id, name or tenant_id, self._clock())
        try:
            with self._store.writing() as w:
                w.insert_tenant(tenant)
        except WriteConflict as exc:
            raise AdminError(f"tenant {tenant_id} already exists") from exc
        return tenant

    def list_tenants(self) -> list[Tenant]:
        with self._store.reading() as r:
            return r.list_tenants()

    def create_token(
        self, tenant_id: str, name: str, scopes: Iterable[str], expires_at: dt.datetime | None = None
    ) -> tuple[TokenRecord, str]:
        """The new token's record and its secret, which is never shown again."""
        try:
            wanted = check_scopes(scopes)
        except ValueError as exc:
            raise AdminError(str(exc)) from exc
        if len(name) > MAX_TOKEN_NAME:
            raise AdminError(f"a token name is at most {MAX_TOKEN_NAME} characters (got {len(name)})")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise AdminError("the expiry must be in the future")
        token_id, secret, secret_hash = new_token()
        record = TokenRecord(
            token_id, tenant_id, name or token_id, wanted, secret_hash, now, expires_at, None
        )
        with self._store.writing() as w:
            if not any(t.id == tenant_id for t in w.list_tenants()):
                raise AdminError(f"no tenant {tenant_id}: create it with `ledger-server tenants create`")
            w.insert_token(record)
        return record, secret

    def list_tokens(self, tenant_id: str | None = None) -> list[TokenRecord]:
        with self._store.reading() as r:
            return r.list_tokens(tenant_id)

    def revoke_token(self, token_id: str) -> TokenRecord:
        with self._store.writing() as w:
            if not w.revoke_token(token_id, self._clock()):
                raise AdminError(f"no active token {token_id}")
            record = w.get_token(token_id)
        assert record is not None
        return record
