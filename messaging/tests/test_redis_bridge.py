"""The Redis link between processes: what the publisher puts on the wire, against a real Redis.

Runs in `make test`'s PostgreSQL + Redis pass (skipped without REDIS_URL)."""

import asyncio
import uuid

import orjson
import pytest
import redis.asyncio as redis
from django.conf import settings

from messaging.realtime.redis_bridge import RedisPublisher, redis_client, unpack

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")


async def test_a_run_of_publishes_on_one_channel_is_one_message_and_nothing_changes_order():
    prefix = f"test-bridge-{uuid.uuid4().hex}"
    listener = redis.Redis.from_url(settings.REDIS_URL)
    heard = listener.pubsub()
    await heard.psubscribe(f"{prefix}:*")
    await heard.get_message(timeout=5)  # the psubscribe confirmation
    client = redis_client(settings.REDIS_URL)
    publisher = RedisPublisher(
        client, prefix=prefix, origin="here", loop=asyncio.get_running_loop()
    )
    sent = [("e:all", 1), ("e:all", 2), ("e:all", 3), ("g:chat.7", 4), ("e:all", 5), ("e:all", 6)]

    for name, n in sent:  # queued in one turn of the loop: one pipeline
        publisher.publish_soon(name, {"n": n})
    await publisher.flushed()
    messages = []
    while (message := await heard.get_message(timeout=0.5)) is not None:
        if message["type"] == "pmessage":
            messages.append(message)
    await heard.aclose()
    await listener.aclose()
    await client.aclose()

    # Three runs in a row on a channel: three messages, the runs joined, every payload in order.
    assert [m["channel"].decode() for m in messages] == [
        f"{prefix}:e:all",
        f"{prefix}:g:chat.7",
        f"{prefix}:e:all",
    ]
    heard_in_order = [
        (m["channel"].decode().removeprefix(f"{prefix}:"), payload)
        for m in messages
        for payload in unpack(m["data"])
    ]
    assert heard_in_order == [(name, {"o": "here", "n": n}) for name, n in sent]
    # A payload alone is sent as it is, not in an array.
    assert isinstance(orjson.loads(messages[1]["data"]), dict)
