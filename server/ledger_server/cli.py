"""`ledger-server`: serve the ledger, or migrate its database."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from ledger_server import logs
from ledger_server.api.server import LedgerServer
from ledger_server.config import add_options, settings_from
from ledger_server.core.ledger import Ledger
from ledger_server.store.engine import make_engine
from ledger_server.store.migrate import current_revision, upgrade
from ledger_server.store.sql_store import SqlStore

log = logging.getLogger("ledger.server")


def serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    engine = make_engine(settings.database_url, pool_size=settings.workers)
    upgrade(engine)  # an empty database is created; an older one is brought to head
    store = SqlStore(engine)
    server = LedgerServer(Ledger(store), settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    host = settings.listen.rsplit(":", 1)[0]
    log.info(
        "serving",
        extra={
            "address": f"{host}:{server.port}",
            "port": server.port,
            "database": engine.url.render_as_string(),
        },
    )
    stop.wait()
    log.info("shutting down", extra={"grace_seconds": settings.grace_seconds})
    server.stop()
    store.close()
    log.info("stopped")
    return 0


def migrate(args: argparse.Namespace) -> int:
    engine = make_engine(args.database_url, pool_size=1)
    upgrade(engine)
    log.info("migrated", extra={"revision": current_revision(engine)})
    engine.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ledger-server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve the ledger over gRPC (migrates the database first)")
    add_options(serve_cmd)
    serve_cmd.set_defaults(run=serve)
    migrate_cmd = commands.add_parser("migrate", help="create or upgrade the database schema, then exit")
    add_options(migrate_cmd, ["--database-url", "--log-level"])
    migrate_cmd.set_defaults(run=migrate)
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
