"""BatchRunner: requests that arrive while one batch is in the database join the next one.

The socket path's database work (storing messages, authenticating and loading
a connection's chats) goes through runners like this instead of one
`database_sync_to_async` call per request: under load one query or one
transaction serves hundreds of requests, and an idle server answers a lone
request within the loop's turn. Each runner owns one worker thread, and so one database
connection (Django's connections are per thread), which it keeps open whatever
CONN_MAX_AGE says (that setting is for request threads, which come and go under
ASGI); a connection the database broke is dropped and comes back on the next
batch.
"""

import asyncio
import contextlib
import functools
import logging
import threading
import weakref
from collections import deque
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
    """Runs `handle(items) -> results` (one result or exception per item) on its own thread.

    The thread takes its batches itself: the moment one batch is done it takes everything
    that arrived meanwhile (up to `max_batch`), without waiting for the event loop to hand it
    over, and it hands the results back to the loop in one callback per batch. Under load the
    event loop is busy fanning out the last batch; a hand-over through it cost the message
    writer about a third of its time idle between batches (docs/benchmarks.md, 2026-12-04f).
    While nothing is pending the thread is returned to its one-thread executor (which joins
    it at exit), and the next requests start it again at the end of the loop's turn in which
    they came, together."""

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
        self.pending: deque[tuple[object, asyncio.Future]] = deque()
        self.lock = threading.Lock()
        self.draining = False  # a `_drain` is on the thread, or submitted to it
        # The loop on which a `_start` is queued (see `enqueue`), if any.
        self.starting: asyncio.AbstractEventLoop | None = None
        _runners.add(self)

    async def submit(self, item):
        """The result for `item`, once the batch it joined has run; raises the item's exception."""
        return await self.enqueue(item)

    def enqueue(self, item) -> asyncio.Future:
        """`submit` without waiting: the future of `item`'s result. Items are handled, and their
        futures resolved, in the order they were enqueued."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self.lock:
            self.pending.append((item, future))
            if self.draining:
                return future  # the thread takes it with its next batch
            if self.starting is not None and self.starting.is_running():
                return future  # a start is queued on a live loop
            self.starting = loop
        # The thread starts at the end of this turn of the loop, not at once, so the requests
        # of one turn (a burst of handshakes read together) go in one batch: one thread
        # hop, one query and one hand-back for all of them.
        loop.call_soon(self._start)
        return future

    def _start(self) -> None:
        with self.lock:
            self.starting = None
            if self.draining or not self.pending:
                return
            self.draining = True
        try:
            self.executor.submit(self._drain)
        except RuntimeError as exc:  # the executor is shut down (the interpreter is exiting)
            with self.lock:
                self.draining = False
                batch, self.pending = list(self.pending), deque()
            self._hand_back(batch, [exc] * len(batch))

    def _drain(self) -> None:
        """On the runner's thread: batch after batch until nothing is pending."""
        try:
            self._batches()
        except BaseException:
            with self.lock:
                self.draining = False  # the next request starts a drain again
            raise

    def _batches(self) -> None:
        while True:
            with self.lock:
                if not self.pending:
                    self.draining = False
                    return
                batch = [
                    self.pending.popleft() for _ in range(min(self.max_batch, len(self.pending)))
                ]
            items = [item for item, _ in batch]
            try:
                results = self._call(items)
            except Exception as exc:  # the whole batch failed: each caller hears why
                logger.warning("%s: a batch of %d failed: %r", self.name, len(items), exc)
                results = [exc] * len(items)
            self._hand_back(batch, results)

    def _hand_back(self, batch: list, results: list) -> None:
        """Resolve the batch's futures on their loop (one callback per loop per batch)."""
        by_loop: dict[asyncio.AbstractEventLoop, tuple[list, list]] = {}
        for entry, result in zip(batch, results, strict=True):
            entries, values = by_loop.setdefault(entry[1].get_loop(), ([], []))
            entries.append(entry)
            values.append(result)
        for loop, (entries, values) in by_loop.items():
            resolve = functools.partial(_resolve, entries, values)
            if self.corked_wakeups:
                resolve = functools.partial(corked_wakeups, loop, resolve)
            # A closed loop (a test's, gone) raises: nobody waits for these any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(resolve)

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

    def __init__(self, handle, *, name: str, max_batch: int = 1000, corked_wakeups: bool = False):
        """`corked_wakeups`: as for `BatchRunner`."""
        self.handle = handle
        self.name = name
        self.max_batch = max_batch
        self.corked_wakeups = corked_wakeups
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
            if self.corked_wakeups:
                corked_wakeups(
                    asyncio.get_running_loop(), functools.partial(_resolve, batch, results)
                )
            else:
                _resolve(batch, results)
