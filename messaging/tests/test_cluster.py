"""Many processes, one chat: two real server processes, a Redis of the test's own, real clients.

Every frame of the protocol crosses from one process to the other; Redis
restarted, PostgreSQL stopped and a process killed are survived without losing
a stored message. These run on PostgreSQL (`make test`'s second pass); the
helpers are in `cluster.py`.
"""

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
import redis.asyncio as redis
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from websockets.exceptions import ConnectionClosed

from conftest import PASSWORD, db_call, make_user, token_for
from messaging import services
from messaging.models import Message
from messaging.realtime.redis_bridge import unpack
from messaging.tests.cluster import (
    BASE_DIR,
    CLUSTER_TEST,
    AdminSession,
    Nginx,
    PostgresCluster,
    RedisServer,
    Socket,
    call,
    migrate,
    nginx_binary,
    order_problem,
    postgres_bin,
    process_of,
    send_and_ack,
    start_servers,
    stop_servers,
)

pytestmark = CLUSTER_TEST

# Typing expires after 1 s here instead of 3: the same timer, a shorter wait.
TYPING_TIMEOUT_MS = 1000
SERVER_ENV = {"RATE_LIMIT_ENABLED": "0", "TYPING_TIMEOUT_MS": TYPING_TIMEOUT_MS}


def prefix(name: str) -> str:
    """A channel prefix of this run and pair, so that no two pairs hear each other."""
    return f"biogram-cluster-{os.getpid()}-{name}"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def redis_server():
    """A redis-server of this module's own, on a free port."""
    redis = RedisServer().start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def cluster(django_db_setup, redis_server):
    """Two server processes, A and B, on the test database and the module's Redis."""
    servers = start_servers(
        2, {**SERVER_ENV, "REDIS_URL": redis_server.url, "CHANNEL_LAYER_PREFIX": prefix("main")}
    )
    yield servers
    stop_servers(servers)


@pytest.fixture
def start_pair(transactional_db):
    """`start_pair(redis, name, **env)`: two processes of this test's own (to break them)."""
    pairs = []

    def start(redis: RedisServer, name: str, **env):
        servers = start_servers(
            2,
            {**SERVER_ENV, "REDIS_URL": redis.url, "CHANNEL_LAYER_PREFIX": prefix(name), **env},
        )
        pairs.append(servers)
        return servers

    yield start
    for servers in pairs:
        stop_servers(servers)


@pytest.fixture
def dave(transactional_db):
    return make_user("dave")


@pytest.fixture
def team(user, other_user, third_user, dave):
    """A group chat of alice (owner), bob, carol and dave."""
    chat, _ = services.create_chat(
        creator=user, member_ids=[other_user.pk, third_user.pk, dave.pk], title="Team"
    )
    return chat


@pytest.fixture
def moderator(transactional_db):
    """A superuser whose password the servers can check (the test process hashes with MD5)."""
    someone = make_user("moderator", is_staff=True, is_superuser=True)
    someone.password = PBKDF2PasswordHasher().encode(PASSWORD, "clustersalt", iterations=1000)
    someone.save(update_fields=["password"])
    return someone


def stored_messages(chat) -> list[tuple[int, int, str | None]]:
    """(id, seq, clientMessageId) of every message stored in the chat, by seq."""
    messages = Message.objects.filter(chat=chat).order_by("seq")
    return list(messages.values_list("id", "seq", "client_message_id"))


# ---------------------------------------------------------------- every frame crosses


async def test_messages_cross_between_processes_in_both_directions(
    cluster, open_socket, user, other_user, chat
):
    a, b = cluster
    alice = await open_socket(a, user)
    bob = await open_socket(b, other_user)

    sent = await send_and_ack(alice, chat.pk, "from A")
    received_on_b = await bob.receive_type("message")
    reply = await send_and_ack(bob, chat.pk, "from B")
    received_on_a = await alice.receive_type("message")

    assert process_of(alice) != process_of(bob)
    assert received_on_b["data"]["message"] == sent
    assert received_on_a["data"]["message"] == reply
    assert [sent["seq"], reply["seq"]] == ["1", "2"]


async def test_typing_and_its_expiry_cross_processes(cluster, open_socket, user, other_user, chat):
    a, b = cluster
    alice = await open_socket(a, user)
    bob = await open_socket(b, other_user)

    await alice.send("typing", chatId=str(chat.pk))
    started = time.monotonic()
    typing = await bob.receive_type("typing")
    stopped = await bob.receive_type("typing", within=5)
    elapsed = time.monotonic() - started

    assert typing["data"] == {
        "chatId": str(chat.pk),
        "senderId": str(user.pk),
        "userId": str(user.pk),
        "isTyping": True,
        "expiresInMs": TYPING_TIMEOUT_MS,
    }
    assert stopped["data"] == {**typing["data"], "isTyping": False}
    assert 0.7 <= elapsed <= 3


async def test_read_receipt_crosses_processes(cluster, open_socket, user, other_user, chat):
    a, b = cluster
    alice = await open_socket(a, user)
    bob = await open_socket(b, other_user)
    sent = await send_and_ack(alice, chat.pk, "read me")
    await bob.receive_type("message")

    await bob.send("read", chatId=str(chat.pk))

    receipt = await alice.receive_type("read")
    assert receipt["data"]["userId"] == str(other_user.pk)
    assert receipt["data"]["messageId"] == sent["id"]
    assert receipt["data"]["seq"] == "1"


async def test_presence_connect_and_graceful_disconnect_cross_processes(
    cluster, open_socket, user, other_user, chat
):
    a, b = cluster
    alice = await open_socket(a, user)

    bob = await open_socket(b, other_user)
    came_online = await alice.receive_type("connect")
    await bob.close()
    went_offline = await alice.receive_type("disconnect")

    assert came_online == {"type": "connect", "data": {"userId": str(other_user.pk)}}
    assert went_offline == {"type": "disconnect", "data": {"userId": str(other_user.pk)}}


async def test_a_users_presence_reaches_co_members_on_both_processes_in_one_redis_message(
    cluster, redis_server, open_socket, user, other_user, third_user, dave, team
):
    a, b = cluster
    alice, dave_socket = await open_socket(a, user), await open_socket(a, dave)
    bob = await open_socket(b, other_user)
    await alice.receive_type("connect", userId=str(other_user.pk))
    await dave_socket.receive_type("connect", userId=str(other_user.pk))
    listener = redis.Redis.from_url(redis_server.url)
    heard = listener.pubsub()
    await heard.psubscribe(f"{prefix('main')}:*")
    await heard.get_message(timeout=5)  # the psubscribe confirmation

    carol = await open_socket(b, third_user)
    announced = [
        await someone.receive_type("connect", userId=str(third_user.pk))
        for someone in (alice, dave_socket, bob)
    ]
    carols_presence = {"type": "connect", "data": {"userId": str(third_user.pk)}}
    published = []
    while (message := await heard.get_message(timeout=0.5)) is not None:
        for envelope in unpack(message["data"]):
            if "text" in envelope["m"] and orjson.loads(envelope["m"]["text"]) == carols_presence:
                published.append(envelope)
    await heard.aclose()
    await listener.aclose()

    assert process_of(carol) != process_of(alice)
    assert announced == [carols_presence] * 3
    # One publish for the three co-members, heard by both processes, not one per co-member.
    assert len(published) == 1
    assert sorted(published[0]["gs"]) == sorted(
        f"user.{someone.pk}" for someone in (user, other_user, dave)
    )


async def test_connect_frame_lists_members_online_on_the_other_process(
    cluster, open_socket, user, other_user, chat
):
    a, b = cluster
    await open_socket(a, user)

    bob = await open_socket(b, other_user)

    assert bob.connect_frame["data"]["online"] == [str(user.pk)]


async def test_user_still_connected_on_the_other_process_is_not_announced_offline(
    cluster, open_socket, user, other_user, chat
):
    a, b = cluster
    alice = await open_socket(a, user)
    bob_phone = await open_socket(a, other_user)
    await alice.receive_type("connect", userId=str(other_user.pk))

    bob_laptop = await open_socket(b, other_user)
    await bob_laptop.close()
    frames = await alice.frames_within(1.5)

    assert bob_phone.connect_frame["data"]["userId"] == str(other_user.pk)
    assert [f for f in frames if f["type"] in {"connect", "disconnect"}] == []


async def test_chat_added_and_removed_by_rest_on_one_process_reach_the_member_on_the_other(
    cluster, open_socket, user, third_user
):
    a, b = cluster
    carol = await open_socket(a, third_user)
    owner = token_for(user)

    status, created = await asyncio.to_thread(
        call,
        b.url,
        "POST",
        "/api/chats/",
        {"memberIds": [str(third_user.pk)], "title": "New"},
        token=owner,
    )
    added = await carol.receive_type("chat")
    chat_id = created["id"]
    await asyncio.to_thread(
        call, b.url, "POST", f"/api/chats/{chat_id}/messages/", {"text": "welcome"}, token=owner
    )
    welcome = await carol.receive_type("message")
    removed_status, _ = await asyncio.to_thread(
        call, b.url, "DELETE", f"/api/chats/{chat_id}/members/{third_user.pk}/", token=owner
    )
    removed = await carol.receive_type("chat")
    await asyncio.to_thread(
        call, b.url, "POST", f"/api/chats/{chat_id}/messages/", {"text": "gone"}, token=owner
    )
    after = await carol.frames_within(0.7)

    assert status == 201
    assert added["data"] == {"chatId": chat_id, "event": "added"}
    assert welcome["data"]["message"]["text"] == "welcome"
    assert removed_status == 204
    assert removed["data"] == {"chatId": chat_id, "event": "removed"}
    assert [f for f in after if f["type"] == "message"] == []


async def test_moderator_delete_in_the_admin_of_one_process_reaches_members_on_the_other(
    cluster, open_socket, user, other_user, chat, moderator
):
    a, b = cluster
    alice = await open_socket(a, user)
    bob = await open_socket(a, other_user)
    spam = await send_and_ack(alice, chat.pk, "spam")

    admin = await asyncio.to_thread(AdminSession(b.url).login, moderator.username)
    page = await asyncio.to_thread(
        admin.run_action, "/admin/messaging/message/", "delete_messages", spam["id"]
    )

    expected = {
        "type": "delete",
        "data": {"chatId": str(chat.pk), "messageId": spam["id"], "seq": "1", "rev": "2"},
    }
    assert "1 message(s) deleted." in page
    assert await alice.receive_type("delete") == expected
    assert await bob.receive_type("delete") == expected


async def test_delete_from_a_management_shell_reaches_members_on_a_server_process(
    cluster, open_socket, user, other_user, chat, moderator
):
    """Moderation outside any server (a shell, a cron job) publishes through Redis too."""
    a, _ = cluster
    bob = await open_socket(a, other_user)
    spam = await send_and_ack(await open_socket(a, user), chat.pk, "spam")
    code = (
        "from accounts.models import User; from messaging import services;"
        " from messaging.models import Message;"
        f" services.delete_message(message=Message.objects.get(pk={spam['id']}),"
        f" moderator=User.objects.get(pk={moderator.pk}))"
    )

    shell = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=BASE_DIR,
        env=a.env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    try:
        deleted = await bob.receive_type("delete")
    except TimeoutError:
        deleted = None

    assert shell.returncode == 0, shell.stderr
    assert deleted == {
        "type": "delete",
        "data": {"chatId": str(chat.pk), "messageId": spam["id"], "seq": "1", "rev": "2"},
    }


async def test_ban_in_the_admin_of_one_process_closes_the_users_socket_on_the_other(
    cluster, open_socket, user, other_user, chat, moderator
):
    a, b = cluster
    bob = await open_socket(a, other_user)

    admin = await asyncio.to_thread(AdminSession(b.url).login, moderator.username)
    page = await asyncio.to_thread(
        admin.run_action, "/admin/accounts/user/", "ban_users", other_user.pk
    )
    frames, code = await bob.frames_until_closed()

    assert "1 user(s) banned." in page
    assert frames[-1] == {
        "type": "disconnect",
        "data": {"userId": str(other_user.pk), "reason": "banned"},
    }
    assert code == 4001


# ---------------------------------------------------------------- ordering


async def collect_seqs(socket: Socket, chat_id, count: int, within: float) -> list[int]:
    """The seqs of the chat's `message` frames as they arrive, until `count` or the deadline."""
    seqs = []
    deadline = time.monotonic() + within
    while len(seqs) < count:
        try:
            frame = await socket.receive(within=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        if frame["type"] == "message" and frame["data"]["chatId"] == str(chat_id):
            seqs.append(int(frame["data"]["message"]["seq"]))
    return seqs


async def test_two_senders_on_two_processes_interleave_500_messages_and_all_members_get_seq_1_to_500_in_order(
    cluster, open_socket, user, other_user, third_user, dave, team
):
    a, b = cluster
    alice = await open_socket(a, user)
    carol = await open_socket(a, third_user)
    bob = await open_socket(b, other_user)
    dave_socket = await open_socket(b, dave)
    members = {"alice (A)": alice, "carol (A)": carol, "bob (B)": bob, "dave (B)": dave_socket}
    readers = {
        name: asyncio.create_task(collect_seqs(socket, team.pk, 500, within=60))
        for name, socket in members.items()
    }

    async def send_250(socket: Socket, sender: str):
        for n in range(250):
            cid = f"{sender}-{n}"
            await socket.send("message", chatId=str(team.pk), text=cid, clientMessageId=cid)

    await asyncio.gather(send_250(alice, "alice"), send_250(bob, "bob"))
    received = {name: await reader for name, reader in readers.items()}

    stored = [seq for _, seq, _ in await db_call(stored_messages)(team)]
    problems = {name: order_problem(seqs, 500) for name, seqs in received.items()}
    assert stored == list(range(1, 501))
    assert problems == dict.fromkeys(members)


async def collect_revs(socket: Socket, chat_id, count: int, within: float) -> list[int]:
    """The revs of the chat's log frames (message, update, delete) as they arrive."""
    revs = []
    deadline = time.monotonic() + within
    while len(revs) < count:
        try:
            frame = await socket.receive(within=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        data = frame["data"]
        if frame["type"] in ("message", "update", "delete") and data["chatId"] == str(chat_id):
            revs.append(int(data["rev"] if frame["type"] == "delete" else data["message"]["rev"]))
    return revs


async def test_edits_and_reactions_from_two_processes_take_revs_without_hole_and_every_member_gets_them_in_order(
    cluster, open_socket, user, other_user, third_user, dave, team
):
    a, b = cluster
    alice = await open_socket(a, user)
    carol = await open_socket(a, third_user)
    bob = await open_socket(b, other_user)
    dave_socket = await open_socket(b, dave)
    members = {"alice (A)": alice, "carol (A)": carol, "bob (B)": bob, "dave (B)": dave_socket}
    changes_each = 150
    total = 10 + 2 * changes_each
    readers = {
        name: asyncio.create_task(collect_revs(socket, team.pk, total, within=60))
        for name, socket in members.items()
    }
    own = {"alice": [], "bob": []}
    for n in range(5):  # over REST, so that only the readers read the sockets
        for name, someone, server in (("alice", user, a), ("bob", other_user, b)):
            _, message = await asyncio.to_thread(
                call,
                server.url,
                "POST",
                f"/api/chats/{team.pk}/messages/",
                {"text": f"{name}-{n}"},
                token=token_for(someone),
            )
            own[name].append(message)

    async def change(socket: Socket, sender: str):
        """Each a change: a reaction switched on, then off again, and an edit of its own."""
        messages = own["alice"] + own["bob"]
        for n in range(changes_each):
            target = {"chatId": str(team.pk)}
            key = n // 3
            if n % 3 == 2:
                mine = own[sender][key % 5]
                await socket.send("edit", messageId=mine["id"], text=f"{sender} {n}", **target)
            else:
                message = messages[key % len(messages)]
                await socket.send(
                    "react",
                    messageId=message["id"],
                    emoji=f"{sender}{key}",
                    on=n % 3 == 0,
                    **target,
                )

    await asyncio.gather(change(alice, "alice"), change(bob, "bob"))
    received = {name: await reader for name, reader in readers.items()}

    def log_of(chat):
        chat.refresh_from_db()
        return chat.last_rev, sorted(
            Message.objects.filter(chat=chat).values_list("rev", flat=True)
        )

    last_rev, message_revs = await db_call(log_of)(team)
    problems = {name: order_problem(revs, total) for name, revs in received.items()}
    assert last_rev == total
    assert max(message_revs) == total and len(set(message_revs)) == len(message_revs)
    assert problems == dict.fromkeys(members)


# ---------------------------------------------------------------- faults


async def test_redis_restarted_during_traffic_processes_recover_and_sync_misses_nothing(
    start_pair, open_socket, user, other_user, chat
):
    redis = RedisServer().start()
    try:
        a, b = start_pair(redis, "redis-restart")
        alice = await open_socket(a, user)
        bob = await open_socket(b, other_user)
        live: dict[str, dict] = {}

        async def read_live():
            while True:
                frame = await bob.receive_type("message", within=120)
                live[frame["data"]["message"]["id"]] = frame["data"]["message"]

        reader = asyncio.create_task(read_live())
        acked = []
        for n in range(60):
            acked.append(await send_and_ack(alice, chat.pk, f"m{n}"))
            if n == 20:
                await asyncio.to_thread(redis.stop)
            if n == 40:
                await asyncio.to_thread(redis.start)
            # Redis stays away ~5 s: longer than the layer retries a publish, so some are lost.
            await asyncio.sleep(0.25 if 20 <= n < 40 else 0.02)
        # Recovered without a restart: a message sent now crosses live again.
        deadline = time.monotonic() + 15
        probe = None
        while time.monotonic() < deadline:
            probe = await send_and_ack(alice, chat.pk, f"probe {time.monotonic()}")
            await asyncio.sleep(0.3)
            if probe["id"] in live:
                break
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader

        await bob.send("sync", chats={str(chat.pk): "0"})
        replayed = []
        while (frame := await bob.receive(within=10))["type"] != "sync":
            if frame["type"] == "message":
                replayed.append(frame["data"]["message"])
        ready = [
            (await asyncio.to_thread(call, server.url, "GET", "/readyz"))[0] for server in (a, b)
        ]
    finally:
        redis.stop()

    stored = [message_id for message_id, _, _ in await db_call(stored_messages)(chat)]
    seen = {m["id"]: m for m in [*live.values(), *replayed]}
    assert probe["id"] in live, "no message crossed live within 15 s of Redis coming back"
    assert sorted(int(m["seq"]) for m in seen.values()) == list(range(1, len(stored) + 1))
    assert {int(i) for i in seen} == set(stored)
    assert {m["id"] for m in acked} <= set(seen)
    assert ready == [200, 200]


async def test_postgres_down_sends_answer_unavailable_and_work_again_once_it_is_back(
    start_pair, redis_server, open_socket
):
    if postgres_bin() is None:
        pytest.skip("initdb/pg_ctl not found under /usr/lib/postgresql/*/bin")
    postgres = await asyncio.to_thread(PostgresCluster().init)
    try:
        await asyncio.to_thread(postgres.start)
        database_url = await asyncio.to_thread(postgres.create_database, "biogram")
        await asyncio.to_thread(migrate, database_url)
        a, b = await asyncio.to_thread(
            start_pair, redis_server, "outage", DATABASE_URL=database_url
        )
        tokens, ids = {}, {}
        for name in ("alice", "bob"):
            body = {"username": name, "password": PASSWORD}
            _, registered = await asyncio.to_thread(
                call, a.url, "POST", "/api/auth/register/", body
            )
            _, pair = await asyncio.to_thread(call, a.url, "POST", "/api/auth/token/", body)
            ids[name], tokens[name] = registered["id"], pair["access"]
        _, chat = await asyncio.to_thread(
            call, a.url, "POST", "/api/chats/", {"memberIds": [ids["bob"]]}, token=tokens["alice"]
        )
        alice = await open_socket(a, tokens["alice"])
        bob = await open_socket(b, tokens["bob"])
        before = await send_and_ack(alice, chat["id"], "before")
        await bob.receive_type("message")

        await asyncio.to_thread(postgres.stop, "fast")
        await alice.send("message", chatId=chat["id"], text="during", clientMessageId="during")
        refused = await alice.receive_type("error")
        delivered_while_down = await bob.frames_within(1)
        ready_while_down = [
            (await asyncio.to_thread(call, server.url, "GET", "/readyz"))[0] for server in (a, b)
        ]

        await asyncio.to_thread(postgres.start)
        retried = None
        deadline = time.monotonic() + 15
        while retried is None and time.monotonic() < deadline:
            await alice.send("message", chatId=chat["id"], text="during", clientMessageId="during")
            frame = await alice.receive(within=5)
            if frame["type"] == "message":
                retried = frame["data"]["message"]
            else:
                await asyncio.sleep(0.5)
        received = await bob.receive_type("message", within=5)
        ready_after = [
            (await asyncio.to_thread(call, server.url, "GET", "/readyz"))[0] for server in (a, b)
        ]
    finally:
        await asyncio.to_thread(postgres.destroy)

    assert before["seq"] == "1"
    assert refused["data"]["code"] == "unavailable"
    assert refused["data"]["ref"] == "during"
    assert [f for f in delivered_while_down if f["type"] == "message"] == []
    assert ready_while_down == [503, 503]
    assert retried is not None, "sending did not work again within 15 s of PostgreSQL's restart"
    assert retried["seq"] == "2"
    assert received["data"]["message"] == retried
    assert ready_after == [200, 200]


async def test_process_killed_mid_traffic_its_clients_resume_on_the_other_without_hole_or_duplicate(
    start_pair, redis_server, open_socket, user, other_user, third_user, team
):
    a, b = start_pair(redis_server, "sigkill")
    per_sender = 60
    killed = asyncio.Event()
    acked: dict[str, dict] = {}
    half_way = asyncio.Event()

    async def connect_somewhere(someone, servers) -> Socket:
        """What a client behind a load balancer does: the first process that answers."""
        deadline = time.monotonic() + 10
        while True:
            for server in servers:
                try:
                    return await open_socket(server, someone)
                except Exception:  # refused, reset, or not yet answering: try the next
                    continue
            if time.monotonic() > deadline:
                raise AssertionError("no process accepted the reconnect")
            await asyncio.sleep(0.2)

    async def sender(someone, name: str, first_server):
        socket = await open_socket(first_server, someone)
        n = 0
        while n < per_sender:
            cid = f"{name}-{n}"
            try:
                acked[cid] = await send_and_ack(socket, team.pk, cid)
            except (ConnectionClosed, TimeoutError):
                # Resent with the same clientMessageId, as the client's outbox does.
                socket = await connect_somewhere(someone, [a, b] if not killed.is_set() else [a])
                continue
            n += 1
            if name == "alice" and n == per_sender // 3:
                half_way.set()
            await asyncio.sleep(0.01)

    received: dict[str, dict] = {}

    async def receiver(socket: Socket, done: asyncio.Event):
        """Bob: live messages; after the drop, reconnect and `sync` from his last gap-free seq.

        Reads until the senders are done and a second passes without a frame.
        """
        while True:
            try:
                frame = await socket.receive(within=1)
            except TimeoutError:
                if done.is_set():
                    return
                continue
            except ConnectionClosed:
                socket = await connect_somewhere(other_user, [a])
                held = 0
                while held + 1 in {int(m["seq"]) for m in received.values()}:
                    held += 1
                await socket.send("sync", chats={str(team.pk): str(held)})
                continue
            if frame["type"] == "message":
                received[frame["data"]["message"]["id"]] = frame["data"]["message"]

    async def kill_b():
        await half_way.wait()
        await asyncio.to_thread(b.stop, signal.SIGKILL)
        killed.set()

    senders_done = asyncio.Event()
    reading = asyncio.create_task(receiver(await open_socket(b, other_user), senders_done))
    await asyncio.gather(sender(user, "alice", b), sender(third_user, "carol", a), kill_b())
    senders_done.set()
    await reading
    stored = await db_call(stored_messages)(team)

    assert killed.is_set()
    assert [seq for _, seq, _ in stored] == list(range(1, len(stored) + 1))
    assert sorted(cid for _, _, cid in stored) == sorted(acked)
    assert {m["id"] for m in acked.values()} <= {str(i) for i, _, _ in stored}
    assert sorted(int(m["seq"]) for m in received.values()) == list(range(1, len(stored) + 1))
    assert {int(i) for i in received} == {i for i, _, _ in stored}


async def test_user_whose_only_process_was_killed_is_announced_offline_within_30_seconds(
    start_pair, redis_server, open_socket, user, other_user, chat
):
    # A beat a second: the dead process is noticed after 3 s instead of 15 (the same sweep).
    a, b = start_pair(redis_server, "presence-kill", PRESENCE_HEARTBEAT_SECONDS=1)
    alice = await open_socket(a, user)
    await open_socket(b, other_user)
    await alice.receive_type("connect", userId=str(other_user.pk))

    await asyncio.to_thread(b.stop, signal.SIGKILL)
    try:
        offline = await alice.receive_type("disconnect", within=30)
    except TimeoutError:
        offline = None

    assert offline == {"type": "disconnect", "data": {"userId": str(other_user.pk)}}


# ---------------------------------------------------------------- nginx in front


@pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (make nginx)")
async def test_message_crosses_processes_through_nginx_and_its_access_log_has_no_token(
    cluster, open_socket, user, other_user, chat
):
    tokens = [token_for(user), token_for(other_user)]
    nginx = await asyncio.to_thread(Nginx([server.port for server in cluster]).start)
    try:
        alice = await open_socket(nginx, tokens[0])
        # least_conn sends the next socket to the other process; check, and retry if not.
        bob = await open_socket(nginx, tokens[1])
        for _ in range(3):
            if process_of(bob) != process_of(alice):
                break
            bob = await open_socket(nginx, tokens[1])
        sent = await send_and_ack(alice, chat.pk, "through nginx")
        received = await bob.receive_type("message")
        status, history = await asyncio.to_thread(
            call, nginx.url, "GET", f"/api/chats/{chat.pk}/messages/", token=tokens[0]
        )
        metrics_status, _ = await asyncio.to_thread(call, nginx.url, "GET", "/metrics")
        await alice.close()
        await bob.close()
        await asyncio.to_thread(nginx.stop)
        access_log, error_log = nginx.access_log(), nginx.error_log()
    finally:
        await asyncio.to_thread(nginx.stop)
        nginx.remove()

    assert process_of(bob) != process_of(alice)
    assert received["data"]["message"] == sent
    assert status == 200
    assert history["results"] == [sent]
    assert metrics_status == 404
    assert "GET /ws/chat/ HTTP/1.1" in access_log
    assert "token=" not in access_log
    for token in tokens:
        assert token.split(".")[2] not in access_log + error_log
