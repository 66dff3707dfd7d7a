"""VerifyLedger: the ledger's invariants, checked online against one consistent snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger_server.core.ports import Store


@dataclass(frozen=True)
class Violation:
    check: str
    resource: str
    detail: str


@dataclass(frozen=True)
class AuditReport:
    violations: list[Violation] = field(default_factory=list)
    accounts_checked: int = 0
    transactions_checked: int = 0


def verify(store: Store, tenant_id: str) -> AuditReport:
    """Every broken invariant of `tenant_id`'s books (an empty list on a healthy ledger)."""
    found: list[Violation] = []
    with store.snapshot() as r:
        for txn_id, total in r.unbalanced_transactions(tenant_id):
            found.append(
                Violation("entries_balance", f"transactions/{txn_id}", f"entries sum to {total}, not 0")
            )
        accounts = r.audit_accounts(tenant_id)
        for a in accounts:
            name = f"accounts/{a.id}"
            if a.posted != a.entry_sum:
                found.append(
                    Violation("account_balance", name, f"posted {a.posted} != sum of entries {a.entry_sum}")
                )
            if a.posted != (a.last_running_balance or 0):
                found.append(
                    Violation(
                        "account_balance",
                        name,
                        f"posted {a.posted} != running balance of the last entry {a.last_running_balance}",
                    )
                )
            if a.kind == "customer" and a.posted < a.balance_floor:
                found.append(Violation("balance_floor", name, f"posted {a.posted} < floor {a.balance_floor}"))
            if a.pending != a.open_holds:
                found.append(
                    Violation("pending_holds", name, f"pending {a.pending} != pending holds {a.open_holds}")
                )
            if a.expiring != a.lot_remainders:
                found.append(
                    Violation(
                        "lot_remainders", name, f"expiring {a.expiring} != lot remainders {a.lot_remainders}"
                    )
                )
        for link in r.broken_running_balances(tenant_id):
            found.append(
                Violation(
                    "running_balance",
                    f"transactions/{link.transaction_id}",
                    f"entry on accounts/{link.account_id} has running balance {link.found}, "
                    f"expected {link.expected} (previous running balance + amount)",
                )
            )
        transactions = r.count_transactions(tenant_id)
    return AuditReport(found, len(accounts), transactions)
