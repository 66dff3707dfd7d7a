"""What the asyncio client takes from grpc.aio. Its twin, ``_sync/_transport.py``, gives
the blocking client the same names from grpc: these are the only lines that differ
between the two clients."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeAlias

import grpc.aio

from ..retry import call_with_retry_async as call_with_retry

__all__ = [
    "Channel",
    "Deferred",
    "EventLoop",
    "StreamUnary",
    "UnaryUnary",
    "call_with_retry",
    "check_loop",
    "event_loop",
    "insecure_channel",
    "secure_channel",
    "sleep",
]

Channel: TypeAlias = grpc.aio.Channel
UnaryUnary = grpc.aio.UnaryUnaryMultiCallable
StreamUnary = grpc.aio.StreamUnaryMultiCallable
#: What a call returns before it is awaited.
Deferred = Awaitable
insecure_channel = grpc.aio.insecure_channel
secure_channel = grpc.aio.secure_channel
sleep = asyncio.sleep
EventLoop: TypeAlias = asyncio.AbstractEventLoop


def event_loop() -> EventLoop:
    """The loop the client's channel will belong to: the running one. A grpc.aio channel
    made outside a coroutine is bound to no loop that will run its calls, and fails on
    the first one with an error about futures of another loop: this says why at once."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "make AsyncLedgerClient inside a coroutine (async with AsyncLedgerClient(...)): "
            "its grpc.aio channel belongs to the running event loop"
        ) from None


def check_loop(loop: EventLoop) -> None:
    """Refuse a call from another event loop than the client's, which its channel cannot
    serve, with an error that says so."""
    if asyncio.get_running_loop() is not loop:
        raise RuntimeError("this AsyncLedgerClient belongs to another event loop: make one client per loop")
