"""The server's log lines: JSON objects, buffered, flushed within FLUSH_SECONDS (at once
for warnings and errors)."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from ledger_server.logs import FLUSH_SECONDS, BufferedLines, JsonFormatter


class Stream(io.StringIO):
    """What was written, and what of it was flushed."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed = ""

    def flush(self) -> None:
        self.flushed = self.getvalue()


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, Stream]]:
    stream = Stream()
    handler = BufferedLines(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("test.logs")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield log, stream
    finally:
        log.removeHandler(handler)
        handler.close()


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_a_line_is_json_with_its_fields(logged: tuple[logging.Logger, Stream]) -> None:
    log, stream = logged
    log.info("rpc", extra={"method": "/m", "code": "OK", "duration_ms": 1.5})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("unexpected failure", extra={"incident": "i-1"})
    info, error = lines(stream.getvalue())
    assert info["level"] == "info" and info["logger"] == "test.logs" and info["msg"] == "rpc"
    assert (info["method"], info["code"], info["duration_ms"]) == ("/m", "OK", 1.5)
    assert str(info["ts"]).endswith("+00:00")
    assert error["level"] == "error" and error["incident"] == "i-1"
    assert "ValueError: boom" in str(error["exception"])


def test_lines_are_flushed_within_the_interval_and_warnings_at_once(
    logged: tuple[logging.Logger, Stream],
) -> None:
    log, stream = logged
    log.info("quiet")
    deadline = time.monotonic() + 40 * FLUSH_SECONDS
    while "quiet" not in stream.flushed:
        assert time.monotonic() < deadline, "an info line was not flushed in time"
        time.sleep(FLUSH_SECONDS / 5)
    log.warning("loud")
    assert "loud" in stream.flushed  # no wait
