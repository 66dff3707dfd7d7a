"""Online backups of the embedded SQLite database, and restoring one.

A backup is taken while the server keeps serving: SQLite's backup API copies every page in
one step, inside one read transaction, so the copy is the database as of one commit (in WAL
mode a reader never blocks the writers). A plain file copy is not a backup: it misses the
commits still in the `-wal` file, or tears pages a commit is writing.

A restore writes the backup into the database through SQLite too, in one write
transaction, under an exclusive lock that any open connection (a running server's) keeps
it from taking: a database in use is never replaced, and the database's own `-wal` file is
handled by SQLite instead of being replayed over the restored pages."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from ledger_server.store.engine import sqlite_file

PARTIAL = ".partial"


class BackupError(Exception):
    """A backup or restore refused, with what to do about it."""


@dataclass(frozen=True)
class Copy:
    """What a backup or restore wrote."""

    path: Path
    pages: int
    size: int  # bytes
    revision: str  # the schema revision (Alembic) of what was copied


def sqlite_path(database_url: str) -> Path:
    """The database file of a SQLite URL; other databases have their own tools."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise BackupError(
            "backup and restore are for the embedded SQLite database; back Postgres up with "
            "its own tools (pg_dump, or pg_basebackup with WAL archiving for point-in-time recovery)"
        )
    database = sqlite_file(url)
    if database is None:
        raise BackupError("an in-memory database has no file to back up or restore")
    return Path(database)


def backup(database: Path, destination: Path) -> Copy:
    """Copy `database` to `destination`, which must not exist: written as `<destination>.partial`,
    checked, flushed to disk and only then renamed, so `destination` is whole or absent."""
    if not database.is_file():  # sqlite3.connect would create an empty database
        raise BackupError(f"no database at {database}")
    if destination.exists():
        raise BackupError(f"{destination} exists: a backup never overwrites a file")
    if not destination.parent.is_dir():
        raise BackupError(f"no directory {destination.parent} to write the backup in")
    partial = destination.with_name(destination.name + PARTIAL)
    partial.unlink(missing_ok=True)  # left by a backup that was interrupted
    try:
        copy = _copied(database, partial)
        _fsync(partial)
    except (sqlite3.Error, OSError, BackupError) as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, BackupError):
            raise
        raise BackupError(f"backup of {database} failed, nothing written: {exc}") from exc
    os.replace(partial, destination)
    _fsync(destination.parent)
    return Copy(destination, copy.pages, copy.size, copy.revision)


def _copied(database: Path, partial: Path) -> Copy:
    source = sqlite3.connect(database, timeout=10)
    try:
        _revision(source, database)  # only a ledger database
        target = sqlite3.connect(partial)
        try:
            source.backup(target)  # pages=-1: one step, one snapshot
            return _checked(target, partial)
        finally:
            target.close()
    finally:
        source.close()


def restore(backup_file: Path, database: Path, replace: bool) -> Copy:
    """Write `backup_file` into `database` (created if missing). Refused while anything has
    the database open, and over a database that holds a ledger unless `replace`."""
    if not backup_file.is_file():
        raise BackupError(f"no backup at {backup_file}")
    # immutable: read without locks or a -shm file, leaving nothing beside the backup
    source = sqlite3.connect(f"{backup_file.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        return _restored(source, backup_file, database, replace)
    except sqlite3.Error as exc:
        raise BackupError(f"restore of {backup_file} into {database} failed: {exc}") from exc
    finally:
        source.close()


def _restored(source: sqlite3.Connection, backup_file: Path, database: Path, replace: bool) -> Copy:
    _checked(source, backup_file)
    database.parent.mkdir(parents=True, exist_ok=True)
    target = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        # Exclusive locking mode keeps the lock after COMMIT, until close.
        target.execute("PRAGMA locking_mode=EXCLUSIVE")
        try:
            target.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError as exc:
            raise BackupError(
                f"{database} is in use ({exc}): stop the server (and anything else that "
                "has the database open) first"
            ) from exc
        if _has_tables(target) and not replace:
            raise BackupError(f"{database} already holds a ledger: pass --replace to overwrite it")
        target.execute("COMMIT")
        source.backup(target)  # one write transaction: interrupted, it leaves the database as it was
        return _checked(target, database)
    finally:
        target.close()  # releases the lock; a clean close also checkpoints the WAL


def _checked(conn: sqlite3.Connection, path: Path) -> Copy:
    """What `path` holds, once SQLite's integrity check finds nothing wrong with it."""
    revision = _revision(conn, path)
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    if problems != ["ok"]:
        raise BackupError(f"{path} fails SQLite's integrity check: {'; '.join(problems[:5])}")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return Copy(path, pages, pages * page_size, revision)


def _revision(conn: sqlite3.Connection, path: Path) -> str:
    try:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as exc:  # not a database, or no schema table
        raise BackupError(f"{path} is not a ledger database ({exc})") from exc
    if row is None:
        raise BackupError(f"{path} is not a ledger database (no schema revision)")
    return str(row[0])


def _has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' LIMIT 1").fetchone() is not None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
