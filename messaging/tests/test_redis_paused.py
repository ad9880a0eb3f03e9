"""A Redis that hangs (SIGSTOP: connections stay open, nothing answers) fools no access check and
holds up no local delivery.

The REST send path used to hold the lock that orders publishes while waiting
for Redis to take its event, and every socket send waited on the same lock:
publishing now never waits on Redis, from any thread. A removal, a ban or a
logout whose live event cannot cross reaches the other process's sockets
anyway, through the database (messaging/realtime/access.py).
"""

import asyncio
import contextlib
import os
import signal
import time

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from conftest import PASSWORD, token_for
from messaging.tests.cluster import (
    CLUSTER_TEST,
    RedisServer,
    Socket,
    call,
    start_servers,
    stop_servers,
)

pytestmark = CLUSTER_TEST

DELIVERY_BOUND = 0.100  # seconds: the bound for a local delivery while Redis hangs
ACCESS_BOUND = 5.0  # seconds: a lost removal or ban stops a socket's access within this
LOGOUT_BOUND = 2.0  # seconds: an ended login's sockets are closed within this


@pytest.fixture
async def pair(transactional_db):
    """Two server processes, A and B, on the test database and a Redis of the test's own."""
    redis = RedisServer().start()
    servers = start_servers(
        2,
        {
            "REDIS_URL": redis.url,
            "CHANNEL_LAYER_PREFIX": f"biogram-paused-pair-{os.getpid()}",
            "RATE_LIMIT_ENABLED": "0",
        },
    )
    sockets = []

    async def open_(server, token):
        socket = await Socket.open(server.ws_url, token)
        sockets.append(socket)
        return socket

    yield redis, servers, open_
    for socket in sockets:
        with contextlib.suppress(Exception):
            await socket.close()
    stop_servers(servers)
    redis.stop()


@contextlib.contextmanager
def paused(redis: RedisServer):
    os.kill(redis.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)


async def test_socket_sends_reach_members_on_the_same_process_while_redis_hangs(
    transactional_db, user, other_user, chat
):
    redis = RedisServer().start()
    (server,) = start_servers(
        1,
        {
            "REDIS_URL": redis.url,
            "CHANNEL_LAYER_PREFIX": f"biogram-paused-{os.getpid()}",
            "RATE_LIMIT_ENABLED": "0",
        },
    )
    alice = await Socket.open(server.ws_url, token_for(user))
    bob = await Socket.open(server.ws_url, token_for(other_user))
    try:
        with paused(redis):
            # A REST send first: it must not take the publish lock hostage while Redis hangs.
            status, _ = await asyncio.to_thread(
                call,
                server.url,
                "POST",
                f"/api/chats/{chat.pk}/messages/",
                {"text": "over REST", "clientMessageId": "rest-1"},
                token=token_for(user),
            )
            assert status == 201
            await bob.receive_type("message", within=2)

            delays = []
            for n in range(10):
                sent = time.monotonic()
                await alice.send(
                    "message", chatId=str(chat.pk), text=f"m{n}", clientMessageId=f"m{n}"
                )
                frame = await bob.receive_type("message", within=2)
                delays.append(time.monotonic() - sent)
                assert frame["data"]["message"]["clientMessageId"] == f"m{n}"

        assert max(delays) < DELIVERY_BOUND, [round(d * 1000, 1) for d in delays]
    finally:
        with contextlib.suppress(Exception):
            await alice.close()
        with contextlib.suppress(Exception):
            await bob.close()
        stop_servers([server])
        redis.stop()


async def test_a_member_removed_while_redis_hangs_gets_nothing_more_of_the_chat(
    pair, user, other_user, third_user, group_chat
):
    redis, (a, b), open_ = pair
    alice = await open_(a, token_for(user))
    bob = await open_(b, token_for(other_user))
    carol = await open_(b, token_for(third_user))

    with paused(redis):
        started = time.monotonic()
        status, _ = await asyncio.to_thread(
            call,
            a.url,
            "DELETE",
            f"/api/chats/{group_chat.pk}/members/{other_user.pk}/",
            token=token_for(user),
        )
        assert status == 204
        removed = await bob.receive_type("chat", within=ACCESS_BOUND, event="removed")
        assert time.monotonic() - started < ACCESS_BOUND
        await carol.send("message", chatId=str(group_chat.pk), text="on B", clientMessageId="c1")
        await carol.receive_type("message", within=2)
        await bob.send("sync", chats={str(group_chat.pk): "0"})
        refused = await bob.receive_type("error", within=2)
    await alice.send("message", chatId=str(group_chat.pk), text="on A", clientMessageId="a1")
    await carol.receive_type("message", within=10)  # Redis is back: A's message crossed

    assert removed["data"]["chatId"] == str(group_chat.pk)
    assert refused["data"]["code"] == "not_member"
    assert not [f for f in await bob.frames_within(1.0) if f["type"] == "message"]


async def test_a_user_banned_while_redis_hangs_is_disconnected_on_the_other_process(
    pair, user, other_user, chat
):
    from messaging import services

    redis, (_, b), open_ = pair
    bob = await open_(b, token_for(other_user))

    with paused(redis):
        started = time.monotonic()
        # Banned from this test process: its live event goes to a layer the pair does not hear.
        await asyncio.to_thread(services.ban_user, user=other_user)
        frames, code = await bob.frames_until_closed(within=ACCESS_BOUND)

    assert time.monotonic() - started < ACCESS_BOUND
    assert {
        "type": "disconnect",
        "data": {"userId": str(other_user.pk), "reason": "banned"},
    } in frames
    assert code == 4001


async def test_logout_while_redis_hangs_closes_the_logins_sockets_on_every_process_within_2s(
    pair, user
):
    redis, (a, b), open_ = pair
    # The servers check passwords with their own hashers (this process hashes with MD5).
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, "pausedsalt", iterations=1000)
    await asyncio.to_thread(user.save, update_fields=["password"])
    status, login = await asyncio.to_thread(
        call, a.url, "POST", "/api/auth/token/", {"username": "alice", "password": PASSWORD}
    )
    assert status == 200
    on_a = await open_(a, login["access"])
    on_b = await open_(b, login["access"])

    with paused(redis):
        started = time.monotonic()
        status, _ = await asyncio.to_thread(
            call, a.url, "POST", "/api/auth/logout/", {"refresh": login["refresh"]}
        )
        closes = await asyncio.gather(
            on_a.frames_until_closed(within=LOGOUT_BOUND + 1),
            on_b.frames_until_closed(within=LOGOUT_BOUND + 1),
        )
        elapsed = time.monotonic() - started

    assert status == 204
    for frames, code in closes:
        assert frames[-1]["data"]["reason"] == "logged_out"
        assert code == 4001
    assert elapsed < LOGOUT_BOUND, elapsed
