"""Clients that churn: a tenth of them drop and reconnect every second while everyone sends.

A client that comes back sends `sync` with the last seq it holds with nothing
missing below it (and its rev), and sends again what it sent and never saw
acknowledged, under the same `clientMessageId`. In the end every client must
hold every stored message of its chat exactly once (it drops repeats by `id`,
as docs/protocol.md says), with no hole; the frames of one connection must
come in seq order; and every message sent is stored exactly once. This is the
failure Channels users report (channels #1683: gaps under client churn).
Correctness, not a timing test; `make bench` has the long run.
"""

import asyncio
import contextlib
import json
import random

import pytest
from django.db.models import Count
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from conftest import db_call, make_user, token_for
from messaging import services
from messaging.models import Message

pytestmark = pytest.mark.live

CHATS = 4
MEMBERS = 10
SECONDS = 8
RATE = 200  # messages/s, all clients together
CHURN = 0.1  # of the clients, each second


class Client:
    """One member: a socket that comes and goes, what it holds, what it still has to send."""

    def __init__(self, server, user, chat):
        self.server, self.user, self.chat = server, user, str(chat.pk)
        self.held: dict[str, int] = {}  # message id -> seq
        self.rev = 0
        self.unacked: dict[str, str] = {}  # clientMessageId -> text
        self.socket = None
        self.order_problems: list[str] = []
        self.reader: asyncio.Task | None = None
        self.connections = 0

    def contiguous(self) -> int:
        seqs = set(self.held.values())
        last = 0
        while last + 1 in seqs:
            last += 1
        return last

    async def connect(self) -> None:
        url = f"{self.server.ws_url}/ws/chat/?token={token_for(self.user)}"
        self.socket = await ws_connect(url, max_queue=None)
        assert json.loads(await self.socket.recv())["type"] == "connect"
        self.connections += 1
        coming_back = self.connections > 1
        self.reader = asyncio.create_task(self.read(self.socket, replaying=coming_back))
        if coming_back:
            held = {"seq": str(self.contiguous()), "rev": str(self.rev)}
            await self.socket.send(
                json.dumps({"type": "sync", "data": {"chats": {self.chat: held}}})
            )
        for client_id, text in list(self.unacked.items()):  # retried: stored at most once
            await self.send(client_id, text)

    async def read(self, socket, *, replaying: bool) -> None:
        """Keep every message once (by id); live frames, those after the sync summary on a
        connection that synced, must come in seq order."""
        last_live = 0
        try:
            async for raw in socket:
                frame = json.loads(raw)
                if frame["type"] == "sync":
                    replaying = False
                if frame["type"] != "message":
                    continue
                message = frame["data"]["message"]
                seq = int(message["seq"])
                if message["id"] in self.held:
                    # A repeat (replayed and live, or the answer to a retried send: the stored
                    # message again): dropped by id.
                    if self.held[message["id"]] != seq:
                        self.order_problems.append(f"message {message['id']} with two seqs")
                else:
                    if not replaying:
                        if seq <= last_live:
                            self.order_problems.append(f"seq {seq} after {last_live}")
                        last_live = seq
                    self.held[message["id"]] = seq
                self.rev = max(self.rev, int(message["rev"]))
                if message["senderId"] == str(self.user.pk):
                    self.unacked.pop(message["clientMessageId"], None)
        except ConnectionClosed:
            pass

    async def send(self, client_id: str, text: str) -> None:
        self.unacked[client_id] = text
        frame = {"chatId": self.chat, "text": text, "clientMessageId": client_id}
        with contextlib.suppress(ConnectionClosed):  # if closed: sent again after the reconnect
            await self.socket.send(json.dumps({"type": "message", "data": frame}))

    async def drop(self) -> None:
        await self.socket.close()
        await self.reader


def stored_per_chat() -> dict[str, int]:
    counts = Message.objects.values("chat_id").annotate(n=Count("id"))
    return {str(row["chat_id"]): row["n"] for row in counts}


def make_chats():
    made = []
    for c in range(CHATS):
        users = [make_user(f"churn{c}_{m}") for m in range(MEMBERS)]
        chat, _ = services.create_chat(
            creator=users[0], member_ids=[u.pk for u in users[1:]], title=f"churn {c}"
        )
        made.append((chat, users))
    return made


async def test_clients_churning_while_everyone_sends_end_with_every_message_once_and_no_hole(
    start_live_server,
):
    server = start_live_server(RATE_LIMIT_ENABLED=0, LOG_LEVEL="WARNING")
    chats = await db_call(make_chats)()
    clients = [Client(server, user, chat) for chat, users in chats for user in users]
    await asyncio.gather(*(c.connect() for c in clients))
    rng = random.Random(1683)
    sent = 0

    async def churn_one(client: Client) -> None:
        await client.drop()
        await asyncio.sleep(rng.uniform(0.05, 0.3))
        await client.connect()

    churns = []
    for tick in range(SECONDS * 10):  # every 100 ms: a tenth of a second's sends and churn
        for _ in range(RATE // 10):
            client = clients[sent % len(clients)]
            await client.send(f"{client.user.pk}-{sent}", f"churn #{sent}")
            sent += 1
        if tick % 10 == 0:
            for client in rng.sample(clients, int(len(clients) * CHURN)):
                churns.append(asyncio.create_task(churn_one(client)))
        await asyncio.sleep(0.1)
    await asyncio.gather(*churns)

    await asyncio.sleep(1)  # the last sends reach the writer
    stored = await db_call(stored_per_chat)()

    async def caught_up(client: Client) -> None:
        for _ in range(300):
            held = len(client.held)
            if not client.unacked and client.contiguous() == held >= stored[client.chat]:
                return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(asyncio.gather(*(caught_up(c) for c in clients)), 60)
    for client in clients:
        await client.drop()

    assert sum(stored.values()) == sent, f"{sum(stored.values())} stored of {sent} sent"
    for client in clients:
        seqs = sorted(client.held.values())
        assert seqs == list(range(1, stored[client.chat] + 1)), (
            f"{client.user.username} holds {len(seqs)} of {stored[client.chat]}, first hole at "
            f"{next((i + 1 for i, s in enumerate(seqs) if s != i + 1), None)}"
        )
        assert not client.unacked, f"{client.user.username}: never acknowledged {client.unacked}"
        assert not client.order_problems, client.order_problems[:5]
