"""What fits in a reply: gRPC refuses to send a message above the server's limit (and
clients to receive one above theirs, 4 MiB by default), so repeated fields that can grow
without bound are measured as they are filled."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


class Sized(Protocol):
    def ByteSize(self) -> int: ...


M = TypeVar("M", bound=Sized)

# A reply's scalar fields (counts), at most.
SCALARS_BYTES = 64


def framed_size(message: Sized) -> int:
    """`message` as an element of a repeated field: with its tag and length (at most 5
    bytes for any message a reply can hold)."""
    return message.ByteSize() + 5


def that_fit(messages: Iterable[M], budget: int) -> list[M]:
    """The first of `messages` whose framed sizes together stay within `budget` bytes."""
    fitting: list[M] = []
    for message in messages:
        budget -= framed_size(message)
        if budget < 0:
            break
        fitting.append(message)
    return fitting
