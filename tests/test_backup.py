"""`ledger-server backup` and `restore` on the embedded SQLite database, as an operator runs
them: a backup taken while a server is posting holds exactly the writes committed before
it, and a restore refuses a database in use, a ledger it would overwrite unasked, and a
damaged backup, changing nothing then."""

from __future__ import annotations

import hashlib
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from ledger_client import LedgerClient, LedgerError

from ledger_server.core.admin import Admin
from ledger_server.core.auth import ADMIN
from ledger_server.store.engine import make_engine
from ledger_server.store.sql_store import SqlStore
from tests.support import SERVER, ServerProcess

MAX_CREDITS = 3000  # the writer's bound, whatever the backup does


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SERVER, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def db(tmp_path: Path, sqlite_template: Path) -> Path:
    path = tmp_path / "ledger.db"
    shutil.copy(sqlite_template, path)
    return path


@pytest.fixture
def secret(db: Path) -> str:
    store = SqlStore(make_engine(f"sqlite:///{db}", pool_size=1))
    try:
        Admin(store).create_tenant("acme", "Acme")
        return Admin(store).create_token("acme", "backup-test", [ADMIN])[1]
    finally:
        store.close()  # nothing of the test's own may keep the database open


@pytest.fixture
def served(db: Path, tmp_path: Path, secret: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(f"sqlite:///{db}", tmp_path / "server.log")
    yield proc
    proc.kill()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def credit_ids(path: Path) -> set[str]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM transactions WHERE direction = 'credit'")}
    finally:
        conn.close()


class Crediting:
    """Credits four accounts through a server, one call at a time, so that its commits and
    their acknowledgements come in one order."""

    def __init__(self, client: LedgerClient) -> None:
        self.client = client
        self.accounts = [client.create_account(currency="USD").name for _ in range(4)]
        self.acknowledged: list[tuple[str, str, int]] = []  # (account, transaction id, amount)

    def credit(self) -> None:
        i = len(self.acknowledged)
        account, amount = self.accounts[i % 4], 1 + i % 7
        tx = self.client.credit(account, amount, "USD")
        self.acknowledged.append((account, tx.name.split("/")[1], amount))

    def ids(self, first: int | None = None) -> set[str]:
        return {tx for _, tx, _ in self.acknowledged[:first]}

    def balance(self, account: str, first: int) -> int:
        return sum(amount for acc, _, amount in self.acknowledged[:first] if acc == account)


def connect(served: ServerProcess, secret: str) -> LedgerClient:
    return LedgerClient(f"127.0.0.1:{served.port}", token=secret, timeout=30.0)


def credited_around_a_backup(
    served: ServerProcess, secret: str, url: str, backup: str, *, before: int, after: int
) -> Crediting:
    """`before` credits, a backup of the ledger (which must succeed), `after` more."""
    with connect(served, secret) as client:
        writes = Crediting(client)
        for _ in range(before):
            writes.credit()
        assert cli("backup", backup, "--database-url", url).returncode == 0
        for _ in range(after):
            writes.credit()
    return writes


def test_a_backup_holds_exactly_the_writes_committed_before_it(
    served: ServerProcess, db: Path, tmp_path: Path, secret: str
) -> None:
    url = f"sqlite:///{db}"
    with connect(served, secret) as client:
        writes = Crediting(client)
        stop = threading.Event()

        def keep_crediting() -> None:
            for _ in range(MAX_CREDITS):
                if stop.is_set():
                    return
                writes.credit()

        writer = threading.Thread(target=keep_crediting)
        writer.start()
        while len(writes.acknowledged) < 50 and writer.is_alive():
            time.sleep(0.01)
        before = len(writes.acknowledged)
        during = cli("backup", str(tmp_path / "during.db"), "--database-url", url)
        after = len(writes.acknowledged)
        while len(writes.acknowledged) < after + 20 and writer.is_alive():  # writes it cannot hold
            time.sleep(0.01)
        stop.set()
        writer.join(60)
        assert during.returncode == 0, during.stderr
        assert sorted(p.name for p in tmp_path.glob("during.db*")) == ["during.db"]  # no -wal, -shm, .partial
        in_backup = credit_ids(tmp_path / "during.db")
        kept = len(in_backup)
        assert before <= kept < len(writes.acknowledged)
        assert in_backup == writes.ids(kept)  # a prefix: the ledger as of one commit
        assert f"tenant acme: 20 accounts, {kept} transactions, 0 violations" in during.stdout  # 16 shards

        # Idle now, the server's last commits are in its -wal file (a copy of the database
        # file alone misses them): the backup holds every acknowledged write.
        quiet = cli("backup", str(tmp_path / "quiet.db"), "--database-url", url)
        assert quiet.returncode == 0, quiet.stderr
        assert credit_ids(tmp_path / "quiet.db") == writes.ids()


def test_restore_brings_back_the_backup_once_the_server_has_stopped(
    served: ServerProcess, db: Path, tmp_path: Path, secret: str
) -> None:
    url, backup = f"sqlite:///{db}", str(tmp_path / "backup.db")
    writes = credited_around_a_backup(served, secret, url, backup, before=10, after=3)
    kept = 10

    refused = cli("restore", backup, "--database-url", url, "--replace")
    assert refused.returncode == 1 and "is in use" in refused.stderr  # the server has it open
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    changed = digest(db)
    unasked = cli("restore", backup, "--database-url", url)
    assert unasked.returncode == 1 and "--replace" in unasked.stderr and digest(db) == changed
    restored = cli("restore", backup, "--database-url", url, "--replace")
    assert restored.returncode == 0, restored.stderr
    assert f"{kept} transactions, 0 violations" in restored.stdout

    served.start()
    with connect(served, secret) as restarted:
        for account in writes.accounts:
            assert restarted.get_account(account).balance.posted == writes.balance(account, kept)
        with pytest.raises(LedgerError) as gone:  # acknowledged after the backup: not in it
            restarted.get_transaction(f"transactions/{writes.acknowledged[-1][1]}")
        assert gone.value.code == grpc.StatusCode.NOT_FOUND


def test_restore_over_a_crashed_servers_database_ignores_its_leftover_wal(
    served: ServerProcess, db: Path, tmp_path: Path, secret: str
) -> None:
    """After kill -9 the database's -wal file still holds the last commits; restored over,
    none of them may come back on top of the backup."""
    url, backup = f"sqlite:///{db}", str(tmp_path / "backup.db")
    writes = credited_around_a_backup(served, secret, url, backup, before=5, after=5)
    served.signal(signal.SIGKILL)
    served.wait()
    wal = db.with_name(db.name + "-wal")
    assert wal.exists() and wal.stat().st_size > 0  # the crash left commits there
    restored = cli("restore", backup, "--database-url", url, "--replace")
    assert restored.returncode == 0, restored.stderr
    served.start()
    with connect(served, secret) as client:
        for account in writes.accounts:
            assert client.get_account(account).balance.posted == writes.balance(account, 5)
        assert {
            t.name.split("/")[1] for t in client.list_transactions(page_size=100).transactions
        } == writes.ids(5)


def test_restore_into_a_new_file_and_a_backup_of_a_broken_ledger_says_so(
    served: ServerProcess, db: Path, tmp_path: Path, secret: str
) -> None:
    url = f"sqlite:///{db}"
    with connect(served, secret) as client:
        account = client.create_account(currency="USD")
        client.credit(account.name, 100, "USD")
    conn = sqlite3.connect(db)
    with conn:  # corrupt the stored balance: the audit must find it in the copy
        conn.execute("UPDATE accounts SET posted = posted + 1 WHERE id = ?", (account.name.split("/")[1],))
    conn.close()
    taken = cli("backup", str(tmp_path / "broken.db"), "--database-url", url)
    assert taken.returncode == 1 and "account_balance" in taken.stdout
    assert "faithful copy of a ledger with" in taken.stderr
    assert (tmp_path / "broken.db").exists()  # still the best copy there is
    elsewhere = tmp_path / "new" / "ledger.db"
    restored = cli("restore", str(tmp_path / "broken.db"), "--database-url", f"sqlite:///{elsewhere}")
    assert restored.returncode == 1 and "account_balance" in restored.stdout
    unchecked = cli("backup", str(tmp_path / "unchecked.db"), "--database-url", url, "--no-verify")
    assert unchecked.returncode == 0 and "not verified" in unchecked.stdout


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("backup {tmp}/exists.db --database-url sqlite:///{db}", "never overwrites"),
        ("backup {tmp}/out.db --database-url sqlite:///{tmp}/missing.db", "no database at"),
        ("backup {tmp}/out.db --database-url sqlite:///{tmp}/plain.db", "not a ledger database"),
        ("backup {tmp}/out.db --database-url postgresql+psycopg://u@127.0.0.1/x", "pg_dump"),
        ("backup {tmp}/no/such/dir/out.db --database-url sqlite:///{db}", "no directory"),
        ("restore {tmp}/missing.db --database-url sqlite:///{db} --replace", "no backup at"),
        ("restore {tmp}/plain.db --database-url sqlite:///{db} --replace", "not a ledger database"),
        ("restore {tmp}/damaged.db --database-url sqlite:///{db} --replace", "integrity check"),
    ],
)
def test_refusals_change_nothing(db: Path, tmp_path: Path, command: str, message: str) -> None:
    (tmp_path / "exists.db").write_bytes(b"an operator's file")
    plain = sqlite3.connect(tmp_path / "plain.db")
    plain.execute("CREATE TABLE t (x)")
    plain.close()
    damaged = tmp_path / "damaged.db"
    assert cli("backup", str(damaged), "--database-url", f"sqlite:///{db}").returncode == 0
    data = bytearray(damaged.read_bytes())
    data[3 * 4096 : 5 * 4096] = b"\xff" * (2 * 4096)  # two pages of an index or table
    damaged.write_bytes(bytes(data))
    files = {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()}

    result = cli(*command.format(tmp=tmp_path, db=db).split())

    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert {p.name: digest(p) for p in tmp_path.iterdir() if p.is_file()} == files
