"""A client that stops reading is dropped; nobody else waits for it, and `sync` loses nothing."""

import asyncio
import json
import socket
import urllib.request

import pytest
from websockets.asyncio.client import connect as ws_connect

from conftest import db_call, raw_websocket, token_for

pytestmark = pytest.mark.live

MESSAGES = 1500
PADDING = "x" * 3900  # big frames fill the kernel buffers sooner


@pytest.fixture
def small_outbox_server(start_live_server):
    return start_live_server(
        RATE_LIMIT_ENABLED=0, WS_OUTBOX_LIMIT=20, SYNC_MAX_PER_CHAT=MESSAGES, LOG_LEVEL="WARNING"
    )


def open_non_reading_socket(server, token) -> socket.socket:
    """A real TCP client with a tiny receive buffer that never reads after the handshake."""
    return raw_websocket(server.port, token, receive_buffer=4096)


def slow_client_disconnects(server) -> float:
    text = urllib.request.urlopen(f"{server.url}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("biogram_slow_client_disconnects_total "):
            return float(line.split()[1])
    return 0.0


async def test_a_client_that_stops_reading_is_dropped_without_holding_up_the_others(
    small_outbox_server, user, other_user, chat
):
    server = small_outbox_server
    slow = await asyncio.to_thread(open_non_reading_socket, server, token_for(other_user))
    try:
        # Alice reads all along: her client keeps taking frames off the socket while she sends
        # (websockets stops reading after 16 unread frames by default, which would make her a
        # slow reader too, with 6 MB of echoes on their way).
        async with ws_connect(
            f"{server.ws_url}/ws/chat/?token={token_for(user)}", max_queue=None
        ) as alice:
            assert json.loads(await alice.recv())["type"] == "connect"
            received = 0
            for n in range(MESSAGES):
                await alice.send(
                    json.dumps(
                        {
                            "type": "message",
                            "data": {
                                "chatId": str(chat.pk),
                                "text": f"{n} {PADDING}",
                                "clientMessageId": f"m{n}",
                            },
                        }
                    )
                )
            while received < MESSAGES:  # the sender gets every echo, in time
                frame = json.loads(await asyncio.wait_for(alice.recv(), 10))
                if frame["type"] == "message":
                    received += 1
        assert await asyncio.to_thread(slow_client_disconnects, server) == 1
    finally:
        slow.close()

    # The dropped client reconnects and resumes: every stored message comes back.
    async with ws_connect(
        f"{server.ws_url}/ws/chat/?token={token_for(other_user)}", max_size=None
    ) as bob:
        assert json.loads(await bob.recv())["type"] == "connect"
        await bob.send(json.dumps({"type": "sync", "data": {"chats": {str(chat.pk): "0"}}}))
        seqs = []
        while True:
            frame = json.loads(await asyncio.wait_for(bob.recv(), 10))
            if frame["type"] == "message":
                seqs.append(int(frame["data"]["message"]["seq"]))
            elif frame["type"] == "sync":
                break
    assert seqs == list(range(1, MESSAGES + 1))
    count = await db_call(lambda: chat.messages.count())()
    assert count == MESSAGES
