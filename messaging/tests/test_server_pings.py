"""The server pings every socket and drops one whose pong does not come: a vanished peer's socket
and presence do not linger."""

import asyncio
import json
import socket
import struct
import time

import pytest
from websockets.asyncio.client import connect as ws_connect

from conftest import raw_websocket, token_for

pytestmark = pytest.mark.live

PING = 0x9
CLOSE = 0x8


@pytest.fixture
def fast_ping_server(start_live_server):
    """A server pinging each socket every second and giving its pong one second to come."""
    return start_live_server(WS_PING_INTERVAL=1, WS_PING_TIMEOUT=1)


def open_silent_socket(server, token) -> socket.socket:
    """A real TCP WebSocket client: it completes the handshake, then never sends a byte, so no
    ping of the server's is ever answered (a client library would answer them by itself)."""
    return raw_websocket(server.port, token)


def read_until_closed(sock: socket.socket, within: float) -> tuple[bytes, float | None]:
    """Everything the server sends, and the seconds until it closed the TCP connection (None if
    it was still open after `within`)."""
    received = b""
    started = time.monotonic()
    while (left := within - (time.monotonic() - started)) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return received, time.monotonic() - started
        if not chunk:
            return received, time.monotonic() - started
        received += chunk
    return received, None


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each (unmasked, server-to-client) frame in `data`."""
    frames = []
    while len(data) >= 2:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if length == 126:
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif length == 127:
            (length,) = struct.unpack("!Q", data[2:10])
            offset = 10
        frames.append((opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames


async def test_a_peer_that_never_answers_pings_is_dropped_and_announced_offline(
    fast_ping_server, user, other_user, chat
):
    server = fast_ping_server
    url = f"{server.ws_url}/ws/chat/?token="
    async with ws_connect(url + token_for(user)) as alice:
        assert json.loads(await alice.recv())["type"] == "connect"
        silent = await asyncio.to_thread(open_silent_socket, server, token_for(other_user))
        try:
            came_online = json.loads(await asyncio.wait_for(alice.recv(), 5))
            received, closed_after = await asyncio.to_thread(read_until_closed, silent, 10)
        finally:
            silent.close()
        assert closed_after is not None, "the server kept the silent peer's connection open"
        went_offline = await asyncio.wait_for(alice.recv(), 5)

        # Alice answers the pings (her client library does): her socket stays open.
        await alice.send(json.dumps({"type": "ping", "data": {}}))
        pong = json.loads(await asyncio.wait_for(alice.recv(), 5))

    opcodes = [opcode for opcode, _ in server_frames(received)]
    close_payload = dict(server_frames(received)).get(CLOSE, b"")
    assert came_online == {"type": "connect", "data": {"userId": str(other_user.pk)}}
    assert closed_after < 6, closed_after
    assert PING in opcodes
    assert opcodes[-1] == CLOSE
    assert struct.unpack("!H", close_payload[:2]) == (1011,)  # keepalive ping timeout
    assert json.loads(went_offline) == {
        "type": "disconnect",
        "data": {"userId": str(other_user.pk)},
    }
    assert pong["type"] == "pong"
    # The server forgot the dropped peer: a new socket of Alice's sees nobody online.
    async with ws_connect(url + token_for(user)) as again:
        assert json.loads(await again.recv())["data"]["online"] == []
