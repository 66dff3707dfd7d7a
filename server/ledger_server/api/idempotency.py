"""AIP-155 request ids: fingerprint the request and render/replay the stored response."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from ledger_server.core.ledger import Idempotency, Replay
from ledger_server.core.validation import Violations, normalize_request_id

T = TypeVar("T")


class Response(Protocol):
    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


R = TypeVar("R", bound=Response)


class Responder(Generic[T, R]):
    """Builds the response of one call from the core's result. The bytes stored for a
    request_id are the exact response, so a retry gets it back byte for byte."""

    def __init__(self, build: Callable[[T], R], parse: Callable[[bytes], R]) -> None:
        self._build = build
        self._parse = parse
        self._built: tuple[T, R] | None = None

    def render(self, result: T) -> bytes:
        self._built = (result, self._build(result))
        return self._built[1].SerializeToString(deterministic=True)

    def respond(self, outcome: T | Replay) -> R:
        if isinstance(outcome, Replay):
            return self._parse(outcome.response)
        if self._built is not None and self._built[0] is outcome:
            return self._built[1]
        return self._build(outcome)

    def idempotency(self, method: str, request: Any, v: Violations) -> Idempotency[T] | None:
        """The request's Idempotency, or None when it has no request_id."""
        request_id = normalize_request_id(v, "request_id", request.request_id)
        if not request_id:
            return None
        unkeyed = type(request)()
        unkeyed.CopyFrom(request)
        unkeyed.ClearField("request_id")
        digest = hashlib.sha256(method.encode() + b"\0" + unkeyed.SerializeToString(deterministic=True))
        return Idempotency(request_id, digest.digest(), self.render)
