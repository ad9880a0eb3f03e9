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

Subclasses implement `connect`, `disconnect(code)`, `receive(text, bytes)` and
`on_event(event)`.
"""

import asyncio
import logging

from channels.consumer import AsyncConsumer
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from messaging import metrics, protocol
from messaging.realtime.outbox import Outbox

logger = logging.getLogger(__name__)

CLOSE_SLOW_CLIENT = 4009  # counted in metrics and logs; the client sees 1006 (no close frame)


class SocketConsumer(AsyncConsumer):
    """One WebSocket connection: reads ASGI events, writes through a bounded outbox."""

    async def __call__(self, scope, receive, send):
        self.scope = scope
        self.base_send = send
        self.outbox = Outbox(send, limit=settings.WS_OUTBOX_LIMIT, on_overflow=self._overflowed)
        self.channel_layer = get_channel_layer()
        self.channel_name = await self.channel_layer.new_channel()
        self.main_task = asyncio.current_task()
        self.closing = False
        self.dropped = False
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

    # ------------------------------------------------------------ what subclasses implement

    async def connect(self) -> None:
        raise NotImplementedError

    async def disconnect(self, code: int) -> None:
        raise NotImplementedError

    async def receive(self, text_data: str | None, bytes_data: bytes | None) -> None:
        raise NotImplementedError

    def on_event(self, event: dict) -> None:
        """Every channel-layer event for this connection, in order, synchronously."""
        raise NotImplementedError

    # ------------------------------------------------------------ writing

    async def accept(self) -> None:
        await self.base_send({"type": "websocket.accept"})

    def send_frame(self, frame: dict) -> None:
        """Queue a protocol frame after those queued before it."""
        self.outbox.push(protocol.encode(frame))

    def send_text(self, text: str) -> None:
        """Queue a frame already encoded (a group event's text, encoded once for all members)."""
        self.outbox.push(text)

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
