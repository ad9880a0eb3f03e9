"""Shared fixtures: users, chats, API clients, socket connections and a live server process."""

import asyncio
import base64
import contextlib
import os
import socket
from pathlib import Path
from urllib.parse import quote

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from messaging import delivered, ratelimit
from messaging.realtime import presence
from messaging.testing import BASE_DIR, LiveServer, Socket, free_port  # noqa: F401 - re-exported

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    """Close connections after each call, so no worker thread keeps the test database open."""
    from django.db import connections

    for alias in connections:
        connections[alias].settings_dict["CONN_MAX_AGE"] = 0


@pytest.fixture(scope="session", autouse=True)
def _close_worker_connections(django_db_setup, django_db_blocker):
    """Worker threads (batch runners, asgiref's executor) may hold connections to the test
    database; close them before it is dropped. On PostgreSQL, end any left in this test
    database (it is ours, made for this run)."""
    yield
    from django.db import connection

    from messaging.realtime import batching

    batching.close_connections()
    if connection.vendor == "postgresql" and connection.settings_dict["NAME"].startswith("test_"):
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(scope="session", autouse=True)
def _remove_sqlite_side_files():
    """SQLite's WAL and shared-memory files outlive the test database it deletes."""
    yield
    name = str(settings.DATABASES["default"].get("TEST", {}).get("NAME") or "")
    for suffix in ("-wal", "-shm", "-journal"):
        if name:
            Path(name + suffix).unlink(missing_ok=True)


# ---------------------------------------------------------------- data


def make_user(username: str, **extra):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)


def token_for(user) -> str:
    return str(AccessToken.for_user(user))


@pytest.fixture
def user(db):
    return make_user("alice")


@pytest.fixture
def other_user(db):
    return make_user("bob")


@pytest.fixture
def third_user(db):
    return make_user("carol")


@pytest.fixture
def outsider(db):
    return make_user("mallory")


@pytest.fixture
def chat(user, other_user):
    """The direct chat of `user` and `other_user`."""
    from messaging import services

    chat, _ = services.create_chat(creator=user, member_ids=[other_user.pk])
    return chat


@pytest.fixture
def group_chat(user, other_user, third_user):
    """A group chat owned by `user` with `other_user` and `third_user`."""
    from messaging import services

    chat, _ = services.create_chat(
        creator=user, member_ids=[other_user.pk, third_user.pk], title="Team"
    )
    return chat


@pytest.fixture
def api_client():
    """An API client; `api_client.as_user(u)` authenticates it with a Bearer token."""
    client = APIClient()

    def as_user(someone):
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(someone)}")
        return client

    client.as_user = as_user
    return client


# ---------------------------------------------------------------- in-process sockets


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    """The default hasher costs ~0.4 s a user; tests do not need it slow. DRF throttles live in the cache."""
    from django.core.cache import cache

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_process_state():
    """Presence counts, rate-limit buckets and delivered announcements live in the process:
    start each test clean."""
    presence.reset()
    ratelimit.reset()
    delivered.reset()
    yield
    presence.reset()
    ratelimit.reset()
    delivered.reset()


class Client:
    """A WebsocketCommunicator with JSON helpers for tests."""

    def __init__(self, communicator: WebsocketCommunicator):
        self.communicator = communicator
        self.connect_frame = None

    async def send(self, frame_type: str, **data):
        await self.communicator.send_json_to({"type": frame_type, "data": data})

    async def send_raw(self, text: str):
        await self.communicator.send_to(text_data=text)

    async def receive(self, timeout: float = 3):
        return await self.communicator.receive_json_from(timeout=timeout)

    async def receive_type(self, frame_type: str, timeout: float = 3):
        """The next frame of `frame_type`, skipping others (presence, typing…)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no {frame_type} frame within {timeout}s")
            frame = await self.receive(timeout=left)
            if frame["type"] == frame_type:
                return frame

    async def nothing(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout=timeout)

    async def closed_with(self, timeout: float = 3):
        """The close code, skipping frames sent before it."""
        while True:
            output = await self.communicator.receive_output(timeout=timeout)
            if output["type"] == "websocket.close":
                return output.get("code", 1000)

    async def close(self):
        await self.communicator.disconnect()


@pytest.fixture
async def connect(transactional_db):
    """`await connect(user)` opens an authenticated socket and returns it after the `connect` frame.

    Socket tests run transactionally: the consumer's worker threads read what the test wrote."""
    from biogram.asgi import application

    clients = []

    async def open_socket(someone=None, *, token=None, query=None, path="/ws/chat/", headers=None):
        if query is None:
            query = f"token={quote(token or token_for(someone))}"
        communicator = WebsocketCommunicator(
            application, f"{path}?{query}" if query else path, headers=headers or []
        )
        accepted, _ = await communicator.connect()
        client = Client(communicator)
        client.accepted = accepted
        clients.append(client)
        if accepted and someone is not None and token is None and "userId" not in query:
            client.connect_frame = await client.receive()
            assert client.connect_frame["type"] == "connect", client.connect_frame
        return client

    yield open_socket
    for client in clients:
        # A receive timeout cancels the app; its disconnect then raises CancelledError.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(client.communicator.disconnect(), 5)
    layer = get_channel_layer()
    if hasattr(layer, "flush"):
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(layer.flush(), 5)


db_call = database_sync_to_async


async def expect_error(client, code: str, ref):
    frame = await client.receive()
    assert frame["type"] == "error", frame
    assert frame["data"]["code"] == code, frame
    assert frame["data"]["ref"] == ref, frame
    assert isinstance(frame["data"]["message"], str) and frame["data"]["message"]
    return frame


async def expect_errors(client, cases, send, code: str, ref):
    """Send each case with `send(case)`; each must be answered by one error `code` with `ref`."""
    for case in cases:
        await send(case)
        frame = await client.receive()
        assert frame["type"] == "error", (case, frame)
        assert (frame["data"]["code"], frame["data"]["ref"]) == (code, ref), (case, frame)


# ---------------------------------------------------------------- live server


@pytest.fixture
def start_live_server(transactional_db):
    """Start real server processes with settings of the test's own: `start_live_server(**env)`."""
    servers = []

    def start(*, runserver: bool = False, **env):
        server = LiveServer(env, runserver=runserver)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
        server.remove_log()


def raw_websocket(port: int, token: str, *, receive_buffer: int | None = None) -> socket.socket:
    """A WebSocket handshake over a plain TCP socket, read byte by byte up to the end of the
    headers, so that no frame is consumed: for peers no client library would imitate (one that
    never answers pings, one that stops reading)."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/chat/?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


@pytest.fixture
def live_server_process(start_live_server):
    """A real server process (uvicorn via `manage.py serve`) for this test."""
    return start_live_server()


@pytest.fixture
async def open_socket():
    """`await open_socket(server, someone)`: a real client of a live server, after its `connect`
    frame; `someone` is a user or a token (or None, with `query=` of the test's own)."""
    sockets = []

    async def open_(server, someone=None, *, query=None, path="/ws/chat/", origin=None):
        token = None
        if someone is not None:
            token = someone if isinstance(someone, str) else token_for(someone)
        client = await Socket.open(server.ws_url, token, query=query, path=path, origin=origin)
        sockets.append(client)
        return client

    yield open_
    for client in sockets:
        with contextlib.suppress(Exception):
            await client.close()


def pytest_collection_modifyitems(items):
    """Socket tests run transactionally: a server process (tests marked `live`) or the
    consumer's worker threads (every async test drives a socket) must see what the test
    wrote. The others (REST, services, admin, selectors) run in a rolled-back transaction
    (`db`), unless they ask for `transactional_db` (threads of their own)."""
    for item in items:
        if item.get_closest_marker("live") or asyncio.iscoroutinefunction(
            getattr(item, "function", None)
        ):
            item.add_marker(pytest.mark.django_db(transaction=True))
