"""BatchRunner: requests that arrive while one batch is in the database join the next one.

The socket path's database work (storing messages, authenticating and loading
a connection's chats) goes through runners like this instead of one
`database_sync_to_async` call per request: under load one query or one
transaction serves hundreds of requests, and an idle server answers a lone
request at once. Each runner owns one worker thread, and so one database
connection (Django's connections are per thread), which it keeps open whatever
CONN_MAX_AGE says (that setting is for request threads, which come and go under
ASGI); a connection the database broke is dropped and comes back on the next
batch.
"""

import asyncio
import functools
import logging
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.db import connections

from biogram.logging import process_task
from messaging.realtime.wire import corked_wakeups

logger = logging.getLogger(__name__)

_runners: "weakref.WeakSet[BatchRunner]" = weakref.WeakSet()


def close_connections() -> None:
    """Close every runner thread's database connections (before a test database is dropped)."""
    for runner in list(_runners):
        runner.executor.submit(connections.close_all).result()


class BatchRunner:
    """Runs `handle(items) -> results` (one result or exception per item) on its own thread."""

    def __init__(
        self,
        handle: Callable[[list], list],
        *,
        name: str,
        max_batch: int = 500,
        corked_wakeups: bool = False,
    ):
        """`corked_wakeups`: the tasks waiting on a batch resume inside one `wire.corked` span,
        so the frames they write to one socket go out in one `write` (`wire.corked_wakeups`)."""
        self.handle = handle
        self.name = name
        self.max_batch = max_batch
        self.corked_wakeups = corked_wakeups
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pending: list = []
        self.wakeup: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        _runners.add(self)

    async def submit(self, item):
        """The result for `item`, once the batch it joined has run; raises the item's exception."""
        return await self.enqueue(item)

    def enqueue(self, item) -> asyncio.Future:
        """`submit` without waiting: the future of `item`'s result. Items are handled, and their
        futures resolved, in the order they were enqueued."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop or self.task is None or self.task.done():
            self._start(loop)
        future = loop.create_future()
        self.pending.append((item, future))
        self.wakeup.set()
        return future

    def _start(self, loop) -> None:
        # A new event loop (each test has its own) or a runner task that died: start afresh.
        self.loop = loop
        self.pending = []
        self.wakeup = asyncio.Event()
        self.task = process_task(loop, self._run(), name=self.name)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wakeup.wait()
            # One more turn of the loop lets requests already on their way join this batch.
            await asyncio.sleep(0)
            self.wakeup.clear()
            while self.pending:
                batch = self.pending[: self.max_batch]
                del self.pending[: self.max_batch]
                items = [item for item, _ in batch]
                try:
                    results = await loop.run_in_executor(self.executor, self._call, items)
                except Exception as exc:  # the whole batch failed: each caller hears why
                    if asyncio.current_task().cancelling():
                        raise asyncio.CancelledError from exc
                    logger.warning("%s: a batch of %d failed: %r", self.name, len(items), exc)
                    results = [exc] * len(items)
                if self.corked_wakeups:
                    corked_wakeups(loop, functools.partial(_resolve, batch, results))
                else:
                    _resolve(batch, results)

    def _call(self, items: list) -> list:
        _drop_broken_connections()
        try:
            return self.handle(items)
        finally:
            _drop_broken_connections()


def _resolve(batch: list, results: list) -> None:
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():  # the caller went away (socket closed)
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def _drop_broken_connections() -> None:
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and connection.errors_occurred:
            if connection.in_atomic_block or not connection.is_usable():
                connection.close()
            else:
                connection.errors_occurred = False


class CallRunner(BatchRunner):
    """A BatchRunner for assorted calls: `await runner.call(function, *args, **kwargs)`.

    Calls that arrive together run one after the other in one thread hop.
    """

    def __init__(self, *, name: str, max_batch: int = 100):
        super().__init__(self._run_calls, name=name, max_batch=max_batch)

    async def call(self, function, *args, **kwargs):
        return await self.submit((function, args, kwargs))

    @staticmethod
    def _run_calls(calls: list) -> list:
        results = []
        for function, args, kwargs in calls:
            try:
                results.append(function(*args, **kwargs))
            except Exception as exc:
                results.append(exc)
        return results


class LoopBatch:
    """`handle(items) -> results` as a coroutine on the event loop (a Redis pipeline): items
    submitted while one batch is on its way go together in the next; an exception of the batch
    is every item's."""

    def __init__(self, handle, *, name: str, max_batch: int = 1000):
        self.handle = handle
        self.name = name
        self.max_batch = max_batch
        self.pending: list = []
        self.task: asyncio.Task | None = None
        self.batches = 0  # batches run (what tests and a profile look at)

    async def submit(self, item):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((item, future))
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            # Items of another loop's batch that never ran (that loop is gone) are dropped.
            self.pending = [entry for entry in self.pending if entry[1].get_loop() is loop]
            self.task = process_task(loop, self._drain(), name=self.name)
        return await future

    async def _drain(self) -> None:
        while self.pending:
            batch, self.pending = (
                self.pending[: self.max_batch],
                self.pending[self.max_batch :],
            )
            self.batches += 1
            try:
                results = await self.handle([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()  # nobody waits on a batch that will never answer
                raise
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
