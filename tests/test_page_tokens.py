"""Page tokens: signed, bound to their query, and written exactly as servers before them
wrote them (replicas of two versions accept each other's tokens, and a follower's saved
resume_token survives an upgrade)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from ledger_server.core.errors import LedgerError
from ledger_server.core.paging import PageTokens

SECRET = bytes(range(32))


def earlier_token(query: str, position: int) -> str:
    """A token as the servers before the keyed-once signature wrote it."""
    digest = hashlib.sha256(query.encode()).hexdigest()[:16]
    body = json.dumps({"q": digest, "p": position}, separators=(",", ":")).encode()
    mac = hmac.new(SECRET, body, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")


@pytest.mark.parametrize("position", [0, 1, 50, 2**31, 2**63 - 1])
@pytest.mark.parametrize("query", ["changes|default", "transactions|acme|a1|None|None|credit", 'ü|"q"'])
def test_tokens_are_written_as_before_and_read_back(query: str, position: int) -> None:
    tokens = PageTokens(SECRET)
    assert tokens.encode(query, position) == earlier_token(query, position)
    assert tokens.decode(query, earlier_token(query, position)) == position


def test_a_token_of_another_query_or_secret_is_refused() -> None:
    token = PageTokens(SECRET).encode("changes|default", 7)
    for tokens, query in ((PageTokens(SECRET), "changes|other"), (PageTokens(b"x" * 32), "changes|default")):
        with pytest.raises(LedgerError) as refused:
            tokens.decode(query, token)
        assert refused.value.reason == "INVALID_PAGE_TOKEN"
