"""The committed stubs match protos/, the blocking client matches the asyncio one it is
written from, and the protos pass buf lint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_generated_stubs_are_current() -> None:
    assert_current("scripts/gen_protos.py")


def test_the_blocking_client_is_written_from_the_asyncio_one() -> None:
    assert_current("scripts/gen_sync_client.py")


def assert_current(generator: str) -> None:
    """`generator --check` passes: what it writes is what is committed. With the
    virtualenv's tools first on PATH (gen_protos runs protoc's plugins from there)."""
    result = subprocess.run(
        [sys.executable, generator, "--check"],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        env={"PATH": f"{BIN}:/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_protos_pass_buf_lint() -> None:
    result = subprocess.run(
        [BIN / "buf", "lint"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
