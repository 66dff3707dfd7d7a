"""Retries of UNAVAILABLE calls with capped exponential backoff and full jitter.

``UNAVAILABLE`` is retried: the ledger returns it when its database is busy or
unreachable or when it is shutting down, and in each case the request was not applied,
or it was applied and a retry with the same ``request_id`` replays the stored response.
So is ``RESOURCE_EXHAUSTED`` with reason ``TENANT_CALL_LIMIT`` (the caller's tenant had
as many calls in flight as the server allows; nothing was done). Every other code is
final. ``DEADLINE_EXCEEDED`` in particular is not retried: the
timeout is the budget of the whole call, retries included, so when it is spent there
is no time left to retry in. A caller that wants to try again after it can repeat the
call itself with the ``request_id`` of the :class:`~ledger_client.LedgerError`.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from .errors import LedgerError, Reason

__all__ = [
    "RETRYABLE_CODES",
    "RETRYABLE_REASONS",
    "RetryPolicy",
    "call_with_retry",
    "call_with_retry_async",
    "check_timeout",
    "stream_retry_delay",
]

#: The status codes that are retried.
RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})

#: RESOURCE_EXHAUSTED answers retried too, by their ErrorInfo reason: a server's limit on
#: one tenant's calls in flight passes, where a message too large or an import's reply
#: (the same code) would fail again.
RETRYABLE_REASONS: frozenset[str] = frozenset({Reason.TENANT_CALL_LIMIT})

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a call is retried.

    ``max_attempts`` counts the first attempt (1 disables retries). The wait before retry
    ``n`` (n = 1 for the second attempt) is drawn uniformly from
    ``[0, min(max_backoff, initial_backoff * multiplier ** (n - 1)))`` ("full jitter"),
    so that many clients failing together do not retry in lockstep.
    """

    max_attempts: int = 4
    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError("max_attempts must be an int")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        for name in ("initial_backoff", "max_backoff"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.max_backoff < self.initial_backoff:
            raise ValueError("max_backoff must be >= initial_backoff")
        if not math.isfinite(self.multiplier) or self.multiplier < 1:
            raise ValueError(f"multiplier must be a finite number >= 1, got {self.multiplier!r}")

    def backoff_cap(self, retry: int) -> float:
        """The upper bound of the wait before retry number ``retry`` (1-based)."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        try:
            cap = self.initial_backoff * self.multiplier ** (retry - 1)
        except OverflowError:
            return self.max_backoff
        return min(self.max_backoff, cap)

    def backoff(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before retry number ``retry``: full jitter under :meth:`backoff_cap`.
        ``rand`` returns a float in [0, 1)."""
        return self.backoff_cap(retry) * rand()


def _code_of(error: grpc.RpcError) -> grpc.StatusCode | None:
    try:
        return error.code()
    except Exception:
        return None


def _retryable(error: grpc.RpcError) -> bool:
    code = _code_of(error)
    if code in RETRYABLE_CODES:
        return True
    return (
        code == grpc.StatusCode.RESOURCE_EXHAUSTED
        and LedgerError.from_rpc_error(error).reason in RETRYABLE_REASONS
    )


def call_with_retry(
    attempt: Callable[[float], _T],
    policy: RetryPolicy,
    *,
    timeout: float,
    on_attempt: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> _T:
    """Call ``attempt(remaining_seconds)`` until it returns, retrying a
    :class:`grpc.RpcError` whose code is in :data:`RETRYABLE_CODES` (or RESOURCE_EXHAUSTED
    with a reason in :data:`RETRYABLE_REASONS`).

    ``timeout`` is the deadline of the whole call: each attempt is given what remains of
    it, and no retry is started whose backoff would end past it. ``on_attempt(n)`` is
    called before attempt ``n`` (1-based). The last error is re-raised unchanged.
    """
    deadline = _deadline(timeout, clock)
    number = 1
    while True:
        if on_attempt is not None:
            on_attempt(number)
        try:
            return attempt(max(deadline - clock(), 0.0))
        except grpc.RpcError as error:
            delay = _delay_before_retry(
                error, policy, number=number, deadline=deadline, clock=clock, rand=rand
            )
            if delay is None:
                raise
        sleep(delay)
        number += 1


async def call_with_retry_async(
    attempt: Callable[[float], Awaitable[_T]],
    policy: RetryPolicy,
    *,
    timeout: float,
    on_attempt: Callable[[int], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> _T:
    """:func:`call_with_retry` for asyncio: ``await attempt(remaining_seconds)``, and the
    backoff awaited with ``sleep``; the same rules."""
    deadline = _deadline(timeout, clock)
    number = 1
    while True:
        if on_attempt is not None:
            on_attempt(number)
        try:
            return await attempt(max(deadline - clock(), 0.0))
        except grpc.RpcError as error:
            delay = _delay_before_retry(
                error, policy, number=number, deadline=deadline, clock=clock, rand=rand
            )
            if delay is None:
                raise
        await sleep(delay)
        number += 1


def stream_retry_delay(
    error: grpc.RpcError, policy: RetryPolicy, *, failures: int, deadline: float = math.inf
) -> float | None:
    """For a stream that is opened again where it broke: the wait before reopening it
    after its ``failures``-th failure in a row (a stream that delivered something starts
    counting again), by the rules of :func:`call_with_retry`, ``deadline`` on the
    ``time.monotonic`` clock; None when ``error`` is final."""
    return _delay_before_retry(
        error, policy, number=failures, deadline=deadline, clock=time.monotonic, rand=random.random
    )


def check_timeout(timeout: float) -> None:
    """A call's budget in seconds: a finite number > 0 (the clients check theirs with it
    when they are made)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError("timeout must be a number of seconds")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")


def _deadline(timeout: float, clock: Callable[[], float]) -> float:
    check_timeout(timeout)
    return clock() + timeout


def _delay_before_retry(
    error: grpc.RpcError,
    policy: RetryPolicy,
    *,
    number: int,
    deadline: float,
    clock: Callable[[], float],
    rand: Callable[[], float],
) -> float | None:
    """How long to wait before retrying after attempt ``number`` failed with ``error``;
    None when that error is final: not retryable, the attempts spent, or the backoff
    would end past the deadline."""
    if not _retryable(error) or number >= policy.max_attempts:
        return None
    delay = policy.backoff(number, rand)
    return None if clock() + delay >= deadline else delay
