"""Socket lives leave nothing behind: however a socket ends, the server forgets it.

Channels users report memory that grows with every connection (channels #1361,
channels_redis #384): a group membership, a queue or a task that outlives its
socket. Here a real server sees dozens of socket lives ending every way a
socket ends (the client closes, the `disconnect` frame, the TCP connection cut
without a close frame, a client gone mid-handshake, a bad token, one socket
over the per-user cap, a client that stops reading and is let go), then every
structure it keeps per socket (`biogram_socket_state` on /metrics: the layer's
sinks, queues and group members, the sequencer's chats, presence, the access
watch, the outboxes, the live consumers) and the event loop's tasks must be back
to what the one socket still open explains. Then the same in-process, where the
garbage collector can be asked: no consumer object survives its socket.
"""

import asyncio
import gc
import json
import socket
import time
import urllib.request

import pytest

from conftest import raw_websocket, token_for
from messaging.realtime.socket import SocketConsumer
from messaging.testing import Socket, send_and_ack, wait_until

pytestmark = pytest.mark.live

ROUNDS = 6
PADDING = "x" * 3900  # big frames fill a non-reading client's buffers sooner


def socket_state(server) -> dict[str, float]:
    text = urllib.request.urlopen(f"{server.url}/metrics", timeout=5).read().decode()
    state = {}
    for line in text.splitlines():
        if line.startswith('biogram_socket_state{kind="'):
            kind = line.split('"')[1]
            state[kind] = float(line.rsplit(" ", 1)[1])
        elif line.startswith('biogram_event_loop_tasks{coroutine="'):
            state.setdefault("tasks", {})[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("biogram_slow_client_disconnects_total "):
            state["slow_client_disconnects"] = float(line.split()[1])
    return state


# Tasks that run once per process whatever the sockets, and those of the /metrics request
# reading them. (Batch runners have no task: their threads take their own batches.)
PROCESS_TASKS = {
    "AccessWatch._watch": 1,
    "Server.serve": 1,
    "Supervisor.watch": 1,  # the notifier's
    # With Redis:
    "RedisPresence._beat": 1,
    "RedisSubscriber._listen": 1,
    "RedisPublisher._publish_queued": 1,
}
SCRAPE_TASKS = {
    "RequestResponseCycle.run_asgi",
    "ASGIHandler.handle.<locals>.process_request",
    "ASGIHandler.listen_for_disconnect",
    "AsyncToSync.main_wrap",
}


def tasks_per_socket(tasks: dict[str, float], sockets: int) -> dict[str, float]:
    """The tasks that are neither the process's own nor the scrape's, per open socket."""
    return {
        coroutine: count / sockets
        for coroutine, count in tasks.items()
        if coroutine not in SCRAPE_TASKS and count > PROCESS_TASKS.get(coroutine, 0)
    }


def settled_state(server, expected: dict[str, float], *, sockets: int | None = None) -> dict:
    """Wait until the server's state is `expected` and, given the open `sockets`, it runs one
    task for each (uvicorn's) and no other task of its own beyond the process's; the last
    state read."""
    seen = {}

    def settled() -> bool:
        seen.update(socket_state(server))
        return all(seen.get(kind) == value for kind, value in expected.items()) and (
            sockets is None
            or tasks_per_socket(seen["tasks"], sockets) == {"WebSocketsSansIOProtocol.run_asgi": 1}
        )

    try:
        wait_until(settled, timeout=15, what="the server's socket state to settle")
    except Exception as exc:
        raise AssertionError(f"expected {expected} ({sockets} sockets); got {seen}") from exc
    return seen


def user_gone(server) -> None:
    """Wait until only `stays`'s user is online."""
    settled_state(server, {"presence_users": 1})


def cut_without_close_frame(server, token: str, *, before_connect_frame: bool) -> None:
    sock = raw_websocket(server.port, token)
    if not before_connect_frame:
        sock.recv(1)  # the first byte of the `connect` frame: the socket is fully open
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # linger 0: a reset, no close frame, no FIN


@pytest.fixture
def server(start_live_server):
    return start_live_server(
        RATE_LIMIT_ENABLED=0, WS_OUTBOX_LIMIT=20, WS_MAX_SOCKETS_PER_USER=2, LOG_LEVEL="WARNING"
    )


async def test_every_way_a_socket_ends_leaves_no_state_or_task_behind(
    server, user, other_user, chat, group_chat
):
    # other_user stays connected throughout: what it holds is the baseline.
    stays = await Socket.open(server.ws_url, token_for(other_user))
    baseline = await asyncio.to_thread(
        settled_state, server, {"consumers": 1, "presence_users": 1}, sockets=1
    )
    assert baseline["layer_sinks"] == 1
    assert baseline["layer_groups"] == 3  # other_user's own group and its two chats
    token = token_for(user)
    sent = 0
    for _ in range(ROUNDS):
        # The client closes after using every kind of frame.
        alice = await Socket.open(server.ws_url, token)
        sent += 1
        message = await send_and_ack(alice, chat.pk, f"m{sent}")
        await alice.send("typing", chatId=str(group_chat.pk), isTyping=True)
        await alice.send("sync", chats={str(chat.pk): {"seq": "0", "rev": "0"}})
        await alice.receive_type("sync")
        await alice.send("read", chatId=str(chat.pk), messageId=message["id"])
        await alice.close()

        # The `disconnect` frame.
        alice = await Socket.open(server.ws_url, token)
        await alice.send("disconnect")
        assert (await alice.frames_until_closed())[1] == 1000

        # Cut without a close frame, when open and in the middle of the handshake.
        await asyncio.to_thread(cut_without_close_frame, server, token, before_connect_frame=False)
        await asyncio.to_thread(cut_without_close_frame, server, token, before_connect_frame=True)

        # A bad token; one socket over the cap of two (once the server has seen the others go:
        # until then they count).
        await asyncio.to_thread(user_gone, server)
        bad = await Socket.open(server.ws_url, None, query="token=not-a-token")
        assert (await bad.frames_until_closed())[1] == 4001
        first = await Socket.open(server.ws_url, token)
        second = await Socket.open(server.ws_url, token)
        third = await Socket.open(server.ws_url, None, query=f"token={token}")
        assert (await third.frames_until_closed())[1] == 4029
        await first.close()
        await second.close()

        # A client that stops reading, let go when its outbox overflows.
        await asyncio.to_thread(user_gone, server)
        before = (await asyncio.to_thread(socket_state, server))["slow_client_disconnects"]
        stalled = await asyncio.to_thread(raw_websocket, server.port, token, receive_buffer=4096)
        try:
            sender = await Socket.open(server.ws_url, token_for(other_user))
            deadline = time.monotonic() + 20
            while (await asyncio.to_thread(socket_state, server))[
                "slow_client_disconnects"
            ] == before:
                assert time.monotonic() < deadline, "the non-reading client was never let go"
                for _ in range(50):
                    sent += 1
                    payload = {"chatId": str(chat.pk), "text": f"{sent} {PADDING}"}
                    await sender.send_raw(json.dumps({"type": "message", "data": payload}))
                await stays.frames_within(0.05)
            await sender.close()
        finally:
            stalled.close()

    # Everything but `stays` is gone: its sink, its groups, presence of one user, no outbox,
    # no consumer; of the tasks, one for the socket open and the process's own.
    after = await asyncio.to_thread(
        settled_state,
        server,
        {
            "consumers": 1,
            "presence_users": 1,
            "access_watched_users": 1,
            "layer_sinks": 1,
            "layer_queues": baseline["layer_queues"],
            "layer_groups": baseline["layer_groups"],
            "layer_group_members": baseline["layer_group_members"],
            "layer_channels_in_groups": 1,
            "outbox_frames": 0,
            "sequencer_held": 0,
        },
        sockets=1,
    )
    assert after["sequencer_chats"] <= after["layer_groups"]
    assert after["slow_client_disconnects"] == ROUNDS
    # And `stays` still works.
    await send_and_ack(stays, chat.pk, "still-here")
    await stays.close()


def live_socket_objects() -> int:
    gc.collect()
    # type(), not isinstance(): a dead weak proxy among the objects would raise
    return sum(issubclass(type(obj), SocketConsumer) for obj in gc.get_objects())


async def test_no_consumer_object_outlives_its_socket(user, other_user, chat, connect, settings):
    settings.RATE_LIMIT_ENABLED = False
    before = live_socket_objects()
    for n in range(40):
        alice = await connect(user)
        await alice.send("message", chatId=str(chat.pk), text=f"m{n}", clientMessageId=f"m{n}")
        await alice.receive_type("message")
        await alice.send("typing", chatId=str(chat.pk), isTyping=True)
        if n % 2:
            await alice.send("disconnect")
            assert await alice.closed_with() == 1000
        await alice.close()
        refused = await connect(token="not-a-token")
        assert await refused.closed_with() == 4001
        await refused.close()
    await asyncio.sleep(0.1)  # typing timers and presence announcements run out
    assert live_socket_objects() == before
