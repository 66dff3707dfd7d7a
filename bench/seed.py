"""Accounts for the load: `spread` accounts and `hot` ones, each credited with more than
any run can debit, so that debits never fail for want of funds."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ledger_client import LedgerClient

from bench.postings import CURRENCY

OPENING_CREDIT = 10**12  # minor units; a run debits at most 100 a call
SEED_THREADS = 16


@dataclass(frozen=True)
class Accounts:
    spread: tuple[str, ...]
    hot: tuple[str, ...]


def seed_accounts(address: str, token: str, spread: int, hot: int) -> Accounts:
    """Create and fund the accounts through the server's own API (not timed)."""
    with LedgerClient(address, token=token, timeout=60.0) as client:

        def open_funded(ref: str) -> str:
            name = client.create_account(currency=CURRENCY, external_ref=ref).name
            client.credit(name, OPENING_CREDIT, CURRENCY, kind="top_up", description="bench opening credit")
            return name

        refs = [f"spread-{i}" for i in range(spread)] + [f"hot-{i}" for i in range(hot)]
        with ThreadPoolExecutor(SEED_THREADS, thread_name_prefix="seed") as pool:
            names = list(pool.map(open_funded, refs))
    return Accounts(spread=tuple(names[:spread]), hot=tuple(names[spread:]))
