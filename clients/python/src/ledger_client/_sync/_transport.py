"""What the blocking client takes from grpc: the twin of ``_async/_transport.py`` (read
that one first), with the same names."""

from __future__ import annotations

import time
from typing import Annotated, TypeAlias, TypeVar

import grpc

from ..retry import call_with_retry

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

_T = TypeVar("_T")

Channel: TypeAlias = grpc.Channel
UnaryUnary = grpc.UnaryUnaryMultiCallable
StreamUnary = grpc.StreamUnaryMultiCallable
#: A blocking call returns its value itself.
Deferred: TypeAlias = Annotated[_T, "returned, not awaited"]
insecure_channel = grpc.insecure_channel
secure_channel = grpc.secure_channel
sleep = time.sleep
#: A blocking client belongs to no event loop, and may be shared between threads.
EventLoop: TypeAlias = object | None


def event_loop() -> EventLoop:
    return None


def check_loop(loop: EventLoop) -> None:
    pass
