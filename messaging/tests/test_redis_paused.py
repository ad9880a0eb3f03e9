"""A Redis that hangs (SIGSTOP: connections stay open, nothing answers) holds up no local delivery.

The REST send path used to hold the lock that orders publishes while waiting
for Redis to take its event, and every socket send waited on the same lock.
Publishing now never waits on Redis, from any thread.
"""

import asyncio
import contextlib
import os
import shutil
import signal
import time

import pytest
from django.conf import settings

from conftest import token_for
from messaging.tests.cluster import RedisServer, Socket, call, start_servers, stop_servers

pytestmark = [
    pytest.mark.live,
    pytest.mark.cluster,
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
        reason="cluster tests need DATABASE_URL on PostgreSQL (make test's second pass)",
    ),
    pytest.mark.skipif(
        shutil.which("redis-server") is None, reason="redis-server is not installed"
    ),
]

DELIVERY_BOUND = 0.100  # seconds: the bound for a local delivery while Redis hangs


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
