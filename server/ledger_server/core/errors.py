"""Domain errors. Each carries a category (mapped to a gRPC code by the api layer), a
stable reason (ledger.v1.ErrorReason without its prefix) and details for the caller."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class Category(enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class LedgerError(Exception):
    """A refusal the caller can act on. Nothing was changed when one is raised."""

    def __init__(
        self,
        category: Category,
        reason: str,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        violations: Sequence[FieldViolation] = (),
        resource: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.category = category
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})
        self.violations = list(violations)
        # (resource type, resource name) for google.rpc.ResourceInfo.
        self.resource = resource


def invalid(violations: Sequence[FieldViolation]) -> LedgerError:
    fields = ", ".join(v.field for v in violations)
    return LedgerError(
        Category.INVALID_ARGUMENT, "INVALID_REQUEST", f"invalid request: {fields}", violations=violations
    )


def not_found(kind: str, name: str) -> LedgerError:
    return LedgerError(
        Category.NOT_FOUND,
        f"{kind.upper()}_NOT_FOUND",
        f"{kind} {name} not found",
        metadata={"name": name},
        resource=(f"ledger.v1.{kind.capitalize()}", name),
    )


class StoreUnavailable(Exception):
    """The database cannot be reached or is too busy; the caller may retry."""


class DeadlineExceeded(Exception):
    """The call's deadline passed before its database work could finish (a timeout of the
    database, or its turn came too late); nothing of it was applied."""


class WriteConflict(Exception):
    """A concurrent writer won a race (unique key, deadlock, serialization); retry the unit."""
