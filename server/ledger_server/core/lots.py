"""Credit lots, as pure arithmetic: which lots a debit consumes and where a refund of a
debit gives credit back. No I/O, so the rules are easy to test on their own."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from ledger_server.core.model import Lot, LotUse


def consume(lots: Sequence[Lot], amount: int, prefer: str = "") -> list[tuple[Lot, int]]:
    """Take up to `amount` from unexpired `lots`: those created by transaction `prefer`
    first (a refunded credit takes back its own lot), then soonest-expiring first, oldest
    first among equal expiries. What the lots cannot cover comes from permanent credit."""
    ordered = sorted(lots, key=lambda lot: (lot.transaction_id != prefer, lot.expires_at, lot.seq))
    taken: list[tuple[Lot, int]] = []
    left = amount
    for lot in ordered:
        if left == 0:
            break
        take = min(lot.remaining, left)
        if take > 0:
            taken.append((lot, take))
            left -= take
    return taken


def restore(
    uses: Sequence[LotUse], original_amount: int, refunded_before: int, amount: int
) -> list[tuple[int, int]]:
    """Where a refund of `amount` on a debit gives credit back, as (lot seq, amount).

    Refunds give back the debit's permanent part first (the most useful to the customer),
    then its lots, latest-expiring (= last consumed) first. What does not go to a lot is
    permanent credit."""
    permanent = original_amount - sum(u.amount for u in uses)
    left = amount - max(0, min(amount, permanent - min(refunded_before, permanent)))
    back: list[tuple[int, int]] = []
    for use in reversed(uses):
        if left == 0:
            break
        give = min(use.amount - use.restored, left)
        if give > 0:
            back.append((use.lot_seq, give))
            left -= give
    return back


def mirrored(taken: Sequence[tuple[Lot, int]]) -> list[tuple[dt.datetime, int]]:
    """The lots a transfer's destination receives: the source's consumed amounts with
    their expiry times (one lot per expiry time)."""
    by_expiry: dict[dt.datetime, int] = {}
    for lot, amount in taken:
        by_expiry[lot.expires_at] = by_expiry.get(lot.expires_at, 0) + amount
    return sorted(by_expiry.items())
