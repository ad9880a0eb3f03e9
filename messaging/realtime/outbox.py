"""Outbox: one socket's outgoing frames, in order, without a task per frame.

Fan-out calls `push` synchronously for every member (docs/benchmarks.md: a
task or a consumer wake-up per delivery is what caps Channels near 2,000
deliveries/s). `push` starts the ASGI `send` coroutine by hand: uvicorn's
`send` finishes without suspending while the transport accepts data, so a frame
usually leaves before `push` returns. Only when a send has to wait (the
client's TCP window is full) does a task take over; it finishes that send and
then sends what queued meanwhile. The queue is bounded: a client that stops
reading overflows it and is dropped (`on_overflow`), so it never holds up the
fan-out or grows the server's memory.

On uvicorn with `ChatWebSocketProtocol` (messaging/realtime/wire.py) a frame
skips the `send` coroutine altogether: its bytes, framed once for all the
members it goes to, are written straight to the transport when nothing is
queued before it and the socket would have taken a `send` at once.
"""

import asyncio
import logging
import types
from collections import deque
from collections.abc import Awaitable, Callable

from messaging.realtime.wire import prepared

logger = logging.getLogger(__name__)


class Outbox:
    __slots__ = ("closed", "limit", "on_overflow", "queue", "send", "task", "write_prepared")

    def __init__(
        self,
        send: Callable[[dict], Awaitable[None]],
        *,
        limit: int,
        on_overflow: Callable[[], None],
        write_prepared: Callable[[bytes], bool] | None = None,
    ):
        self.send = send
        self.write_prepared = write_prepared
        self.limit = limit
        self.on_overflow = on_overflow
        self.queue: deque[dict] = deque()
        self.task: asyncio.Task | None = None
        self.closed = False

    def push(self, text: str, frame: bytes | None = None) -> None:
        """Send a text frame after those pushed before it (`frame`: `text` framed already)."""
        if self.closed:
            return
        if (
            self.task is None
            and self.write_prepared is not None
            and self.write_prepared(frame or prepared(text))
        ):
            return  # written: the common case on uvicorn
        self._put({"type": "websocket.send", "text": text})

    def close(self, code: int) -> None:
        """Close the socket after the frames already pushed; later pushes are dropped."""
        if not self.closed:
            self._put({"type": "websocket.close", "code": code})
            self.closed = True

    def abandon(self) -> None:
        """Drop everything not yet sent (the client went away or is being dropped)."""
        self.closed = True
        self.queue.clear()

    async def flushed(self) -> None:
        """Wait until everything pushed so far has been handed to the server."""
        while self.task is not None:
            await asyncio.shield(self.task)

    @property
    def backlog(self) -> int:
        return len(self.queue)

    def _put(self, message: dict) -> None:
        if self.task is not None:
            if len(self.queue) >= self.limit:
                self.abandon()
                self.on_overflow()
                return
            self.queue.append(message)
            return
        coroutine = self.send(message)
        try:
            waiting_on = coroutine.send(None)
        except StopIteration:
            return  # sent without waiting: the common case
        except Exception as exc:
            self._failed(exc)
            return
        self.task = asyncio.get_running_loop().create_task(self._drain(coroutine, waiting_on))

    async def _drain(self, coroutine, waiting_on) -> None:
        try:
            await _resume(coroutine, waiting_on)
            while self.queue:
                await self.send(self.queue.popleft())
        except Exception as exc:
            self._failed(exc)
        finally:
            self.task = None

    def _failed(self, exc: Exception) -> None:
        # The client is gone (uvicorn raises ClientDisconnected): nothing more can be sent.
        logger.debug("send failed: %r", exc)
        self.abandon()


@types.coroutine
def _resume(coroutine, waiting_on):
    """Finish, inside a task, a coroutine that was started by hand and suspended on `waiting_on`."""
    while True:
        try:
            value = yield waiting_on
        except BaseException as exc:  # cancellation or an error thrown in by the task
            try:
                waiting_on = coroutine.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            waiting_on = coroutine.send(value)
        except StopIteration as stop:
            return stop.value
