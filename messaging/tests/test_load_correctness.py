"""Correctness under load (not a timing test): many clients send at once against a real server.

Every member must receive every message of their chat exactly once, in seq
order with no hole, and the database must hold exactly what was acknowledged.
This is the batching writer, the in-process fan-out and the outbox working
together while thousands of messages are in flight.
"""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect as ws_connect

from conftest import db_call, make_user, token_for
from messaging import services
from messaging.models import Message

pytestmark = pytest.mark.live

CHATS = 4
MEMBERS = 8
MESSAGES_EACH = 100  # 4 chats x 8 members x 100 = 3,200 messages, 25,600 deliveries


@pytest.fixture
def unthrottled_server(start_live_server):
    return start_live_server(RATE_LIMIT_ENABLED=0, LOG_LEVEL="WARNING")


def make_chats():
    chats = []
    for c in range(CHATS):
        users = [make_user(f"load{c}_{m}") for m in range(MEMBERS)]
        chat, _ = services.create_chat(
            creator=users[0], member_ids=[u.pk for u in users[1:]], title=f"load {c}"
        )
        chats.append((chat, users))
    return chats


async def member(server, user, chat, ready: asyncio.Barrier, received: dict):
    """Connect, wait for everyone, send MESSAGES_EACH messages, read until all arrived."""
    expected = MEMBERS * MESSAGES_EACH
    url = f"{server.ws_url}/ws/chat/?token={token_for(user)}"
    async with ws_connect(url, max_queue=None) as socket:
        connect = json.loads(await socket.recv())
        assert connect["type"] == "connect", connect
        seqs = received[user.pk] = []

        async def send_all():
            await ready.wait()
            for n in range(MESSAGES_EACH):
                await socket.send(
                    json.dumps(
                        {
                            "type": "message",
                            "data": {
                                "chatId": str(chat.pk),
                                "text": f"{user.username} #{n}",
                                "clientMessageId": f"{user.pk}-{n}",
                            },
                        }
                    )
                )

        sender = asyncio.create_task(send_all())
        await ready.wait()
        while len(seqs) < expected:
            frame = json.loads(await asyncio.wait_for(socket.recv(), 30))
            assert frame["type"] in {"message", "connect", "disconnect"}, frame
            if frame["type"] == "message":
                assert frame["data"]["chatId"] == str(chat.pk), frame
                seqs.append(int(frame["data"]["message"]["seq"]))
        await sender


async def test_thousands_of_concurrent_messages_reach_every_member_once_in_seq_order(
    unthrottled_server,
):
    chats = await db_call(make_chats)()
    ready = asyncio.Barrier(CHATS * MEMBERS * 2)
    received: dict = {}

    await asyncio.wait_for(
        asyncio.gather(
            *(
                member(unthrottled_server, user, chat, ready, received)
                for chat, users in chats
                for user in users
            )
        ),
        timeout=120,
    )

    per_chat = MEMBERS * MESSAGES_EACH
    for _chat, users in chats:
        for user in users:
            assert received[user.pk] == list(range(1, per_chat + 1)), (
                f"{user.username}: {len(received[user.pk])} messages, first out of order at "
                f"{next((i for i, s in enumerate(received[user.pk]) if s != i + 1), None)}"
            )
    stored = await db_call(lambda: list(Message.objects.values_list("chat_id", "seq")))()
    assert len(stored) == CHATS * per_chat
    for chat, _users in chats:
        assert sorted(seq for chat_id, seq in stored if chat_id == chat.pk) == list(
            range(1, per_chat + 1)
        )
