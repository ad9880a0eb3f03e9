"""Three server processes on a Redis Cluster of three masters and three replicas, all real.

The cluster is the test's own (`RedisCluster`: six `redis-server --cluster-enabled yes` on
free ports, joined by `redis-cli --cluster create`). Every frame type crosses processes over
sharded pub/sub; the partitions split evenly over the masters; a master SIGKILLed mid-traffic
and a slot migrated under load are followed by the subscribers themselves, and after `sync`
nothing stored is missing; presence survives a process killed. PostgreSQL pass only.
"""

import asyncio
import signal
import subprocess
import time

import pytest
from redis.crc import key_slot

from conftest import db_call, make_user, token_for
from messaging import events, services
from messaging.models import Message
from messaging.realtime.redis_cluster import Partitions, partition_tags
from messaging.testing import RedisCluster
from messaging.tests.cluster import (
    CLUSTER_TEST,
    Socket,
    call,
    order_problem,
    process_of,
    send_and_ack,
    start_servers,
    stop_servers,
)
from messaging.tests.test_cluster import collect_seqs

pytestmark = CLUSTER_TEST

PARTITIONS = 12
TYPING_TIMEOUT_MS = 1000


def server_env(redis: RedisCluster, name: str) -> dict:
    return {
        "REDIS_CLUSTER_NODES": redis.nodes,
        "REDIS_URL": "",  # the cluster, not the test run's own Redis
        "REDIS_CLUSTER_PARTITIONS": PARTITIONS,
        "CHANNEL_LAYER_PREFIX": f"biogram-rc-{name}",
        "RATE_LIMIT_ENABLED": "0",
        "TYPING_TIMEOUT_MS": TYPING_TIMEOUT_MS,
    }


@pytest.fixture(scope="module")
def redis_cluster():
    cluster = RedisCluster(masters=3, replicas=1).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def trio(django_db_setup, redis_cluster):
    """Three server processes, A, B and C, on the module's cluster."""
    servers = start_servers(3, server_env(redis_cluster, "main"))
    yield servers
    stop_servers(servers)


@pytest.fixture
def own_cluster(transactional_db):
    """A cluster and three processes of the test's own, to break: `(cluster, servers)`."""
    made = []

    def start(name: str, **env):
        cluster = RedisCluster(masters=3, replicas=1).start()
        made.append(cluster)
        servers = start_servers(3, {**server_env(cluster, name), **env})
        made.append(servers)
        return cluster, servers

    yield start
    for thing in reversed(made):
        if isinstance(thing, RedisCluster):
            thing.stop()
        else:
            stop_servers(thing)


def shard_channels(cluster: RedisCluster, port: int, pattern: str) -> list[str]:
    out = cluster.cli(port, "PUBSUB", "SHARDCHANNELS", pattern)
    return [line for line in out.splitlines() if line]


def owner_port(cluster: RedisCluster, slot: int) -> int | None:
    """The port of the master serving `slot` (None while none does: a failover)."""
    for row in cluster.node_table():
        if row["role"] != "master" or row["failed"]:
            continue
        for part in row["slots"]:
            if part.startswith("["):
                continue  # a slot being imported or migrated
            low, _, high = part.partition("-")
            if int(low) <= slot <= int(high or low):
                return row["port"]
    return None


def chat_partition_slot(chat_id, prefix: str) -> int:
    channel = Partitions(prefix, PARTITIONS).channel_of(f"g:{events.chat_group(chat_id)}")
    return key_slot(channel.encode())


# ---------------------------------------------------------------- partitions


def test_partition_tags_put_each_partition_in_its_own_share_of_the_slots():
    tags = partition_tags(PARTITIONS)
    share = 16384 / PARTITIONS
    slots = [key_slot(f"{{{tag}}}x".encode()) for tag in tags]

    assert [int(slot // share) for slot in slots] == list(range(PARTITIONS))
    # The naive tags are where crc16 puts them: three masters' thirds get 3, 3 and 6.
    naive = [key_slot(f"{{p{i}}}x".encode()) * 3 // 16384 for i in range(PARTITIONS)]
    assert sorted(naive.count(third) for third in range(3)) == [3, 3, 6]


async def test_the_partitions_split_evenly_over_the_masters(trio, redis_cluster, open_socket, user):
    for server in trio:  # a process subscribes once it serves a socket
        await open_socket(server, user)
    masters = redis_cluster.masters_ports()
    counts = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        counts = {
            port: len(shard_channels(redis_cluster, port, "*biogram-rc-main:part:*"))
            for port in masters
        }
        if sum(counts.values()) == PARTITIONS:
            break
        await asyncio.sleep(0.2)

    assert sorted(counts.values()) == [4, 4, 4], counts
    own = [shard_channels(redis_cluster, port, "*biogram-rc-main:p:*") for port in masters]
    assert sum(len(channels) for channels in own) == 3  # each process's own channel


# ---------------------------------------------------------------- every frame crosses


async def test_every_frame_type_crosses_three_processes(
    trio, open_socket, user, other_user, third_user
):
    a, b, c = trio
    chat, _ = await db_call(services.create_chat)(
        creator=user, member_ids=[other_user.pk], title="Three"
    )
    alice = await open_socket(a, user)
    bob = await open_socket(b, other_user)
    carol = await open_socket(c, third_user)
    assert len({process_of(s) for s in (alice, bob, carol)}) == 3
    await alice.receive_type("connect", userId=str(other_user.pk))

    sent = await send_and_ack(alice, chat.pk, "hello")
    assert (await bob.receive_type("message"))["data"]["message"] == sent

    await bob.send("typing", chatId=str(chat.pk))
    assert (await alice.receive_type("typing"))["data"]["isTyping"] is True

    await bob.send("delivered", chatId=str(chat.pk), seq="1")
    assert (await alice.receive_type("delivered", within=5))["data"]["seq"] == "1"

    await bob.send("read", chatId=str(chat.pk))
    assert (await alice.receive_type("read"))["data"]["userId"] == str(other_user.pk)

    await alice.send("edit", chatId=str(chat.pk), messageId=sent["id"], text="hello, edited")
    assert (await bob.receive_type("update"))["data"]["message"]["text"] == "hello, edited"

    assert (await alice.receive_type("update"))["data"]["message"]["reactions"] == []  # her edit
    await bob.send("react", chatId=str(chat.pk), messageId=sent["id"], emoji="👍")
    reacted = await alice.receive_type("update")
    assert reacted["data"]["message"]["reactions"] == [
        {"emoji": "👍", "userIds": [str(other_user.pk)]}
    ]

    await alice.send("delete", chatId=str(chat.pk), messageId=sent["id"])
    assert (await bob.receive_type("delete"))["data"]["messageId"] == sent["id"]

    await db_call(services.add_member)(actor=user, chat_id=chat.pk, user_id=third_user.pk)
    added = await carol.receive_type("chat")
    assert added["data"]["chatId"] == str(chat.pk)
    assert await alice.receive_type("connect", userId=str(third_user.pk))

    # Through REST on process B: its announcements cross to the sockets on A and C.
    owner = token_for(user)
    path = f"/api/chats/{chat.pk}/"
    status, _ = await asyncio.to_thread(
        call, b.url, "PATCH", path, {"title": "Renamed"}, token=owner
    )
    renamed = await carol.receive_type("chat", event="updated")
    assert status == 200 and renamed["data"]["chat"]["title"] == "Renamed"

    path = f"/api/chats/{chat.pk}/members/{third_user.pk}/"
    status, _ = await asyncio.to_thread(call, b.url, "DELETE", path, token=owner)
    removed = await carol.receive_type("chat", event="removed")
    assert status == 204 and removed["data"]["chatId"] == str(chat.pk)

    await bob.close()
    assert (await alice.receive_type("disconnect"))["data"] == {"userId": str(other_user.pk)}


async def test_two_senders_on_two_processes_interleave_500_messages_in_order_on_all_three(
    trio, open_socket, user, other_user, third_user
):
    a, b, c = trio
    dave = await db_call(make_user)("dave")
    chat, _ = await db_call(services.create_chat)(
        creator=user, member_ids=[other_user.pk, third_user.pk, dave.pk], title="Five hundred"
    )
    alice = await open_socket(a, user)
    bob = await open_socket(b, other_user)
    carol = await open_socket(c, third_user)
    dave_socket = await open_socket(c, dave)
    members = {"alice (A)": alice, "bob (B)": bob, "carol (C)": carol, "dave (C)": dave_socket}
    readers = {
        name: asyncio.create_task(collect_seqs(socket, chat.pk, 500, within=60))
        for name, socket in members.items()
    }

    async def send_250(socket: Socket, sender: str):
        for n in range(250):
            cid = f"{sender}-{n}"
            await socket.send("message", chatId=str(chat.pk), text=cid, clientMessageId=cid)

    await asyncio.gather(send_250(alice, "alice"), send_250(bob, "bob"))
    received = {name: await reader for name, reader in readers.items()}

    problems = {name: order_problem(seqs, 500) for name, seqs in received.items()}
    assert problems == dict.fromkeys(members)


# ---------------------------------------------------------------- faults


async def chat_on_a_partition_of(cluster, user, others, prefix: str, wanted=None):
    """A chat (made anew until one fits) whose partition's slot `wanted(port, slot)` accepts."""
    for n in range(60):
        chat, _ = await db_call(services.create_chat)(
            creator=user, member_ids=[o.pk for o in others], title=f"fault {n}"
        )
        slot = chat_partition_slot(chat.pk, prefix)
        if wanted is None or wanted(owner_port(cluster, slot), slot):
            return chat, slot
    raise AssertionError("no chat landed where the test wanted it")


async def traffic_until(stop: asyncio.Event, socket: Socket, chat_id, name: str, acked: dict):
    """Send a message every 50 ms, each acknowledged, until `stop`."""
    n = 0
    while not stop.is_set():
        cid = f"{name}-{n}"
        acked[cid] = await send_and_ack(socket, chat_id, cid, within=15)
        n += 1
        await asyncio.sleep(0.05)


async def receive_until_quiet(socket: Socket, chat_id, held: dict, stop: asyncio.Event):
    """Keep every message of the chat by id; return after `stop` once a second passes quiet."""
    while True:
        try:
            frame = await socket.receive(within=1)
        except TimeoutError:
            if stop.is_set():
                return
            continue
        if frame["type"] == "message" and frame["data"]["chatId"] == str(chat_id):
            message = frame["data"]["message"]
            held[message["id"]] = (int(message["seq"]), time.monotonic())


async def sync_the_rest(socket: Socket, chat_id, held: dict) -> None:
    contiguous = 0
    seqs = {seq for seq, _ in held.values()}
    while contiguous + 1 in seqs:
        contiguous += 1
    await socket.send("sync", chats={str(chat_id): str(contiguous)})
    while (frame := await socket.receive(within=10))["type"] != "sync":
        if frame["type"] == "message" and frame["data"]["chatId"] == str(chat_id):
            message = frame["data"]["message"]
            held[message["id"]] = (int(message["seq"]), time.monotonic())


def stored_seqs(chat) -> list[int]:
    return list(Message.objects.filter(chat=chat).order_by("seq").values_list("seq", flat=True))


async def test_a_master_killed_mid_traffic_is_followed_to_its_promoted_replica_and_sync_loses_nothing(
    own_cluster, open_socket, user, other_user
):
    cluster, (a, b, _c) = own_cluster("failover")
    chat, slot = await chat_on_a_partition_of(cluster, user, [other_user], "biogram-rc-failover")
    master = owner_port(cluster, slot)
    alice = await open_socket(a, user)
    bob = await open_socket(b, other_user)
    acked: dict = {}
    held: dict = {}
    stop_sending, stop_reading = asyncio.Event(), asyncio.Event()
    reading = asyncio.create_task(receive_until_quiet(bob, chat.pk, held, stop_reading))
    sending = asyncio.create_task(traffic_until(stop_sending, alice, chat.pk, "alice", acked))
    await asyncio.sleep(1.0)

    # Recovered: bob receives live a message alice sent after the kill.
    before = max(int(message["seq"]) for message in acked.values())
    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.kill, master)
    deadline = killed_at + 60
    recovered_at = None
    while time.monotonic() < deadline and recovered_at is None:
        later = [at for seq, at in held.values() if seq > before and at > killed_at]
        owner = owner_port(cluster, slot)
        recovered_at = min(later) if later and owner not in (None, master) else None
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    stop_sending.set()
    await sending
    stop_reading.set()
    await reading
    await sync_the_rest(bob, chat.pk, held)

    stored = await db_call(stored_seqs)(chat)
    assert recovered_at is not None, (
        f"delivery never resumed after the failover: slot {slot} on {owner_port(cluster, slot)}"
        f" (was {master}); {len(acked)} acknowledged, bob's last seqs"
        f" {sorted(seq for seq, _ in held.values())[-5:]}"
    )
    print(f"\nfailover: live delivery resumed {recovered_at - killed_at:.1f} s after the SIGKILL")
    assert owner_port(cluster, slot) not in (None, master)
    assert sorted(seq for seq, _ in held.values()) == stored == list(range(1, len(stored) + 1))
    assert len(stored) == len(acked)


async def test_a_slot_migrated_under_load_is_followed_and_sync_loses_nothing(
    own_cluster, open_socket, user, other_user
):
    cluster, (a, b, _c) = own_cluster("reshard")
    # A chat on the first master's first partitions, which a reshard of its first slots moves.
    chat, slot = await chat_on_a_partition_of(
        cluster, user, [other_user], "biogram-rc-reshard", wanted=lambda port, slot: slot < 1300
    )
    source = owner_port(cluster, slot)
    ids = {row["port"]: row["id"] for row in cluster.node_table()}
    target = next(port for port in cluster.masters_ports() if port != source)
    alice = await open_socket(a, user)
    bob = await open_socket(b, other_user)
    acked: dict = {}
    held: dict = {}
    stop_sending, stop_reading = asyncio.Event(), asyncio.Event()
    reading = asyncio.create_task(receive_until_quiet(bob, chat.pk, held, stop_reading))
    sending = asyncio.create_task(traffic_until(stop_sending, alice, chat.pk, "alice", acked))
    await asyncio.sleep(0.5)

    moved_at = time.monotonic()
    resharded = await asyncio.to_thread(
        subprocess.run,
        [
            *("redis-cli", "--cluster", "reshard", f"127.0.0.1:{source}"),
            *("--cluster-from", ids[source], "--cluster-to", ids[target]),
            *("--cluster-slots", "1300", "--cluster-yes"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resharded.returncode == 0, resharded.stdout[-500:]
    assert owner_port(cluster, slot) == target
    done_at = time.monotonic()
    await asyncio.sleep(2.0)
    stop_sending.set()
    await sending
    stop_reading.set()
    await reading
    live_after = [seq for seq, at in held.values() if at > done_at + 1.0]
    await sync_the_rest(bob, chat.pk, held)

    stored = await db_call(stored_seqs)(chat)
    print(f"\nreshard of 1,300 slots under load took {done_at - moved_at:.1f} s")
    assert live_after, "nothing was delivered live after the slot moved"
    assert sorted(seq for seq, _ in held.values()) == stored == list(range(1, len(stored) + 1))
    assert len(stored) == len(acked)


async def test_a_user_whose_only_process_was_killed_is_announced_offline(
    own_cluster, open_socket, user, other_user, chat
):
    # A beat a second: the dead process is noticed after 3 s instead of 15 (the same sweep).
    _cluster, (a, _b, c) = own_cluster("presence", PRESENCE_HEARTBEAT_SECONDS=1)
    alice = await open_socket(a, user)
    await open_socket(c, other_user)
    await alice.receive_type("connect", userId=str(other_user.pk))

    await asyncio.to_thread(c.stop, signal.SIGKILL)
    try:
        offline = await alice.receive_type("disconnect", within=30)
    except TimeoutError:
        offline = None

    assert offline == {"type": "disconnect", "data": {"userId": str(other_user.pk)}}
