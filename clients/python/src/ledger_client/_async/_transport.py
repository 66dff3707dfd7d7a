"""What the asyncio client takes from grpc.aio. Its twin, ``_sync/_transport.py``, gives
the blocking client the same names from grpc: these are the only lines that differ
between the two clients."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeAlias

import grpc.aio

from ..retry import call_with_retry_async as call_with_retry

__all__ = [
    "Channel",
    "Deferred",
    "StreamUnary",
    "UnaryUnary",
    "call_with_retry",
    "insecure_channel",
    "secure_channel",
]

Channel: TypeAlias = grpc.aio.Channel
UnaryUnary = grpc.aio.UnaryUnaryMultiCallable
StreamUnary = grpc.aio.StreamUnaryMultiCallable
#: What a call returns before it is awaited.
Deferred = Awaitable
insecure_channel = grpc.aio.insecure_channel
secure_channel = grpc.aio.secure_channel
