"""Synchronous gRPC behaviors served by a grpc.aio server.

The servicers stay synchronous (the core blocks on group commits), but the server is
grpc.aio's: its event loop reads every request, so a call that sends its headers and never
its request message waits on the loop and holds no thread. Only once a unary call's
request has arrived does its behavior run, in a worker of the thread pool.

`asynchronous(handler, pool)` turns a method handler of synchronous behaviors with one
response (unary or client-streaming requests), or of a generator of responses to one
request, into one of coroutines with the same (de)serializers; other streams (health
Watch, reflection) are served by asyncio-native servicers instead. Each call runs in a
fresh contextvars.Context, so the context variables it sets (the caller, the deadline)
never leak into other calls. The behaviors get a `SyncContext`, a grpc.ServicerContext
for a worker thread: codes, details, trailing metadata and aborts are recorded there and
applied to the grpc.aio context on the loop once the behavior has returned.

One event loop serves every LedgerServer of the process (`shared_loop`): grpc.aio anchors
its completion queue to the loop it first runs on, so that loop must outlive them all. It
is uvloop's: the loop runs every call's callbacks, and uvloop's (C) cost ~9-10 % fewer
instructions per CreateTransaction than asyncio's own (docs/performance.md)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

import grpc
import grpc.aio
import uvloop

from ledger_server.call_greenlet import await_, in_call_greenlet, run_in_greenlet
from ledger_server.os_thread import name_this_thread

T = TypeVar("T")
Metadata = tuple[tuple[str, str | bytes], ...]
_END = object()  # the end of a stream, where an iterator would raise StopIteration


# -- the one event loop ----------------------------------------------------------------

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def shared_loop() -> asyncio.AbstractEventLoop:
    """The process's grpc.aio event loop, running in a daemon thread from its first use."""
    global _loop  # noqa: PLW0603 -- one per process, by design
    with _loop_lock:
        if _loop is None:
            loop = uvloop.new_event_loop()
            started = threading.Event()

            def run() -> None:
                name_this_thread()
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name="grpc-aio-loop", daemon=True).start()
            started.wait()
            _loop = loop
        return _loop


def _forget_loop() -> None:  # a forked child has the loop object but not its thread
    global _loop  # noqa: PLW0603
    _loop = None


os.register_at_fork(after_in_child=_forget_loop)


def run_on_loop(coroutine: Any, timeout: float | None = None) -> Any:
    """Run a coroutine on the shared loop from any other thread and return its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, shared_loop()).result(timeout)


# -- the context a synchronous behavior sees ------------------------------------------


class _Aborted(Exception):
    """Raised in a worker by SyncContext.abort; the loop then sends the status."""


class SyncContext:
    """The grpc.ServicerContext of a synchronous behavior running in a worker thread.
    Reads go to the grpc.aio context; writes are recorded and applied by `settle` on the
    loop, like the threaded server's context they take effect when the behavior ends."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], loop: asyncio.AbstractEventLoop) -> None:
        self._context = context
        self._loop = loop
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._trailing: Metadata | None = None
        self._aborted = False

    # What the behaviors read.
    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata() or ()

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def peer(self) -> str:
        return self._context.peer()

    def peer_identities(self) -> Iterable[bytes] | None:
        return self._context.peer_identities()

    def peer_identity_key(self) -> str | None:
        return self._context.peer_identity_key()

    def auth_context(self) -> Any:
        return self._context.auth_context()

    def is_active(self) -> bool:
        return not self._context.done()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """`callback` runs (on the loop) once the call has ended, whichever way."""
        self._context.add_done_callback(lambda _: callback())  # type: ignore[arg-type]
        return True

    # What the behaviors write.
    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str | None:
        return self._details

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> Metadata | None:
        return self._trailing

    def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        self._code, self._details, self._aborted = code, details, True
        raise _Aborted(f"{code.name}: {details}")

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        self.set_trailing_metadata(status.trailing_metadata)
        self.abort(status.code, status.details)

    def send_initial_metadata(self, initial_metadata: Metadata) -> None:
        wait_on_loop(self._context.send_initial_metadata(initial_metadata), self._loop)

    def set_compression(self, compression: grpc.Compression) -> None:
        self._context.set_compression(compression)

    def disable_next_message_compression(self) -> None:
        self._context.disable_next_message_compression()

    async def settle(self) -> None:
        """On the loop, after a step: hand what the behavior set to grpc.aio; an abort
        sends its status now (and raises grpc.aio's AbortError, which ends the call)."""
        if self._trailing is not None:
            self._context.set_trailing_metadata(self._trailing)
        if self._aborted:
            assert self._code is not None
            await self._context.abort(self._code, self._details or "", self._trailing or ())
        if self._code is not None:
            self._context.set_code(self._code)
        if self._details is not None:
            self._context.set_details(self._details)


# -- synchronous behaviors as coroutines ------------------------------------------------


class _Requests(Iterator[Any]):
    """The synchronous request iterator of a client-streaming call: each message is read
    by the loop while the worker waits for it."""

    def __init__(self, requests: AsyncIterator[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._requests = requests
        self._loop = loop

    async def _read(self) -> Any:
        try:
            return await anext(self._requests)
        except StopAsyncIteration:
            return _END

    def __next__(self) -> Any:
        message = wait_on_loop(self._read(), self._loop)
        if message is _END:
            raise StopIteration
        return message


def wait_on_loop(coroutine: Any, loop: asyncio.AbstractEventLoop) -> Any:
    """A coroutine's result, from a behavior in a worker thread or in a call greenlet."""
    if in_call_greenlet():
        return await_(coroutine)
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


def _unary_response(
    behavior: Callable[..., Any], streaming_requests: bool, pool: ThreadPoolExecutor | None
) -> Any:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        loop = asyncio.get_running_loop()
        sync = SyncContext(context, loop)
        argument = _Requests(request, loop) if streaming_requests else request
        response = None
        with contextlib.suppress(_Aborted):  # settle() sends the status
            if pool is None:
                response = await run_in_greenlet(contextvars.Context().run, behavior, argument, sync)
            else:
                work = pool.submit(contextvars.Context().run, behavior, argument, sync)
                response = await asyncio.wrap_future(work, loop=loop)
        await sync.settle()
        return response

    return call


def _streamed_responses(behavior: Callable[..., Generator[Any, None, None]]) -> Any:
    """A server-streaming behavior (a generator) run step by step in a call greenlet, each
    response written by the loop: a stream waits between its messages without a thread.
    The generator spans the whole call, so the interceptor's work around it (the caller,
    the log line) does too; a cancellation is thrown into it wherever it is."""

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        sync = SyncContext(context, asyncio.get_running_loop())
        run = contextvars.Context().run  # one Context for every step of the generator
        responses = run(behavior, request, sync)  # runs nothing yet
        with contextlib.suppress(_Aborted):  # settle() sends the status
            try:
                while (response := await run_in_greenlet(run, next, responses, _END)) is not _END:
                    await context.write(response)
            except asyncio.CancelledError:
                # Cancelled while the loop wrote a response (a generator that was waiting
                # has ended with the exception already): end it here, as cancelled.
                with contextlib.suppress(BaseException):
                    run(responses.throw, asyncio.CancelledError())
                raise
        await sync.settle()

    return call


def asynchronous(
    handler: grpc.RpcMethodHandler[Any, Any], pool: ThreadPoolExecutor | None
) -> grpc.RpcMethodHandler[Any, Any]:
    """The handler with each synchronous behavior run by a coroutine: in `pool`, or with
    None in a greenlet on the loop (call_greenlet.py: for behaviors that never block but
    through it). Streaming responses run in greenlets only."""
    h: Any = handler  # gRPC's namedtuple; the stubs type it loosely
    if h.unary_unary:
        return h._replace(unary_unary=_unary_response(h.unary_unary, False, pool))  # type: ignore[no-any-return]
    if h.stream_unary:
        return h._replace(stream_unary=_unary_response(h.stream_unary, True, pool))  # type: ignore[no-any-return]
    if h.unary_stream and pool is None:
        return h._replace(unary_stream=_streamed_responses(h.unary_stream))  # type: ignore[no-any-return]
    # Other streams (health Watch, reflection) are served by asyncio-native servicers.
    raise TypeError("the bridge serves single responses, and response streams in greenlets")
