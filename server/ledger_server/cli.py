"""`ledger-server`: serve the ledger, migrate its database, administer tenants and tokens."""

from __future__ import annotations

import argparse
import datetime as dt
import faulthandler
import gc
import ipaddress
import logging
import re
import signal
import sys
import threading
import time
from pathlib import Path

from ledger_server import logs
from ledger_server.api.server import LedgerServer
from ledger_server.config import add_options, settings_from
from ledger_server.core.admin import Admin, AdminError
from ledger_server.core.auth import ADMIN, SCOPES, Authenticator
from ledger_server.core.ledger import Ledger
from ledger_server.expiry_worker import ExpiryWorker
from ledger_server.metrics import Metrics
from ledger_server.store import backup
from ledger_server.store.engine import make_engine
from ledger_server.store.migrate import current_revision, head_revision, upgrade
from ledger_server.store.sql_store import SqlStore

log = logging.getLogger("ledger.server")
DEV_TENANT = "dev"


def serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    for listen in filter(None, (settings.listen, settings.metrics_listen)):
        if args.dev and not _is_loopback(listen):
            print(f"--dev serves only on a loopback address, not {listen}", file=sys.stderr)
            return 2
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    upgrade(engine)  # an empty database is created; an older one is brought to head
    store = SqlStore(engine, writers=settings.writers)
    authenticator = Authenticator(store, settings.token_cache_seconds)
    ledger = Ledger(store)
    metrics = None
    if settings.metrics_listen:  # first: a bad address stops start-up before anything serves
        metrics = Metrics()
        metrics.watch_store(store.commit_stats, store.connections_in_use)
        try:
            metrics_url = metrics.serve(settings.metrics_listen)
        except (OSError, ValueError) as exc:
            print(f"cannot serve metrics on {settings.metrics_listen}: {exc}", file=sys.stderr)
            store.close()
            return 2
        log.info("metrics", extra={"address": metrics_url})
    server = LedgerServer(ledger, authenticator, settings, metrics)
    worker = ExpiryWorker(ledger, settings.expiry_seconds, metrics)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    worker.start()
    host = settings.listen.rsplit(":", 1)[0]
    address = f"{host}:{server.port}"
    log.info("serving", extra={"address": address, "port": server.port, "tls": server.tls})
    if args.dev:
        _announce_dev_mode(Admin(store), Path(args.dev_token_file), address, server.tls)
    _freeze_start_up_objects()
    stop.wait()
    log.info("shutting down", extra={"grace_seconds": settings.grace_seconds})
    # Should shutdown ever hang, leave every thread's stack in the log.
    faulthandler.dump_traceback_later(settings.drain_seconds + settings.grace_seconds + 15)
    worker.stop()
    server.stop()
    if metrics is not None:
        metrics.stop()
    store.close()
    faulthandler.cancel_dump_traceback_later()
    log.info("stopped")
    return 0


def _freeze_start_up_objects() -> None:
    """Take what start-up made (protobuf descriptors, SQLAlchemy's tables, grpc: ~100k
    objects, kept for the process's life) out of the garbage collector's sight. A full
    collection walked them all: a 40-75 ms pause that every call in flight waited out.
    Measured (docs/performance.md): SQLite CreateTransaction's p99.9 at 64 in flight
    -25 to -45 % in five pairs of runs out of seven, calls/s within noise."""
    gc.collect()  # what is garbage now would otherwise be kept for ever
    gc.freeze()
    log.debug("start-up objects frozen", extra={"objects": gc.get_freeze_count()})


def _is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _announce_dev_mode(admin: Admin, token_file: Path, address: str, tls: bool) -> None:
    """Development convenience: on a database without tokens, make a tenant and an admin
    token, keep the token in a local file, and show how to call the server with it."""
    if not admin.list_tokens():
        if DEV_TENANT not in {t.id for t in admin.list_tenants()}:
            admin.create_tenant(DEV_TENANT, "Development")
        _, secret = admin.create_token(DEV_TENANT, "dev", [ADMIN])
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.write_text(secret + "\n")
        token_file.chmod(0o600)
    secret = token_file.read_text().strip() if token_file.exists() else "<TOKEN>"
    plaintext = "" if tls else "-plaintext "
    lines = [
        "DEVELOPMENT MODE (--dev): listening on loopback only; never use --dev in production.",
        f"Tenant '{DEV_TENANT}', admin token (kept in {token_file}):",
        f"  {secret}",
        "Try:",
        f"  grpcurl {plaintext}{address} list",
        f"  grpcurl {plaintext}-H 'authorization: Bearer {secret}' \\",
        f'    -d \'{{"account": {{"currency": "USD"}}}}\' {address} ledger.v1.AccountService/CreateAccount',
    ]
    if secret == "<TOKEN>":
        lines[1:3] = ["This database already has tokens: create one with `ledger-server tokens create`."]
    bar = "=" * 88
    print("\n".join([bar, *lines, bar]), file=sys.stderr, flush=True)


def migrate(args: argparse.Namespace) -> int:
    engine = make_engine(args.database_url, pool_size=1)
    upgrade(engine)
    log.info("migrated", extra={"revision": current_revision(engine)})
    engine.dispose()
    return 0


def expire(args: argparse.Namespace) -> int:
    store = _store(args)
    report = Ledger(store).expire_due()
    store.close()
    print(
        f"accounts: {report.accounts}, lots expired: {report.lots_expired}, "
        f"holds voided: {report.holds_voided}, failed: {report.failed}"
    )
    return 1 if report.failed else 0


def verify(args: argparse.Namespace) -> int:
    store = _store(args)
    broken = _verified(store, args.tenant)
    store.close()
    return 1 if broken else 0


def _verified(store: SqlStore, tenant: str = "") -> int:
    """Audits `tenant` (default: every tenant), printing a report; returns the violations."""
    ledger = Ledger(store)
    tenant_ids = [tenant] if tenant else [t.id for t in Admin(store).list_tenants()]
    broken = 0
    for tenant_id in tenant_ids:
        report = ledger.verify(tenant_id)
        broken += len(report.violations)
        print(
            f"tenant {tenant_id}: {report.accounts_checked} accounts, "
            f"{report.transactions_checked} transactions, {len(report.violations)} violations"
        )
        for x in report.violations:
            print(f"  {x.check}: {x.resource}: {x.detail}")
    return broken


def backup_database(args: argparse.Namespace) -> int:
    started = time.monotonic()
    database = backup.sqlite_path(args.database_url)
    copy = backup.backup(database, Path(args.destination))
    print(f"backed up {database} to {_described(copy)} in {time.monotonic() - started:.1f} s")
    return _verified_copy(copy, args.no_verify)


def restore_database(args: argparse.Namespace) -> int:
    database = backup.sqlite_path(args.database_url)
    copy = backup.restore(Path(args.backup), database, args.replace)
    print(f"restored {args.backup} into {_described(copy)}")
    return _verified_copy(copy, args.no_verify)


def _described(copy: backup.Copy) -> str:
    return (
        f"{copy.path}: {copy.pages:,} pages ({copy.size / 2**20:,.1f} MiB), schema revision {copy.revision}"
    )


def _verified_copy(copy: backup.Copy, skip: bool) -> int:
    """Audits what a backup or restore wrote, as `ledger-server verify` would; a copy of
    an older schema is left as it is (a server migrates it when it starts)."""
    if skip:
        print("ledger not verified (--no-verify)")
        return 0
    if copy.revision != head_revision():
        print(
            f"ledger not verified: schema revision {copy.revision}, this server's is "
            f"{head_revision()} (a server migrates it when it starts; then `ledger-server verify`)"
        )
        return 0
    engine = make_engine(f"sqlite:///{copy.path}", pool_size=2)
    store = SqlStore(engine)
    try:
        broken = _verified(store)
    finally:
        store.close()
    if broken:
        print(f"{copy.path} is a faithful copy of a ledger with {broken} violations", file=sys.stderr)
    return 1 if broken else 0


def _admin(args: argparse.Namespace) -> Admin:
    return Admin(_store(args))


def _store(args: argparse.Namespace) -> SqlStore:
    engine = make_engine(args.database_url, pool_size=2)
    upgrade(engine)
    return SqlStore(engine)


def tenants_create(args: argparse.Namespace) -> int:
    tenant = _admin(args).create_tenant(args.id, args.name)
    print(f"created tenant {tenant.id} ({tenant.name})")
    return 0


def tenants_list(args: argparse.Namespace) -> int:
    for tenant in _admin(args).list_tenants():
        print(f"{tenant.id}\t{tenant.name}\t{tenant.created_at.isoformat(timespec='seconds')}")
    return 0


def tokens_create(args: argparse.Namespace) -> int:
    expires = dt.datetime.now(dt.UTC) + _duration(args.expires_in) if args.expires_in else None
    record, secret = _admin(args).create_token(args.tenant, args.name, args.scopes.split(","), expires)
    print(secret)
    print(
        f"token tokens/{record.id} '{record.name}' for tenant {record.tenant_id}, scopes "
        f"{','.join(sorted(record.scopes))}, expires {record.expires_at or 'never'}.\n"
        "The line above is the secret: it is shown only now. Send it as `authorization: Bearer <secret>`.",
        file=sys.stderr,
    )
    return 0


def tokens_list(args: argparse.Namespace) -> int:
    for t in _admin(args).list_tokens(args.tenant):
        state = "revoked" if t.revoked_at else "active"
        expires = t.expires_at.isoformat(timespec="seconds") if t.expires_at else "never"
        print(f"{t.id}\t{t.tenant_id}\t{t.name}\t{','.join(sorted(t.scopes))}\texpires {expires}\t{state}")
    return 0


def tokens_revoke(args: argparse.Namespace) -> int:
    record = _admin(args).revoke_token(args.token_id.removeprefix("tokens/"))
    print(f"revoked token {record.id} '{record.name}' of tenant {record.tenant_id}")
    return 0


def _duration(text: str) -> dt.timedelta:
    match = re.fullmatch(r"(\d+)([smhd])", text)
    if not match:
        raise AdminError("durations look like 90s, 30m, 12h or 30d")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return dt.timedelta(**{unit: int(match.group(1))})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger-server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="serve the ledger over gRPC (migrates the database first)")
    add_options(serve_cmd)
    serve_cmd.add_argument(
        "--dev",
        action="store_true",
        help="development mode: loopback only; on a database without tokens, create a dev tenant and token",
    )
    serve_cmd.add_argument("--dev-token-file", default="var/dev-token", help="where --dev keeps its token")
    serve_cmd.set_defaults(run=serve)

    def db_command(group: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:  # type: ignore[type-arg]
        cmd: argparse.ArgumentParser = group.add_parser(name, help=help)
        add_options(cmd, ["--database-url", "--log-level"])
        return cmd

    db_command(commands, "migrate", "create or upgrade the database schema, then exit").set_defaults(
        run=migrate
    )

    db_command(
        commands, "expire", "write off expired credit lots and release lapsed holds, once"
    ).set_defaults(run=expire)
    verify_cmd = db_command(commands, "verify", "audit the ledger's invariants; exit 1 on any violation")
    verify_cmd.add_argument("--tenant", default="", help="only this tenant (default: every tenant)")
    verify_cmd.set_defaults(run=verify)

    backup_cmd = db_command(
        commands, "backup", "copy the SQLite database while the server runs, then audit the copy"
    )
    backup_cmd.add_argument("destination", help="the backup file to write (never overwritten)")
    backup_cmd.add_argument("--no-verify", action="store_true", help="skip auditing the copy")
    backup_cmd.set_defaults(run=backup_database)
    restore_cmd = db_command(
        commands, "restore", "write a backup into the SQLite database (the server stopped), then audit it"
    )
    restore_cmd.add_argument("backup", help="a file written by `ledger-server backup`")
    restore_cmd.add_argument(
        "--replace", action="store_true", help="overwrite a database that already holds a ledger"
    )
    restore_cmd.add_argument("--no-verify", action="store_true", help="skip auditing the result")
    restore_cmd.set_defaults(run=restore_database)

    tenants = commands.add_parser("tenants", help="administer tenants").add_subparsers(
        dest="action", required=True
    )
    create = db_command(tenants, "create", "create a tenant")
    create.add_argument("id", help="tenant id: lower-case letters, digits and '-'")
    create.add_argument("--name", default="", help="display name")
    create.set_defaults(run=tenants_create)
    db_command(tenants, "list", "list tenants").set_defaults(run=tenants_list)

    tokens = commands.add_parser("tokens", help="administer API tokens").add_subparsers(
        dest="action", required=True
    )
    create = db_command(tokens, "create", "create a token; prints its secret once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", required=True, help="who or what uses it, e.g. checkout-service")
    create.add_argument("--scopes", required=True, help=f"comma-separated: {','.join(sorted(SCOPES))}")
    create.add_argument("--expires-in", default="", help="e.g. 90d or 12h; default: never")
    create.set_defaults(run=tokens_create)
    listing = db_command(tokens, "list", "list tokens (never their secrets)")
    listing.add_argument("--tenant", default=None)
    listing.set_defaults(run=tokens_list)
    revoke = db_command(tokens, "revoke", "revoke a token at once")
    revoke.add_argument("token_id", help="the token id (or tokens/{id})")
    revoke.set_defaults(run=tokens_revoke)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(args.log_level)
    try:
        result: int = args.run(args)
    except (AdminError, backup.BackupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
