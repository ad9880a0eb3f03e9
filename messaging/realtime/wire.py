"""Frames framed once: a chat event's WebSocket frame is built once and written to every member.

The fan-out sends the same text to every member of a chat. Through ASGI each
`websocket.send` is framed again for each socket (uvicorn's `send` coroutine,
websockets' `Frame.serialize`): about half the Python of a delivery. A server
frame is the same bytes on every connection (RFC 6455 section 5.1: a server
never masks; compression is off, `manage.py serve`), so, as gorilla/websocket's
`PreparedMessage` does, the frame is built once (`prepared`) and the bytes are
handed to each socket's transport (`ChatWebSocketProtocol.write_prepared`, the
ASGI scope extension `PREPARED_FRAMES`).

A socket takes the prepared bytes only when it would have written a `send` at
once: open, handshake done, no close sent, transport not paused. Otherwise the
caller falls back to the ASGI `send` (which waits, or raises what it raises), so
the fast path never changes what the client receives, only what it costs. On a
server without the extension (daphne, the Channels test communicator) there is
no fast path at all.
"""

import contextlib
import logging
import struct
import threading
from collections.abc import Callable

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

logger = logging.getLogger(__name__)

# The ASGI scope extension: a function taking a prepared frame's bytes, True if written.
PREPARED_FRAMES = "biogram.prepared_frames"

_FIN_TEXT = 0x81  # FIN bit + opcode 1 (text)


def text_frame(text: str) -> bytes:
    """A final, unmasked, uncompressed text frame carrying `text` (RFC 6455 section 5.2)."""
    payload = text.encode()
    length = len(payload)
    if length < 126:
        header = bytes((_FIN_TEXT, length))
    elif length < 65536:
        header = struct.pack("!BBH", _FIN_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, length)
    return header + payload


class _LastFramed:
    """The frame of the text framed last: the fan-out asks for the same text once per member.

    Keyed by the text object itself (the event's one string, not an equal one); the pair is
    replaced in one assignment, so loops in other threads (tests) never see a torn pair."""

    __slots__ = ("last",)

    def __init__(self):
        self.last: tuple[str | None, bytes] = (None, b"")

    def __call__(self, text: str) -> bytes:
        last = self.last
        if last[0] is text:
            return last[1]
        frame = text_frame(text)
        self.last = (text, frame)
        return frame


prepared = _LastFramed()


class _Corks(threading.local):
    """Per thread (each serving loop has its own): the frames held back while `corked()`, by
    socket, in order; None when not corked."""

    held: "dict[ChatWebSocketProtocol, list[bytes]] | None" = None


_corks = _Corks()


@contextlib.contextmanager
def corked():
    """Prepared frames written inside go out together at the end, one `write` per socket: a
    batch of stored messages often has several for one member (a `write` is one syscall, most
    of the fan-out's time). Only around synchronous code: nothing else may write to the
    sockets meanwhile except through their ASGI `send`, which sends what is held first."""
    if _corks.held is not None:
        yield  # already corked further out: that one writes
        return
    _corks.held = {}
    try:
        yield
    finally:
        uncork()


def cork() -> None:
    """`corked()` opened by one callback of the event loop and closed by a later one (`uncork`),
    around the callbacks queued between them (`corked_wakeups`). Between two callbacks no
    `corked()` block is open (it only wraps synchronous code), so this one is the outermost."""
    if _corks.held is None:
        _corks.held = {}


def uncork() -> None:
    """Write what was held since `cork`, one `write` per socket, and stop holding."""
    held, _corks.held = _corks.held, None
    for protocol, frames in (held or {}).items():
        try:
            protocol.write_held(frames)
        except Exception:  # one socket's failure must not keep the others' frames
            logger.exception("writing held frames failed")


def corked_wakeups(loop, wake: Callable[[], None]) -> None:
    """Run `wake` (which resolves futures) so that the tasks it wakes resume inside one cork:
    the frames they write to a socket in those steps go out in one `write`. A burst of
    connections comes back from the connection loader together, and each new member's
    `connect` frame and the presence frames of the co-members connecting beside it reach
    a socket in one `write` instead of one each.

    A future's waiters resume in callbacks it queues (`call_soon`, first in first out) on the
    loop's next turn; `cork` and `uncork` are queued before and after them, so the cork spans
    exactly those synchronous steps, never a wait for I/O."""
    loop.call_soon(cork)
    try:
        wake()
    finally:
        loop.call_soon(uncork)


class ChatWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, offering the application `write_prepared`."""

    def handle_connect(self, event) -> None:
        super().handle_connect(event)
        # A refused handshake has no scope and no application; an accepted one has both, and
        # the application's task has not started yet (it starts on the loop's next turn).
        if not self.close_sent and not self.conn.extensions:
            self.scope["extensions"][PREPARED_FRAMES] = self.write_prepared

    def write_prepared(self, frame: bytes) -> bool:
        """Write a whole prepared frame now if a `websocket.send` would have been written at once;
        False (nothing written) when the application must go through `send` instead."""
        if (
            self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.writable.is_set()
            and self.conn.state is State.OPEN
            and not self.transport.is_closing()
        ):
            held = _corks.held
            if held is None:
                self.transport.write(frame)
            else:
                held.setdefault(self, []).append(frame)
            return True
        return False

    def write_held(self, frames: list[bytes]) -> None:
        """Write frames held back by `corked()`, in one call (they were accepted as written)."""
        if not self.transport.is_closing():
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def send(self, message) -> None:
        """ASGI `send`, after any frame of this socket held back by `corked()`: nothing the
        application sends overtakes what it was told was written."""
        held = _corks.held
        if held is not None:
            frames = held.pop(self, None)
            if frames:
                self.write_held(frames)
        await super().send(message)
