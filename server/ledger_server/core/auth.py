"""API tokens: who a caller is and what it may do.

A token reads `ltk_<token id>_<secret>`. Only a SHA-256 of the secret is stored (the
secret is 256 random bits, so a slow hash would add nothing); it is compared in
constant time. The id part lets the ledger find the token without searching by hash."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ledger_server.core.errors import Category, LedgerError
from ledger_server.core.model import Creator, TokenRecord
from ledger_server.core.ports import Store

ADMIN = "admin"
SCOPES = frozenset({"accounts:read", "accounts:write", "transactions:read", "transactions:write", ADMIN})
TOKEN_RE = re.compile(r"^ltk_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$")
TENANT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Compared against when a token id is unknown, so that unknown and wrong secrets cost alike.
_DUMMY_HASH = hashlib.sha256(b"no such token").hexdigest()


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: everything it does happens inside its tenant."""

    tenant_id: str
    token_id: str
    token_name: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes

    @property
    def creator(self) -> Creator:
        """The caller as what it creates or changes records it: its token's id and name."""
        return Creator(self.token_id, self.token_name)


def new_token() -> tuple[str, str, str]:
    """(token id, the full token to hand out once, the hash to store)."""
    token_id = uuid.uuid4().hex
    secret = secrets.token_urlsafe(32)
    return token_id, f"ltk_{token_id}_{secret}", hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(scopes)
    unknown = wanted - SCOPES
    if not wanted or unknown:
        raise ValueError(
            f"scopes must be some of {', '.join(sorted(SCOPES))}; got {', '.join(sorted(wanted))}"
        )
    return wanted


# Runs a blocking read and returns its result: the token lookup's hook (authenticate).
Run = Callable[[Callable[[], Any]], Any]


def _directly(read: Callable[[], Any]) -> Any:
    return read()


def unauthenticated(reason: str, message: str) -> LedgerError:
    return LedgerError(Category.UNAUTHENTICATED, reason, message)


class Authenticator:
    """Turns a bearer token into a Caller. Token rows are cached for `cache_seconds`, so a
    revocation takes effect on every replica within that time (0: at once)."""

    def __init__(
        self,
        store: Store,
        cache_seconds: float = 2.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._store = store
        self._ttl = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, TokenRecord | None]] = {}
        self._lock = threading.Lock()

    def authenticate(self, authorization: str | None, run: Run = _directly) -> Caller:
        """`run(read)` reads a token that is not cached: the caller decides where that
        read may block (call_greenlet.blocking, on the event loop)."""
        if not authorization:
            raise unauthenticated("TOKEN_MISSING", "send `authorization: Bearer <token>` metadata")
        scheme, _, token = authorization.partition(" ")
        match = TOKEN_RE.match(token.strip()) if scheme.lower() == "bearer" else None
        if match is None:
            raise unauthenticated("TOKEN_MALFORMED", "authorization must be `Bearer ltk_...`")
        token_id, secret = match.groups()
        record = self._record(token_id, run)
        expected = record.secret_hash if record else _DUMMY_HASH
        if not hmac.compare_digest(expected, hash_secret(secret)) or record is None:
            raise unauthenticated("TOKEN_INVALID", "the token is not valid")
        now = self._clock()
        if record.revoked_at is not None:
            raise unauthenticated("TOKEN_REVOKED", "the token was revoked")
        if record.expires_at is not None and record.expires_at <= now:
            raise unauthenticated("TOKEN_EXPIRED", "the token has expired")
        return Caller(record.tenant_id, record.id, record.name, record.scopes)

    def _record(self, token_id: str, run: Run) -> TokenRecord | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(token_id)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        record: TokenRecord | None = run(lambda: self._read(token_id))
        if record is not None and self._ttl > 0:  # unknown ids are not cached: no memory for spray
            with self._lock:
                self._cache[token_id] = (now, record)
        return record

    def _read(self, token_id: str) -> TokenRecord | None:
        with self._store.reading() as r:
            return r.get_token(token_id)


def require_scope(caller: Caller, scope: str) -> None:
    if not caller.may(scope):
        raise LedgerError(
            Category.PERMISSION_DENIED,
            "MISSING_SCOPE",
            f"the token lacks the {scope} scope",
            metadata={"required_scope": scope},
        )
