"""End to end: a real `manage.py serve` process, real WebSocket clients and real HTTP requests."""

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest
from websockets.exceptions import InvalidStatus

from conftest import db_call, token_for
from messaging import protocol, services
from messaging.testing import LiveServer, send_and_ack

pytestmark = pytest.mark.live

FRAME_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def handshake_server(django_db_setup):
    """One server for the tests that only connect: each still reads its own test's data.

    Tests that depend on what the process remembers (presence, typing) start their own.
    """
    server = LiveServer().start()
    yield server
    server.stop()
    server.remove_log()


def post_json(url: str, body: dict, *, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.loads(response.read())


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


# ---------------------------------------------------------------- connecting


async def test_bad_token_gets_unauthorized_error_then_close_4001(handshake_server, open_socket):
    socket = await open_socket(handshake_server, query="token=not-a-jwt")

    frames, code = await socket.frames_until_closed()

    assert [frame["type"] for frame in frames] == ["error"]
    assert frames[0]["data"]["code"] == "unauthorized"
    assert code == 4001


async def test_user_id_of_another_user_gets_forbidden_error_then_close_4003(
    handshake_server, open_socket, user, other_user
):
    query = f"token={quote(token_for(user))}&userId={other_user.pk}"
    socket = await open_socket(handshake_server, query=query)

    frames, code = await socket.frames_until_closed()

    assert [frame["type"] for frame in frames] == ["error"]
    assert frames[0]["data"]["code"] == "forbidden"
    assert code == 4003


async def test_original_client_url_at_the_root_path_connects(
    handshake_server, open_socket, user, chat
):
    query = f"token={quote(token_for(user))}&userId={user.pk}"

    socket = await open_socket(handshake_server, user, path="/", query=query)

    assert socket.connect_frame["data"]["userId"] == str(user.pk)
    assert socket.connect_frame["data"]["chats"] == [str(chat.pk)]


@pytest.mark.parametrize("origin", ["http://evil.example", "null"])
async def test_foreign_or_null_origin_is_refused_at_the_handshake_with_403(
    handshake_server, open_socket, user, origin
):
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(handshake_server, user, origin=origin)

    assert refused.value.response.status_code == 403


async def test_own_origin_and_no_origin_are_both_let_through(handshake_server, open_socket, user):
    own = f"http://127.0.0.1:{handshake_server.port}"

    browser = await open_socket(handshake_server, user, origin=own)
    bot = await open_socket(handshake_server, user, origin=None)

    assert browser.connect_frame["data"]["userId"] == str(user.pk)
    assert bot.connect_frame["data"]["userId"] == str(user.pk)


async def test_text_frame_over_64_kib_closes_with_1009(handshake_server, open_socket, user):
    socket = await open_socket(handshake_server, user)

    await socket.send_raw("x" * (FRAME_LIMIT + 1))

    frames, code = await socket.frames_until_closed()
    assert frames == []
    assert code == 1009


# ---------------------------------------------------------------- presence and typing


async def test_presence_of_one_real_client_reaches_the_other(
    live_server_process, open_socket, user, other_user, chat
):
    alice = await open_socket(live_server_process, user)

    bob = await open_socket(live_server_process, other_user)
    came_online = await alice.receive_type("connect")
    await bob.close()
    went_offline = await alice.receive_type("disconnect")

    assert alice.connect_frame["data"]["online"] == []
    assert bob.connect_frame["data"]["online"] == [str(user.pk)]
    assert came_online == {"type": "connect", "data": {"userId": str(other_user.pk)}}
    assert went_offline == {"type": "disconnect", "data": {"userId": str(other_user.pk)}}


async def test_typing_expires_about_3_seconds_after_the_last_typing_frame(
    live_server_process, open_socket, user, other_user, chat
):
    alice = await open_socket(live_server_process, user)
    bob = await open_socket(live_server_process, other_user)

    await alice.send("typing", chatId=str(chat.pk))
    started = time.monotonic()
    typing = await bob.receive_type("typing")
    stopped = await bob.receive_type("typing", within=6)
    elapsed = time.monotonic() - started

    assert typing["data"]["isTyping"] is True
    assert typing["data"]["expiresInMs"] == 3000
    assert stopped["data"] == {**typing["data"], "isTyping": False}
    assert 2.5 <= elapsed <= 4.5


async def test_coalesced_typing_frame_is_not_forwarded_but_restarts_the_expiry_timer(
    start_live_server, open_socket, user, other_user, chat
):
    server = start_live_server(TYPING_TIMEOUT_MS=1000)
    alice = await open_socket(server, user)
    bob = await open_socket(server, other_user)

    await alice.send("typing", chatId=str(chat.pk))
    started = time.monotonic()
    typing = await bob.receive_type("typing")
    await asyncio.sleep(max(0, started + 0.5 - time.monotonic()))
    await alice.send("typing", chatId=str(chat.pk))
    resent = time.monotonic()
    stopped = await bob.receive_type("typing", within=4)
    waited = time.monotonic() - resent

    assert typing["data"]["isTyping"] is True
    assert typing["data"]["expiresInMs"] == 1000
    assert stopped["data"]["isTyping"] is False
    assert waited >= 0.95


# ---------------------------------------------------------------- delivery and resume


async def test_rest_send_arrives_live_as_the_same_message_object(
    live_server_process, open_socket, user, other_user, chat
):
    bob = await open_socket(live_server_process, other_user)

    status, sent = await asyncio.to_thread(
        post_json,
        f"{live_server_process.url}/api/chats/{chat.pk}/messages/",
        {"text": "via REST", "clientMessageId": "rest-1"},
        token=token_for(user),
    )

    frame = await bob.receive_type("message")
    assert status == 201
    assert frame["data"]["message"] == sent
    assert frame["data"]["senderId"] == str(user.pk)
    assert frame["data"]["text"] == "via REST"


async def test_sync_after_reconnect_replays_exactly_the_missed_messages(
    live_server_process, open_socket, user, other_user, chat
):
    alice = await open_socket(live_server_process, user)
    bob = await open_socket(live_server_process, other_user)
    await send_and_ack(alice, chat.pk, "before")
    seen = await bob.receive_type("message")
    await bob.close()
    await alice.receive_type("disconnect")
    missed = [await send_and_ack(alice, chat.pk, f"missed {n}") for n in range(3)]

    bob = await open_socket(live_server_process, other_user)
    await bob.send("sync", chats={str(chat.pk): seen["data"]["message"]["seq"]})

    replayed = [await bob.receive() for _ in range(4)]
    assert [frame["type"] for frame in replayed] == ["message"] * 3 + ["sync"]
    assert [frame["data"]["message"] for frame in replayed[:3]] == missed
    assert [message["seq"] for message in missed] == ["2", "3", "4"]
    assert replayed[3]["data"] == {
        "chats": {str(chat.pk): {"lastSeq": "4", "rev": "4", "hasMore": False}}
    }


async def test_messages_stored_before_and_during_a_restart_are_synced_from_the_new_process(
    start_live_server, open_socket, user, other_user, chat
):
    first = start_live_server()
    alice = await open_socket(first, user)
    sent = [await send_and_ack(alice, chat.pk, f"stored {n}") for n in range(3)]
    await asyncio.to_thread(first.stop, signal.SIGTERM)
    while_down, _ = await db_call(services.send_message)(
        sender=user, chat_id=chat.pk, text="while down"
    )

    second = start_live_server()
    bob = await open_socket(second, other_user)
    await bob.send("sync", chats={str(chat.pk): "0"})

    replayed = [await bob.receive() for _ in range(5)]
    assert [frame["data"]["message"] for frame in replayed[:4]] == [
        *sent,
        protocol.message_data(while_down),
    ]
    assert replayed[4] == {
        "type": "sync",
        "data": {"chats": {str(chat.pk): {"lastSeq": "4", "rev": "4", "hasMore": False}}},
    }


async def test_sigterm_sends_server_shutdown_disconnect_before_the_close(
    live_server_process, open_socket, user, chat
):
    alice = await open_socket(live_server_process, user)

    stopping = asyncio.create_task(asyncio.to_thread(live_server_process.stop, signal.SIGTERM))
    frames, code = await alice.frames_until_closed()
    await stopping

    assert frames == [
        {"type": "disconnect", "data": {"userId": str(user.pk), "reason": "server_shutdown"}}
    ]
    assert code in {1001, 1012}


# ---------------------------------------------------------------- logging


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_token_never_reaches_the_server_log(start_live_server, open_socket, user, log_format):
    server = start_live_server(LOG_FORMAT=log_format)
    token = token_for(user)
    socket = await open_socket(server, user, query=f"token={quote(token)}")
    await socket.send("ping")
    await socket.receive_type("pong")
    await socket.close()

    # A plain HTTP request with the token in its query: Django logs its 404 with the request.
    status = await asyncio.to_thread(http_status, f"{server.url}/ws/chat/?token={token}")
    await asyncio.to_thread(server.stop, signal.SIGTERM)

    log = server.output()
    assert status == 404
    assert "token=[redacted]" in log
    assert token not in log
    assert token.split(".")[2] not in log
