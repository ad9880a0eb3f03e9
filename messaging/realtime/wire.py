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

import struct

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

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
            self.transport.write(frame)
            return True
        return False
