"""SocketConsumer: the connection loop and outbox a chat consumer stands on, in place of Channels' own.

What it replaces from Channels, and why (docs/benchmarks.md has the numbers):

- `AsyncConsumer.__call__` and `await_many_dispatch`: Channels runs a task per
  connection to read the layer's queue and, since 4.2, a `close_old_connections`
  thread hop on every event. Here the loop reads only the ASGI `receive`; the
  channel layer hands group events to `on_event` synchronously (`attach`), so
  a delivery needs no queue, no task and no thread.
- `send`, `accept` and `close`: every outgoing frame goes through the
  socket's `Outbox`, in order, and a client that stops reading is dropped when
  its outbox overflows. Channels' `send`/`close` would write around the outbox
  (out of order, unbounded), so they are refused here: use `send_frame` and
  `close_with`.

It also reads the protocol's frames: the size limit (1009), one parse
(`protocol.parse_frame`), a handler per frame type (`on_<type>`), and the
`error` frame for every refusal a handler raises (`MessagingError`), so a
subclass's handlers hold only what the frame means. Subclasses implement
`connect`, `disconnect(code)`, `on_event(event)` and their `on_<type>`
handlers.
"""

import asyncio
import functools
import logging
from collections import Counter

from channels.consumer import AsyncConsumer
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError

from biogram import logging as biogram_logging
from messaging import metrics, protocol
from messaging.errors import BadRequest, MessagingError, Unavailable
from messaging.realtime import daphne_compat
from messaging.realtime.outbox import Outbox
from messaging.realtime.wire import PREPARED_FRAMES, corked

logger = logging.getLogger(__name__)

# A burst's frames per `write`: a few tens of KB, so the transport's flow control (it pauses
# past 64 KB) still paces a long replay.
BURST_FRAMES = 64

CLOSE_TOO_BIG = 1009
CLOSE_SLOW_CLIENT = 4009  # counted in metrics and logs; the client sees 1006 (no close frame)


class SocketConsumer(AsyncConsumer):
    """One WebSocket connection: reads ASGI events, writes through a bounded outbox."""

    # Frame type -> the pipeline (a batch writer) its handler hands its work to with
    # `pipelined`, reading the next frames meanwhile; see `in_order`.
    pipelined_frames: dict[str, str] = {}
    # Pipelines whose answers need not keep their place among the others' (but do among
    # their own, and before any frame not pipelined).
    unordered_pipelines: frozenset[str] = frozenset()
    pipeline: str | None = None  # the pipeline of the frame being handled

    async def __call__(self, scope, receive, send):
        daphne_compat.install_if_daphne()
        self.scope = scope
        self.base_send = send
        self.outbox = Outbox(
            send,
            limit=settings.WS_OUTBOX_LIMIT,
            on_overflow=self._overflowed,
            write_prepared=scope.get("extensions", {}).get(PREPARED_FRAMES),
        )
        self.channel_layer = get_channel_layer()
        self.channel_name = await self.channel_layer.new_channel()
        self.main_task = asyncio.current_task()
        self.closing = False
        self.dropped = False
        self.in_flight: dict[asyncio.Future, str | None] = {}  # -> its pipeline
        self.lanes: Counter = Counter()  # pipeline -> frames in flight
        self.pipeline_limit = settings.WS_PIPELINE
        self.channel_layer.attach(self.channel_name, self.on_event)
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    await self.receive(message.get("text"), message.get("bytes"))
                elif kind == "websocket.connect":
                    await self.connect()
                elif kind == "websocket.disconnect":
                    await self.disconnect(message.get("code", 1005))
                    return
        except StopConsumer:
            return
        except asyncio.CancelledError:
            if not self.dropped:
                raise
            await self.disconnect(CLOSE_SLOW_CLIENT)  # the slow client is let go: clean up
        finally:
            self.channel_layer.detach(self.channel_name)
            self.outbox.abandon()
            if self.outbox.task is not None:
                self.outbox.task.cancel()
            for future in list(self.in_flight):
                if isinstance(future, asyncio.Task):
                    future.cancel()  # work of this socket's own (a writer's stores go on)

    # ------------------------------------------------------------ what subclasses implement

    async def connect(self) -> None:
        raise NotImplementedError

    async def disconnect(self, code: int) -> None:
        raise NotImplementedError

    def on_event(self, event: dict) -> None:
        """Every channel-layer event for this connection, in order, synchronously."""
        raise NotImplementedError

    def ready_for_frames(self) -> bool:
        """Whether frames are read now (False before authentication, after a refusal)."""
        return not self.closing

    # ------------------------------------------------------------ reading frames

    async def receive(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if not self.ready_for_frames():
            return
        limit = settings.WS_MAX_FRAME_BYTES
        if text_data is None:
            await self.in_order()
            if len(bytes_data or b"") > limit:
                self.close_with(CLOSE_TOO_BIG)
            else:
                self.send_error(
                    BadRequest("Binary frames are not supported; send JSON text."), None
                )
            return
        if len(text_data) > limit or (
            len(text_data) * 4 > limit and len(text_data.encode("utf-8", "surrogatepass")) > limit
        ):
            await self.in_order()
            self.close_with(CLOSE_TOO_BIG)
            return
        try:
            frame = protocol.parse_frame(text_data)
        except protocol.FrameError as error:
            metrics.frames_in("invalid").inc()
            await self.in_order()
            self.send_error(error, error.ref)
            return
        metrics.frames_in(frame.type_name).inc()
        chat_id = getattr(frame, "chat_id", None)
        context = None if chat_id is None else biogram_logging.bind(chat_id=str(chat_id))
        log = logging.getLogger(type(self).__module__)
        log.debug("frame %s", frame.type_name)
        try:
            await self.in_order(self.pipelined_frames.get(frame.type_name))
            await getattr(self, f"on_{frame.type_name}")(frame)
        except MessagingError as error:
            await self.in_order()
            self.refuse(error, protocol.frame_ref(frame))
        except DatabaseError:
            log.warning("database error on %s frame", frame.type_name, exc_info=True)
            self.send_error(Unavailable(), protocol.frame_ref(frame))
        except Exception:
            log.exception("unexpected error on %s frame", frame.type_name)
            self.send_error(Unavailable("Internal error; try again."), protocol.frame_ref(frame))
        finally:
            if context is not None:
                biogram_logging.socket_context.reset(context)

    async def in_order(self, pipeline: str | None = None) -> None:
        """Before a frame is handled: the answers of the pipelined frames before it go first,
        unless it joins them (a frame of the same `pipeline`: one writer, which keeps their
        order) or either pipeline is one of `unordered_pipelines`. So a client sees its
        answers in the order of its frames."""
        if self.in_flight and pipeline != self.pipeline:
            if pipeline is None:
                await self.pipeline_drained()
            elif any(
                count and self.ordered(other, pipeline) for other, count in self.lanes.items()
            ):
                await self.pipeline_drained(lambda other: self.ordered(other, pipeline))
        self.pipeline = pipeline

    def ordered(self, earlier: str | None, later: str) -> bool:
        """Whether a frame of pipeline `later` waits for the answers of `earlier`'s."""
        return earlier != later and not {earlier, later} & self.unordered_pipelines

    def send_error(self, error: MessagingError, ref) -> None:
        metrics.ERRORS.labels(code=error.code).inc()
        self.send_frame(
            protocol.error_frame(code=error.code, message=error.message, ref=ref, **error.extra)
        )

    def refuse(self, error: MessagingError, ref=None, *, close_code: int | None = None) -> None:
        """The `error` frame; then, for an error that ends the socket, `disconnect` and the close."""
        self.send_error(error, ref)
        if error.closing_reason is not None:
            self.say_goodbye(error.closing_reason)
        if close_code or error.close_code:
            self.close_with(close_code or error.close_code)

    def say_goodbye(self, reason: str) -> None:
        """`disconnect` with the reason the server is about to close this socket."""
        raise NotImplementedError

    # ------------------------------------------------------------ pipelined frames

    async def pipelined(
        self, future: asyncio.Future, ref, on_result, *, failure: MessagingError
    ) -> None:
        """Read the next frames while this one's work (`future`, from a batch writer) is done.

        Its result goes to `on_result`, or its refusal to the client as an `error` frame with
        `ref` (`failure` when the error is not a refusal: nothing was stored), when it comes:
        in the order the frames were sent, since the writer resolves its futures in the order
        they were enqueued. A client that sends faster than the database stores has at most
        WS_PIPELINE frames on their way; past that this socket is not read until one is done,
        which holds back that client alone.
        """
        self.in_flight[future] = self.pipeline
        self.lanes[self.pipeline] += 1
        future.add_done_callback(
            functools.partial(self._settled, ref=ref, on_result=on_result, failure=failure)
        )
        if len(self.in_flight) >= self.pipeline_limit:
            # The oldest is answered first (a writer resolves in the order enqueued).
            await asyncio.wait([next(iter(self.in_flight))])

    async def pipeline_drained(self, which=None) -> None:
        """Wait until the answers of every pipelined frame (of the pipelines `which` accepts)
        have been sent."""
        while waiting := [f for f, p in self.in_flight.items() if which is None or which(p)]:
            await asyncio.wait(waiting)

    def _settled(self, future: asyncio.Future, *, ref, on_result, failure) -> None:
        self.lanes[self.in_flight.pop(future)] -= 1
        if future.cancelled():
            return
        error = future.exception()
        try:
            if error is None:
                on_result(future.result())
            elif isinstance(error, MessagingError):
                self.refuse(error, ref)
            else:
                logger.warning("a pipelined frame failed: %r", error)
                self.send_error(failure, ref)
        except Exception:
            logger.exception("answering a pipelined frame failed")

    # ------------------------------------------------------------ writing

    async def accept(self) -> None:
        await self.base_send({"type": "websocket.accept"})

    def send_frame(self, frame: dict) -> None:
        """Queue a protocol frame after those queued before it."""
        self.outbox.push(protocol.encode(frame))

    def send_text(self, text: str) -> None:
        """Queue a frame already encoded (a group event's text, encoded once for all members)."""
        self.outbox.push(text)

    async def send_texts(self, texts: list[str], frames: list[bytes]) -> None:
        """Frames already encoded (`texts`) and framed (`frames`, wire.text_frame), a burst of
        our own (a sync's replay): written BURST_FRAMES at a time in one `write` (`corked`),
        and paced by the socket instead of overflowing its outbox (a replay is not a slow
        reader): past half the outbox, it waits for the socket."""
        half = self.outbox.limit // 2
        pending = zip(texts, frames, strict=True)
        more = True
        while more:
            more = False
            with corked():
                for count, (text, frame) in enumerate(pending, 1):
                    self.outbox.push(text, frame)
                    if count == BURST_FRAMES or self.outbox.backlog > half:
                        more = True
                        break
            if self.outbox.backlog > half:
                await self.outbox.flushed()

    def close_with(self, code: int) -> None:
        """Close after the frames already queued; later frames are dropped."""
        if not self.closing:
            self.closing = True
            self.outbox.close(code)

    async def send(self, message):
        raise TypeError("SocketConsumer writes through its outbox: use send_frame / close_with")

    async def close(self, code=None, reason=None):
        raise TypeError("SocketConsumer writes through its outbox: use close_with")

    # ------------------------------------------------------------ slow clients

    def _overflowed(self) -> None:
        """The client stopped reading and its outbox is full: let it go; it resumes by `sync`."""
        metrics.SLOW_CLIENT_DISCONNECTS.inc()
        logger.warning("slow client dropped (outbox over %d frames)", self.outbox.limit)
        self.closing = True
        self.dropped = True
        self.channel_layer.detach(self.channel_name)
        # The socket cannot take even a close frame; ending the application closes the TCP
        # connection (uvicorn), and `disconnect` cleans up (groups, presence).
        self.main_task.cancel()
