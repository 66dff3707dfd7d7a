"""The background worker that writes off expired credit lots and releases lapsed holds.

Nothing depends on it for correctness (writes bring their accounts up to date first and
reads leave expired credit out); it keeps history and stored balances current for
accounts nobody touches."""

from __future__ import annotations

import logging
import threading

from ledger_server.core.errors import StoreUnavailable
from ledger_server.core.ledger import Ledger
from ledger_server.metrics import Metrics
from ledger_server.os_thread import name_this_thread

log = logging.getLogger("ledger.expiry")


class ExpiryWorker:
    def __init__(self, ledger: Ledger, interval_seconds: float, metrics: Metrics | None = None) -> None:
        self._ledger = ledger
        self._metrics = metrics
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="expiry", daemon=True)

    def start(self) -> None:
        if self._interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        name_this_thread()
        while not self._stop.wait(self._interval):
            try:
                report = self._ledger.expire_due()
            except StoreUnavailable as exc:
                log.warning("expiry skipped: store unavailable", extra={"error": str(exc)})
                continue
            except Exception:  # keep the worker alive; the next round retries
                log.exception("expiry failed")
                continue
            if self._metrics is not None:
                self._metrics.expired(report.lots_expired, report.holds_voided)
            if report.accounts or report.failed:
                log.info(
                    "expired",
                    extra={
                        "accounts": report.accounts,
                        "lots_expired": report.lots_expired,
                        "holds_voided": report.holds_voided,
                        "failed": report.failed,
                    },
                )
