"""Write the blocking client from the asyncio one.

The asyncio client (``ledger_client/_async/client.py``) is the source of both: unasync
(a token rewriter) drops its ``async`` and ``await`` and renames ``AsyncLedgerClient``,
``AsyncIterator``, ``__aenter__``... to their blocking names, giving
``ledger_client/_sync/client.py``, which ruff then tidies. What really differs between
the two (grpc.aio or grpc, asyncio.sleep or time.sleep) each takes from its own
``_transport.py``. `--check` fails if the committed file differs from what the source
gives (stale or edited by hand).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import unasync

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clients" / "python" / "src" / "ledger_client"
SOURCE = PACKAGE / "_async" / "client.py"
TARGET = PACKAGE / "_sync" / "client.py"
RENAMES = {"AsyncLedgerClient": "LedgerClient"}
HEADER = '''# Generated from ../_async/client.py by scripts/gen_sync_client.py (`make client`): do not edit.
"""The blocking client for the ledger.v1 AccountService, TransactionService and
AdminService, on grpc: the asyncio client (``../_async/client.py``) without ``async``
and ``await``."""
'''


def generate() -> str:
    """The blocking client's text."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "_async" / "client.py"
        source.parent.mkdir()
        source.write_text(_without_docstring(SOURCE.read_text()))
        unasync.unasync_files([str(source)], [unasync.Rule("/_async/", "/_sync/", RENAMES)])
        text = HEADER + (Path(tmp) / "_sync" / "client.py").read_text()
    # Sorted imports (AsyncIterator became Iterator), `yield from` where a loop yielded
    # (no `yield from` in an async generator), then the layout.
    text = _ruff("check", "--fix-only", "--unsafe-fixes", "--select", "I,UP028", input=text)
    return _ruff("format", input=text)


def _ruff(*command: str, input: str) -> str:
    ruff = Path(sys.executable).parent / "ruff"
    stdin = ["--stdin-filename", str(TARGET), "-"]
    done = subprocess.run(
        [ruff, *command, *stdin], input=input, capture_output=True, text=True, cwd=ROOT, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"ruff {command[0]} failed: {done.stderr}")
    return done.stdout


def _without_docstring(text: str) -> str:
    """The source without its module docstring, which is about the asyncio client."""
    if not text.startswith('"""'):
        raise SystemExit(f"{SOURCE} must begin with its docstring")
    return text[text.index('"""', 3) + 3 :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed file is stale")
    args = parser.parse_args()
    text = generate()
    if not args.check:
        TARGET.write_text(text)
        return
    if not TARGET.exists() or TARGET.read_text() != text:
        raise SystemExit(
            f"{TARGET.relative_to(ROOT)} is not what {SOURCE.relative_to(ROOT)} gives: "
            "edit the asyncio client and run `make client`"
        )


if __name__ == "__main__":
    main()
