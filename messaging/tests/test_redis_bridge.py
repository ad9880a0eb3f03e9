"""The Redis link between processes: what the publisher puts on the wire, against a real Redis.

Runs in `make test`'s PostgreSQL + Redis pass (skipped without REDIS_URL)."""

import asyncio
import uuid

import orjson
import pytest
import redis.asyncio as redis
from django.conf import settings

from messaging.realtime import redis_bridge
from messaging.realtime.redis_bridge import RedisPublisher, redis_client, unpack

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")


async def published(sent: list[tuple[str, int]]) -> list[tuple[str, bytes]]:
    """Queue `sent` (layer name, n) in one turn of the loop (one pipeline) and return what Redis
    delivered to a subscriber: (layer name, message) in order."""
    prefix = f"test-bridge-{uuid.uuid4().hex}"
    listener = redis.Redis.from_url(settings.REDIS_URL)
    heard = listener.pubsub()
    await heard.psubscribe(f"{prefix}:*")
    await heard.get_message(timeout=5)  # the psubscribe confirmation
    client = redis_client(settings.REDIS_URL)
    publisher = RedisPublisher(
        client, prefix=prefix, origin="here", loop=asyncio.get_running_loop()
    )

    for name, n in sent:
        publisher.publish_soon(name, {"n": n})
    await publisher.flushed()
    messages = []
    while (message := await heard.get_message(timeout=0.5)) is not None:
        if message["type"] == "pmessage":
            channel = message["channel"].decode().removeprefix(f"{prefix}:")
            messages.append((channel, message["data"]))
    await heard.aclose()
    await listener.aclose()
    await client.aclose()
    return messages


def payloads(messages: list[tuple[str, bytes]]) -> list[tuple[str, dict]]:
    return [(channel, payload) for channel, data in messages for payload in unpack(data)]


async def test_a_run_of_publishes_on_one_channel_is_one_message_and_nothing_changes_order():
    sent = [("e:all", 1), ("e:all", 2), ("e:all", 3), ("g:chat.7", 4), ("e:all", 5), ("e:all", 6)]

    messages = await published(sent)

    # Three runs in a row on a channel: three messages, every payload in the order sent.
    assert [channel for channel, _ in messages] == ["e:all", "g:chat.7", "e:all"]
    assert payloads(messages) == [(name, {"o": "here", "n": n}) for name, n in sent]
    # A payload alone goes as it is. A joined run names no group, so that a process of an
    # earlier release (which reads `g`, `gs` or `c`) ignores it rather than failing on it.
    assert orjson.loads(messages[1][1]) == {"o": "here", "n": 4}
    joined = orjson.loads(messages[0][1])
    assert joined.keys() == {"o", "b"} and joined["o"] == "here"


async def test_a_long_run_is_split_into_messages_of_at_most_run_payloads():
    sent = [("e:all", n) for n in range(redis_bridge.RUN_PAYLOADS + 10)]

    messages = await published(sent)

    assert [len(unpack(data)) for _, data in messages] == [redis_bridge.RUN_PAYLOADS, 10]
    assert payloads(messages) == [(name, {"o": "here", "n": n}) for name, n in sent]
