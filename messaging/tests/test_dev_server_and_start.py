"""Starting and serving as a newcomer does: the checks at start, `make dev`'s server, the handshake's Host.

- `make run` with an unreachable database exits with one line naming DATABASE_URL;
  with an unreachable Redis it says so in one line and serves.
- Every close code the server uses reaches the client under runserver (daphne) too.
- A handshake whose Host is not in ALLOWED_HOSTS is refused (HTTP 403) before any frame.
- Server-wide tasks log without a socket's ids; a Redis outage is logged once.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from django.conf import settings
from rest_framework_simplejwt.tokens import AccessToken
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from conftest import token_for
from messaging.testing import BASE_DIR, free_port

pytestmark = pytest.mark.live


def manage(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# ---------------------------------------------------------------- checks at start


def test_an_unreachable_database_stops_the_start_with_one_line_naming_database_url():
    result = manage(
        "preflight", DATABASE_URL=f"postgres://biogram:s3cret@127.0.0.1:{free_port()}/biogram"
    )

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Cannot reach DATABASE_URL=postgres://biogram:***@127.0.0.1:")
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


def test_serve_with_an_unreachable_database_exits_with_the_same_line():
    result = manage(
        "serve", "--port", str(free_port()), DATABASE_URL=f"postgres://u@127.0.0.1:{free_port()}/x"
    )

    assert result.returncode == 1
    assert result.stderr.strip().startswith("Cannot reach DATABASE_URL=")
    assert "Traceback" not in result.stderr


def test_an_unreachable_redis_is_said_in_one_line_and_the_start_goes_on(tmp_path):
    result = manage(
        "preflight",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        BIOGRAM_VAR_DIR=str(tmp_path),
        DATABASE_URL="",
    )

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 0
    assert len(lines) == 1 and lines[0].startswith("Redis at REDIS_URL=redis://127.0.0.1:")


# ---------------------------------------------------------------- the handshake's Host


def handshake_status(port: int, host: str, token: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            (
                f"GET /ws/chat/?token={token} HTTP/1.1\r\nHost: {host}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        return sock.recv(64).split(b"\r\n", 1)[0]


def test_a_handshake_with_a_host_not_in_allowed_hosts_is_refused_with_403(
    live_server_process, user
):
    token = token_for(user)
    port = live_server_process.port

    assert handshake_status(port, "evil.example", token) == b"HTTP/1.1 403 Forbidden"
    assert handshake_status(port, f"127.0.0.1:{port}", token) == b"HTTP/1.1 101 Switching Protocols"


# ---------------------------------------------------------------- close codes under runserver


async def close_code_of(url: str, *frames: str, extra_headers=None) -> int | None:
    async with ws_connect(url, open_timeout=10, max_size=None) as client:
        for frame in frames:
            await client.send(frame)
        try:
            while True:
                await asyncio.wait_for(client.recv(), 10)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


@pytest.fixture
def dev_server(start_live_server):
    return start_live_server(
        runserver=True, WS_MAX_SOCKETS_PER_USER=1, RATE_LIMIT_BURST=1, RATE_LIMIT_STRIKES=1
    )


async def test_every_close_code_the_server_uses_reaches_the_client_under_runserver(
    dev_server, user, other_user, chat
):
    ws = f"ws://127.0.0.1:{dev_server.port}/ws/chat/"
    alice, bob = token_for(user), token_for(other_user)
    message = json.dumps({"type": "message", "data": {"chatId": str(chat.pk), "text": "x"}})
    codes = {}

    codes[1000] = await close_code_of(f"{ws}?token={alice}", '{"type": "disconnect"}')
    codes[1009] = await close_code_of(
        f"{ws}?token={alice}", "x" * (settings.WS_MAX_FRAME_BYTES + 1)
    )
    codes[4001] = await close_code_of(f"{ws}?token=not-a-token")
    codes[4003] = await close_code_of(f"{ws}?token={alice}&userId={other_user.pk}")
    codes[4008] = await close_code_of(f"{ws}?token={bob}", *[message] * 4)
    async with ws_connect(f"{ws}?token={alice}", open_timeout=10):
        codes[4029] = await close_code_of(f"{ws}?token={alice}")

    assert codes == {code: code for code in codes}, codes


async def test_a_token_naming_an_impossible_user_id_is_unauthorized_not_an_internal_error(
    live_server_process,
):
    token = AccessToken()
    token["user_id"] = 2**70

    code = await close_code_of(f"ws://127.0.0.1:{live_server_process.port}/ws/chat/?token={token}")

    assert code == 4001


# ---------------------------------------------------------------- logs of a Redis outage


async def test_a_redis_outage_is_logged_once_and_without_the_ids_of_a_closed_socket(
    start_live_server, user, chat
):
    server = start_live_server(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", LOG_FORMAT="json", LOG_LEVEL="INFO"
    )
    url = f"ws://127.0.0.1:{server.port}/ws/chat/?token={token_for(user)}"
    async with ws_connect(url, open_timeout=10) as client:
        await client.recv()  # connect: served although Redis is away
        await client.send(
            json.dumps({"type": "message", "data": {"chatId": str(chat.pk), "text": "hi"}})
        )
        await client.recv()
    await asyncio.sleep(3)  # retries go on after the socket closed
    server.stop()

    lines = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    outage = [line for line in lines if "unreachable" in line["message"]]
    assert len(outage) == 1, outage
    for line in lines:
        if (
            line["logger"].startswith("messaging.realtime.redis")
            or "unreachable" in line["message"]
        ):
            assert "user_id" not in line and "connection_id" not in line, line


def test_the_start_names_redis_once_when_it_is_unreachable(start_live_server):
    server = start_live_server(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    time.sleep(1)
    server.stop()

    assert server.output().count("REDIS_URL=") == 1, server.output()[-2000:]


async def test_an_internal_error_close_1011_reaches_the_client_under_runserver(
    start_live_server, tmp_path, user
):
    # A dev server on a database of its own, which then stops being a database: the token
    # check cannot read the user, and the socket is closed with 1011 (after `unavailable`).
    database = tmp_path / "dev.sqlite3"
    migrated = manage("migrate", "--noinput", "-v0", DATABASE_URL=f"sqlite:///{database}")
    assert migrated.returncode == 0, migrated.stderr
    server = start_live_server(runserver=True, DATABASE_URL=f"sqlite:///{database}")
    database.write_bytes(b"not a database any more" * 100)

    code = await close_code_of(f"ws://127.0.0.1:{server.port}/ws/chat/?token={token_for(user)}")

    assert code == 1011
