"""Redis Cluster (`REDIS_CLUSTER_NODES`): sharded pub/sub on fixed partitions, and a subscriber
that follows the slot map by itself.

Plain PUBLISH on a cluster copies every message to every node; `SPUBLISH` goes
to the one shard that owns the channel's slot. The layer publishes each event
on its chat's *partition*: one of `REDIS_CLUSTER_PARTITIONS` shard channels,
each named with a hash tag chosen so that its slot lies in the middle of the
partition's share of the 16,384 slots. With the usual even allocation (any
number of masters dividing the partitions) the partitions split evenly over
the masters (12 over 3: 4 each); naive tags such as `{p0}`…`{p11}` hash where
crc16 puts them (3/3/6 over three masters).

Every process subscribes to every partition, one connection per master holding
the partitions it owns, so the subscriptions never change as sockets come and
go; an event for a chat without a member here is dropped on arrival
(docs/scaling.md weighs this). Each process also has a shard channel of its own
for `send` to one of its channels.

redis-py's ClusterPubSub resubscribes a lost connection to the *same* node and
moves channels only when the client's slot map is refreshed, so a subscriber
that does nothing else stays deaf to a promoted replica. `ShardedSubscriber`
refreshes the map itself: when a node's connection fails, when a node says a
channel's slot moved (`sunsubscribe`), and every `FOLLOW_SECONDS` anyway; each
partition is then subscribed on the node that owns its slot now. Events
published while a shard fails over are lost to live delivery, never to storage:
the next event of the chat reveals the hole, which the Sequencer fills from the
database, and a client that reconnects gets everything with `sync`.
"""

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Callable
from functools import cache

from redis.crc import key_slot

from biogram.logging import process_task
from messaging.realtime.redis_bridge import (
    raise_if_cancelled,
    redis_client,
    redis_outage,
    retry_pause,
)

logger = logging.getLogger(__name__)

SLOTS = 16384
# How often the subscriber checks the slot map even when nothing went wrong (a slot moved by
# a reshard, a failover whose old master's connection stayed open).
FOLLOW_SECONDS = 1.0


@cache
def partition_tags(count: int) -> tuple[str, ...]:
    """A hash tag per partition whose slot lies in the middle half of the partition's equal share
    of the slots (found by trying short strings in order, so every process finds the same)."""
    tags = []
    for i in range(count):
        low, high = i * SLOTS // count, (i + 1) * SLOTS // count
        margin = (high - low) // 4
        n = 0
        while not low + margin <= key_slot(f"b{i}.{n}".encode()) < high - margin:
            n += 1
        tags.append(f"b{i}.{n}")
    return tuple(tags)


class Partitions:
    """The shard channels of a deployment: `count` partitions under `prefix`."""

    def __init__(self, prefix: str, count: int):
        self.prefix = prefix
        self.count = count
        self.tags = partition_tags(count)

    def channel(self, index: int) -> str:
        return f"{{{self.tags[index]}}}{self.prefix}:part:{index}"

    def index(self, name: str) -> int:
        return zlib.crc32(name.encode()) % self.count

    def channels(self) -> list[str]:
        return [self.channel(i) for i in range(self.count)]

    def channel_of(self, name: str) -> str:
        """The shard channel of a layer name: `g:<group>` (its partition) or `p:<process>` (the
        process's own, in its partition's slot)."""
        kind, _, rest = name.partition(":")
        index = self.index(rest)
        if kind == "p":
            return f"{{{self.tags[index]}}}{self.prefix}:p:{rest}"
        return self.channel(index)


def cluster_nodes(value: str) -> list[tuple[str, int]]:
    """`host:port,host:port` → [(host, port), …]."""
    nodes = []
    for item in value.split(","):
        host, _, port = item.strip().rpartition(":")
        nodes.append((host or "127.0.0.1", int(port)))
    return nodes


def cluster_client(nodes: str):
    """An asyncio Redis Cluster client for the server's long-lived connections."""
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes(nodes)],
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
    )


def shared_client():
    """The client of what the processes share: the cluster (REDIS_CLUSTER_NODES) or one Redis.

    Presence and the socket cap use it with single-key commands and non-transactional
    pipelines only, which a cluster client splits by node: their keys (one hash per user, one
    set per process) spread over the shards, and no command or script spans two slots.
    """
    from django.conf import settings

    if settings.REDIS_CLUSTER_NODES:
        return cluster_client(settings.REDIS_CLUSTER_NODES)
    return redis_client(settings.REDIS_URL)


class _NodeReader:
    """One connection to one master, SSUBSCRIBEd to the partitions it owns; reads until it fails."""

    def __init__(self, subscriber: "ShardedSubscriber", node, channels: set[str]):
        import redis.asyncio as redis

        self.subscriber = subscriber
        self.name = node.name
        self.client = redis.Redis(
            host=node.host, port=node.port, socket_connect_timeout=2, health_check_interval=15
        )
        self.pubsub = self.client.pubsub()
        self.channels: set[str] = set()
        self.wanted = set(channels)
        self.dead = False
        self.task = process_task(subscriber.loop, self._read(), name=f"redis-shard-{node.name}")

    async def _subscribe_wanted(self) -> None:
        # One SSUBSCRIBE per channel: a command's channels must share a slot.
        for channel in sorted(self.wanted - self.channels):
            await self.pubsub.ssubscribe(channel)
            self.channels.add(channel)
        for channel in sorted(self.channels - self.wanted):
            await self.pubsub.sunsubscribe(channel)
            self.channels.discard(channel)

    def want(self, channels: set[str]) -> None:
        if channels != self.wanted:
            self.wanted = set(channels)
            process_task(self.subscriber.loop, self._resubscribe())

    async def _resubscribe(self) -> None:
        try:
            await self._subscribe_wanted()
        except Exception as exc:
            self._failed(exc)

    async def _read(self) -> None:
        try:
            await self._subscribe_wanted()
            while True:
                raise_if_cancelled()
                message = await self.pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind = message["type"]
                if kind == "smessage":
                    self.subscriber.on_message(message["data"])
                elif kind == "sunsubscribe":
                    channel = message["channel"]
                    channel = channel.decode() if isinstance(channel, bytes) else channel
                    if channel in self.wanted:  # the node gave the slot away: follow it
                        self.channels.discard(channel)
                        self.subscriber.changed.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        if not self.dead:
            self.dead = True
            logger.info("shard subscriber of %s lost (%s); following the slot map", self.name, exc)
            self.subscriber.changed.set()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.client.aclose()


class ShardedSubscriber:
    """The process's sharded subscriptions: every partition and its own channel, each on the master
    that owns its slot now. Calls `on_message(data)` for every message."""

    def __init__(
        self,
        client,
        *,
        partitions: Partitions,
        loop,
        channels: set[str],
        on_message: Callable[[bytes], None],
    ):
        self.client = client
        self.partitions = partitions
        self.loop = loop
        self.on_message = on_message
        self.channels = set(partitions.channels()) | {partitions.channel_of(c) for c in channels}
        self.readers: dict[str, _NodeReader] = {}
        self.changed = asyncio.Event()
        self.ready = asyncio.Event()
        self.task = process_task(loop, self._follow(), name="redis-shard-subscriber")

    async def subscribe(self, name: str) -> None:
        """Nothing to do: every partition is subscribed all the time."""

    def unsubscribe(self, name: str) -> None:
        """Nothing to do: the partition carries other chats too."""

    def owners(self) -> dict[str, set[str]]:
        """Master name → the channels whose slot it owns, by the client's current slot map."""
        owned: dict[str, set[str]] = {}
        for channel in self.channels:
            node = self.client.nodes_manager.get_node_from_slot(key_slot(channel.encode()))
            owned.setdefault(node.name, set()).add(channel)
        return owned

    async def _follow(self) -> None:
        attempt = 0
        while True:
            try:
                raise_if_cancelled()
                self.changed.clear()
                await self.client.nodes_manager.initialize()
                await self._reconcile(self.owners())
                self.ready.set()
                redis_outage.recovered()
                attempt = 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.changed.wait(), FOLLOW_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt = await retry_pause(attempt, exc)

    async def _reconcile(self, owned: dict[str, set[str]]) -> None:
        for name, reader in list(self.readers.items()):
            if reader.dead or name not in owned:
                del self.readers[name]
                await reader.close()
        for name, channels in owned.items():
            reader = self.readers.get(name)
            if reader is None:
                node = self.client.nodes_manager.nodes_cache[name]
                self.readers[name] = _NodeReader(self, node, channels)
            else:
                reader.want(channels)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
        for reader in list(self.readers.values()):
            await reader.close()
        self.readers.clear()
