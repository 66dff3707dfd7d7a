"""An AsyncLedgerClient behind the blocking client's interface, so that the blocking
client's tests run against the asyncio one unchanged: the client lives on an event loop
in a thread of its own, each method is awaited there, and each iterator is advanced
there one item (so one page call) at a time."""

from __future__ import annotations

import asyncio
import inspect
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar, cast

from ledger_client import AsyncLedgerClient, LedgerClient

T = TypeVar("T")
ClientFactory = Callable[..., LedgerClient]


class BlockingView:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="async-client", daemon=True)
        self._thread.start()
        # The loop outlives close() (a closed client must still refuse calls) and stops
        # when the view is collected.
        self._stop = weakref.finalize(self, _stop, self._loop, self._thread)
        # grpc.aio channels belong to the loop they are made on.
        self._client: AsyncLedgerClient = self._run(_make(args, kwargs))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        if name == "_client":  # not made (its constructor raised): no recursion
            raise AttributeError(name)
        attribute = getattr(self._client, name)
        if inspect.iscoroutinefunction(attribute):
            return lambda *args, **kwargs: self._run(attribute(*args, **kwargs))
        if name.startswith(("iter_", "watch_")):
            return lambda *args, **kwargs: self._iterate(attribute(*args, **kwargs))
        return attribute

    def _iterate(self, items: AsyncGenerator[T, None]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._run(_next(items))
                except StopAsyncIteration:
                    return
        finally:  # closed early: so is the async iterator (a watch's stream ends), unwaited
            if self._loop.is_running():  # for: the view may be closing, its loop stopping
                asyncio.run_coroutine_threadsafe(items.aclose(), self._loop)

    def close(self) -> None:
        self._run(self._client.close())
        self._run(_settled())  # the steps the close cancelled (a watch's) end before the loop can stop

    def __enter__(self) -> BlockingView:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        self._stop()


def asyncio_client(*args: Any, **kwargs: Any) -> LedgerClient:
    """An AsyncLedgerClient made with these arguments, used as a LedgerClient is."""
    return cast(LedgerClient, BlockingView(*args, **kwargs))


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


async def _settled() -> None:
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=10)


async def _make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> AsyncLedgerClient:
    return AsyncLedgerClient(*args, **kwargs)


async def _next(items: AsyncIterator[T]) -> T:
    return await anext(items)
