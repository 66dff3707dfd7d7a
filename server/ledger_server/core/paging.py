"""Opaque keyset page tokens. A token carries the last row's sequence number and a hash
of the query it belongs to, signed with a secret kept in the database so that every
replica accepts every other's tokens and nobody can forge or edit one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from ledger_server.core.errors import Category, FieldViolation, LedgerError
from ledger_server.core.validation import Violations

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_limit(v: Violations, page_size: int) -> int:
    if page_size < 0:
        v.add("page_size", "must not be negative")
        return 0
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class PageTokens:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()[:16]

    def encode(self, query: str, position: int) -> str:
        body = json.dumps({"q": _digest(query), "p": position}, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._sign(body) + body).decode().rstrip("=")

    def decode(self, query: str, token: str) -> int | None:
        """The position to continue from, None for an empty token; refuses foreign tokens."""
        if not token:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            mac, body = raw[:16], raw[16:]
            if not hmac.compare_digest(mac, self._sign(body)):
                raise ValueError("bad signature")
            data = json.loads(body)
            position = data["p"]
            if data["q"] != _digest(query) or not isinstance(position, int):
                raise ValueError("token of another query")
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerError(
                Category.INVALID_ARGUMENT,
                "INVALID_PAGE_TOKEN",
                "page_token is invalid or was issued for different filters",
                violations=[FieldViolation("page_token", "not a token this query issued")],
            ) from exc
        return position


def _digest(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:16]
