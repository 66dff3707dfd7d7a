"""Server settings: each one a command-line flag with an environment variable default.
The table here is the one the README's configuration section documents."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    default: str
    kind: type
    help: str


OPTIONS = [
    Option(
        "--listen", "LEDGER_LISTEN", "127.0.0.1:50051", str, "host:port to serve gRPC on (port 0 picks one)"
    ),
    Option(
        "--database-url",
        "LEDGER_DATABASE_URL",
        "sqlite:///var/ledger.db",
        str,
        "SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user@host:5432/db",
    ),
    Option("--log-level", "LEDGER_LOG_LEVEL", "INFO", str, "DEBUG, INFO, WARNING or ERROR"),
    Option(
        "--drain-seconds",
        "LEDGER_DRAIN_SECONDS",
        "1",
        float,
        "on SIGTERM/SIGINT, how long health says NOT_SERVING and new calls get UNAVAILABLE before stopping",
    ),
    Option(
        "--grace-seconds", "LEDGER_GRACE_SECONDS", "10", float, "then, time in-flight calls get to finish"
    ),
    Option(
        "--workers",
        "LEDGER_WORKERS",
        "64",
        int,
        "RPC worker threads; they mostly wait for group commits, so more in flight batch better",
    ),
    Option(
        "--db-pool-size",
        "LEDGER_DB_POOL_SIZE",
        "16",
        int,
        "database connections, shared by reads and the writers; calls beyond it wait for one",
    ),
    Option(
        "--writers",
        "LEDGER_WRITERS",
        "4",
        int,
        "Postgres group-commit writer threads, each on its own accounts (SQLite always uses 1)",
    ),
    Option(
        "--max-concurrent-rpcs",
        "LEDGER_MAX_CONCURRENT_RPCS",
        "2048",
        int,
        "calls beyond this many in flight are refused with RESOURCE_EXHAUSTED",
    ),
    Option(
        "--max-calls-per-tenant",
        "LEDGER_MAX_CALLS_PER_TENANT",
        "0",
        int,
        "calls of one tenant in flight at once; more are refused with RESOURCE_EXHAUSTED (0: no limit)",
    ),
    Option(
        "--max-streams-per-connection",
        "LEDGER_MAX_STREAMS_PER_CONNECTION",
        "128",
        int,
        "calls in flight on one client connection (HTTP/2 streams); more wait in the client",
    ),
    Option(
        "--max-message-bytes",
        "LEDGER_MAX_MESSAGE_BYTES",
        str(4 * 1024 * 1024),
        int,
        "largest request or response message accepted",
    ),
    Option(
        "--token-cache-seconds",
        "LEDGER_TOKEN_CACHE_SECONDS",
        "2",
        float,
        "how long a token lookup is cached: a revocation takes effect within this time",
    ),
    Option(
        "--expiry-seconds",
        "LEDGER_EXPIRY_SECONDS",
        "30",
        float,
        "how often expired credit lots are written off and lapsed holds released (0: never; see `expire`)",
    ),
    Option(
        "--health-probe-seconds",
        "LEDGER_HEALTH_PROBE_SECONDS",
        "1",
        float,
        "how often the server pings its database; health says NOT_SERVING while it does not answer",
    ),
    Option(
        "--watch-poll-seconds",
        "LEDGER_WATCH_POLL_SECONDS",
        "1",
        float,
        "how often an open WatchTransactionChanges stream reads the feed with nothing to wake it: what "
        "other processes' commits wait at most on SQLite (Postgres announces them)",
    ),
    Option("--tls-cert", "LEDGER_TLS_CERT", "", str, "PEM certificate chain: serve TLS instead of plaintext"),
    Option("--tls-key", "LEDGER_TLS_KEY", "", str, "PEM private key of --tls-cert"),
    Option(
        "--tls-client-ca",
        "LEDGER_TLS_CLIENT_CA",
        "",
        str,
        "PEM CA bundle: require client certificates signed by it (mutual TLS)",
    ),
    Option(
        "--metrics-listen",
        "LEDGER_METRICS_LISTEN",
        "",
        str,
        "host:port to serve Prometheus metrics on at /metrics, plain HTTP (empty: none; port 0 picks one)",
    ),
]


@dataclass(frozen=True)
class Settings:
    listen: str
    database_url: str
    log_level: str
    drain_seconds: float
    grace_seconds: float
    workers: int
    db_pool_size: int
    writers: int
    max_concurrent_rpcs: int
    max_message_bytes: int
    token_cache_seconds: float = 2.0
    max_streams_per_connection: int = 128
    expiry_seconds: float = 30.0
    health_probe_seconds: float = 1.0
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    metrics_listen: str = ""
    max_calls_per_tenant: int = 0
    watch_poll_seconds: float = 1.0


def add_options(parser: argparse.ArgumentParser, names: list[str] | None = None) -> None:
    for opt in OPTIONS:
        if names is None or opt.flag in names:
            parser.add_argument(
                opt.flag,
                type=opt.kind,
                default=opt.kind(os.environ.get(opt.env, opt.default)),
                help=f"{opt.help} (env {opt.env}, default {opt.default})",
            )


def settings_from(args: argparse.Namespace) -> Settings:
    names = (opt.flag[2:].replace("-", "_") for opt in OPTIONS)
    return Settings(**{name: getattr(args, name) for name in names})
