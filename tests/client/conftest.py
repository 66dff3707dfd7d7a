"""The client tests' fixtures."""

from __future__ import annotations

import pytest
from ledger_client import LedgerClient

from tests.blocking_view import ClientFactory, asyncio_client


@pytest.fixture(params=["blocking", "asyncio"])
def make_client(request: pytest.FixtureRequest) -> ClientFactory:
    """Each test that makes its client with this runs against LedgerClient and against
    AsyncLedgerClient (seen through BlockingView): the blocking client is written from the
    asyncio one, and these tests show the two behave alike."""
    return LedgerClient if request.param == "blocking" else asyncio_client
