"""Every log line of a socket's life carries its user id, connection id and, for a chat's frame,
the chat id (JSON logs of a real server process)."""

import json

import pytest
from websockets.asyncio.client import connect as ws_connect

from conftest import token_for

pytestmark = pytest.mark.live


@pytest.fixture
def json_debug_server(start_live_server):
    return start_live_server(LOG_FORMAT="json", LOG_LEVEL="DEBUG")


async def test_a_sockets_log_lines_carry_its_user_connection_and_chat(
    json_debug_server, user, chat
):
    server = json_debug_server
    async with ws_connect(f"{server.ws_url}/ws/chat/?token={token_for(user)}") as socket:
        connect = json.loads(await socket.recv())
        connection_id = connect["data"]["connectionId"]
        await socket.send(json.dumps({"type": "typing", "data": {"chatId": str(chat.pk)}}))
        await socket.send(json.dumps({"type": "ping", "data": {}}))
        while json.loads(await socket.recv())["type"] != "pong":
            pass
        await socket.send(json.dumps({"type": "disconnect", "data": {}}))
        await socket.wait_closed()
    server.stop()

    lines = [
        json.loads(line)
        for line in server.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    ours = [line for line in lines if line["logger"] == "messaging.realtime.consumer"]
    by_message = {line["message"]: line for line in ours}
    for message in (
        "socket open: 1 chats",
        "frame typing",
        "frame ping",
        "socket closed: code 1000",
    ):
        assert message in by_message, (message, ours)
        assert by_message[message]["user_id"] == str(user.pk)
        assert by_message[message]["connection_id"] == connection_id
    assert by_message["frame typing"]["chat_id"] == str(chat.pk)
    assert "chat_id" not in by_message["frame ping"]
    assert not any(
        "token=" in json.dumps(line) and "[redacted]" not in json.dumps(line) for line in lines
    )
