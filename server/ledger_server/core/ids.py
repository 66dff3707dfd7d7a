"""Ids of the rows the ledger creates: UUIDv7 (RFC 9562), which begin with their creation
time in milliseconds. Rows inserted one after another therefore land at the right-hand
edge of each index on their id (transactions.id, entries.transaction_id) instead of on a
random page of it, which a random UUIDv4 does: an atomic batch of 1000 postings on SQLite
dirtied, read and wrote back a page per row per index that way (measured: +20 % batch
throughput, and 40 % less system CPU in the writer, README "Performance")."""

from __future__ import annotations

import uuid_utils


def new_id() -> str:
    """A new id in canonical UUID form; its last 74 bits are random."""
    return str(uuid_utils.uuid7())
