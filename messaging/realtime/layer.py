"""ChatChannelLayer: a channel layer that fans out in process and bridges processes through Redis pub/sub.

Why not Channels' layers (docs/benchmarks.md has the numbers): the in-memory
layer walks every channel on each send, deep-copies each message per member and
wakes each consumer to re-dispatch it; the Redis layers send one Redis message
per member (or drop past a capacity of 100 with an INFO line). Here a publish
hands the same, already encoded event to every local member's *sink* (a plain
function the consumer attached: it appends to the socket's outbox), and
publishes it to Redis once per group, where every other process that has
members of the group receives it once and does the same. One event for
several groups (a user's presence, to each co-member) is published once, on
a channel every process hears, naming its groups.

Beyond Channels' layer API (`new_channel`, `send`, `receive`, `group_add`,
`group_discard`, `group_send`, `flush`), the project uses these, and only these:

- `publish(group, event)` / `publish_many(pairs)`: the one way the project
  sends a group event (through `messaging.events.publish`). Callable from any
  thread and never blocks: in the serving event loop it delivers to local
  members at once and queues the Redis publish; from another thread it hands
  the events to that loop in order; in a process that serves no socket (a
  shell, a management command) a publisher thread of its own sends them, and
  the process waits for it at exit.
- `attach(channel, sink)` / `detach(channel)`: a channel whose events go to a
  plain function, synchronously, instead of a queue (the consumer's outbox).
- `prime_order(group, last_seq, last_rev)`: the group's chat-log events (new
  messages and changes of them) carry revs and the chat's log ends at
  `last_rev` (its last message at `last_seq`); local members then receive
  them in rev order, whichever process or thread stored them (`Sequencer`).

Channels without a sink (any ordinary consumer) get the standard queue, so the
layer still serves everything else in Django.
"""

import asyncio
import atexit
import contextlib
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from messaging import metrics
from messaging.realtime.redis_bridge import RedisPublisher, RedisSubscriber, redis_client, unpack
from messaging.realtime.redis_cluster import Partitions, ShardedSubscriber, cluster_client
from messaging.realtime.sequencer import Sequencer
from messaging.realtime.wire import corked

logger = logging.getLogger(__name__)

# How long a process that serves no socket waits at exit for its publishes to reach Redis.
EXIT_FLUSH_SECONDS = 10.0
# How long a process's first sockets wait for its Redis subscriber to listen (`first_listening`).
FIRST_LISTEN_WAIT = 2.0
# The layer name of the channel every process subscribes to, beside its own (`p:<process id>`)
# and its groups' (`g:<group>`): one event for several groups (`_envelopes`).
EVERYONE = "e:all"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class ChatChannelLayer(BaseChannelLayer):
    extensions = ["groups", "flush"]

    def __init__(
        self,
        hosts=None,
        prefix="biogram",
        capacity=1000,
        expiry=60,
        cluster_nodes=None,
        partitions=12,
        **kwargs,
    ):
        super().__init__(expiry=expiry, capacity=capacity, **kwargs)
        self.process_id = secrets.token_hex(6)
        self.serial = itertools.count(1)
        self.prefix = prefix
        # Redis Cluster (redis_cluster.py) when `cluster_nodes` ("host:port,…"), else one Redis.
        self.cluster_nodes = cluster_nodes or None
        self.partitions = Partitions(prefix, partitions) if self.cluster_nodes else None
        # Set when processes are bridged (one Redis or a cluster).
        self.redis_url = (hosts[0] if hosts else None) or self.cluster_nodes
        self.channels: dict[str, asyncio.Queue] = {}
        self.groups: dict[str, dict[str, None]] = {}
        self.memberships: dict[str, set[str]] = {}  # channel -> its groups (for detach)
        self.sinks: dict[str, Callable[[dict], None]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.bridge: _Bridge | None = None
        self.sequencer = Sequencer(self.fan_out)
        self.detached: _DetachedPublisher | None = None
        self.detached_lock = threading.Lock()

    # ------------------------------------------------------------ publishing (the project's entry)

    def publish(self, group: str, event: dict) -> None:
        """Send `event` to every member of `group`, on every process; any thread, never blocks."""
        self.publish_many(((group, event),))

    def publish_many(self, pairs: Iterable[tuple[str, dict]]) -> None:
        """`publish` for several events at once, in order (one hand-over between threads)."""
        loop = self.loop
        if loop is not None and loop.is_running():
            if _running_loop() is loop:
                self._publish_here(pairs)
            else:
                loop.call_soon_threadsafe(self._publish_here, tuple(pairs))
        elif self.redis_url:
            # No socket is served by this process: nobody local to deliver to.
            self._detached_publisher().publish_many(tuple(pairs))

    def _publish_here(self, pairs: Iterable[tuple[str, dict]]) -> None:
        pairs = tuple(pairs)
        # A batch of events (a writer's batch) reaches each socket in one write (`wire.corked`).
        with corked():
            for group, event in pairs:
                try:
                    self._deliver_group(group, event)
                except Exception:
                    metrics.LAYER_SEND_FAILURES.inc()
                    logger.exception("delivery to group %s failed", group)
        if self.redis_url:
            publisher = self._bridge().publisher
            for name, payload in _envelopes(pairs):
                publisher.publish_soon(name, payload)

    async def _published(self) -> None:
        """Wait until what this thread's publishes queued for Redis has been sent."""
        if not self.redis_url:
            return
        loop = self.loop
        if loop is not None and loop.is_running():
            if _running_loop() is loop:
                await self._bridge().publisher.flushed()
            else:
                await asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(self._bridge_flushed(), loop)
                )
        elif self.detached is not None:
            await asyncio.to_thread(self.detached.flush, EXIT_FLUSH_SECONDS)

    async def _bridge_flushed(self) -> None:
        await self._bridge().publisher.flushed()

    def _detached_publisher(self) -> "_DetachedPublisher":
        with self.detached_lock:
            if self.detached is None:
                self.detached = _DetachedPublisher(self)
            return self.detached

    # ------------------------------------------------------------ ordering and sinks

    def attach(self, channel: str, sink: Callable[[dict], None]) -> None:
        """Hand every event for `channel` to `sink`, synchronously, in the event loop."""
        self.sinks[channel] = sink

    def detach(self, channel: str) -> None:
        """Forget a channel: its sink, its queue and its groups (the consumer is gone)."""
        self.sinks.pop(channel, None)
        self.channels.pop(channel, None)
        for group in self.memberships.pop(channel, ()):
            self._discard(group, channel)

    def prime_order(self, group: str, last_seq: int, last_rev: int) -> None:
        """The group's chat-log events carry revs; the log ends at `last_rev`, its last
        message at `last_seq`."""
        self.sequencer.prime(group, last_seq, last_rev)

    # ------------------------------------------------------------ Channels' layer API

    async def new_channel(self, prefix="specific"):
        self._bind_loop()
        # Unique within the process, and the process id makes it unique across processes.
        return f"{prefix}.{self.process_id}!{next(self.serial)}"

    async def send(self, channel, message):
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        if self._is_local(channel):
            if self.loop is not None and _running_loop() is not self.loop:
                self.loop.call_soon_threadsafe(self._deliver_quietly, channel, message)
            else:
                self._deliver_to_channel(channel, message)
        elif self.redis_url:
            owner = channel.split("!", 1)[0].rsplit(".", 1)[-1]
            payload = {"c": channel, "m": message}
            if self.loop is not None and self.loop.is_running() and _running_loop() is self.loop:
                self._bridge().publisher.publish_soon(f"p:{owner}", payload)
            else:
                self._detached_publisher().publish_raw(f"p:{owner}", payload)
            await self._published()

    async def receive(self, channel):
        self.require_valid_channel_name(channel)
        self._bind_loop()
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        return await queue.get()

    async def group_add(self, group, channel):
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._bind_loop()
        members = self.groups.get(group)
        if members is None:
            members = self.groups[group] = {}
            if self.redis_url:
                bridge = self._bridge()
                await bridge.subscriber.subscribe(f"g:{group}")
                await bridge.first_listening()
        members[channel] = None
        self.memberships.setdefault(channel, set()).add(group)

    async def group_discard(self, group, channel):
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._discard(group, channel)

    async def group_send(self, group, message):
        """Channels' API: `publish`, then wait until Redis has the event (for callers that
        end right after, such as a management command in `async_to_sync`)."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        self.publish(group, message)
        await self._published()

    async def flush(self):
        self.channels.clear()
        self.groups.clear()
        self.memberships.clear()
        self.sequencer = Sequencer(self.fan_out)
        self.sinks.clear()
        if self.bridge is not None:
            await self.bridge.close()
            self.bridge = None

    async def close(self):
        await self.flush()

    # ------------------------------------------------------------ delivery

    def _is_local(self, channel: str) -> bool:
        return f".{self.process_id}!" in channel or not self.redis_url

    def _deliver_to_channel(self, channel: str, message: dict) -> None:
        sink = self.sinks.get(channel)
        if sink is not None:
            sink(message)
            return
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        try:
            queue.put_nowait(message)
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    def _deliver_quietly(self, channel: str, message: dict) -> None:
        try:
            self._deliver_to_channel(channel, message)
        except ChannelFull:
            logger.warning("channel %s is full; event %s dropped", channel, message.get("type"))

    def _deliver_group(self, group: str, message: dict) -> None:
        if group not in self.groups:
            return  # no member here (and no ordering state to keep for it)
        if message.get("rev") is not None and message.get("type") == "chat.frame":
            self.sequencer.offer(group, message)
        else:
            self.fan_out(group, message)

    def fan_out(self, group: str, message: dict) -> None:
        """Hand `message` to every local member of `group` (the sequencer calls this in order)."""
        members = self.groups.get(group)
        if not members:
            return
        stored_at = message.get("stored_at")
        for channel in tuple(members):
            try:
                self._deliver_to_channel(channel, message)
            except ChannelFull:
                logger.warning("channel %s is full; event %s dropped", channel, message.get("type"))
            except Exception:
                logger.exception("delivery to %s failed", channel)
        if stored_at is not None:
            # Each local member's outbox has the frame (most already sent): store to last send.
            metrics.FANOUT_SECONDS.observe(max(0.0, time.time() - stored_at))

    def _discard(self, group: str, channel: str) -> None:
        joined = self.memberships.get(channel)
        if joined is not None:
            joined.discard(group)
            if not joined:
                del self.memberships[channel]
        members = self.groups.get(group)
        if members is None:
            return
        members.pop(channel, None)
        if not members:
            del self.groups[group]
            self.sequencer.forget(group)
            if self.bridge is not None:
                self.bridge.subscriber.unsubscribe(f"g:{group}")

    def _receive_remote(self, data: bytes) -> None:
        """A message from another process, through Redis: one envelope or several. What cannot
        be read is logged and skipped: raised, it would cost the subscriber its connection,
        and the messages in flight behind it."""
        try:
            envelopes = unpack(data)
        except ValueError:
            logger.warning("undecodable message on the bridge")
            return
        # Several envelopes (a burst's presence events): a socket's frames of them in one write.
        with corked():
            for envelope in envelopes:
                try:
                    self._receive_envelope(envelope)
                except Exception:
                    metrics.LAYER_SEND_FAILURES.inc()
                    logger.exception("an envelope from the bridge could not be delivered")

    def _receive_envelope(self, envelope: dict) -> None:
        if envelope.get("o") == self.process_id:
            return  # our own publish: local members already have it
        if "g" in envelope:
            self._deliver_group(envelope["g"], envelope["m"])
        elif "gs" in envelope:
            for group in envelope["gs"]:
                self._deliver_group(group, envelope["m"])
        elif "c" in envelope:
            self._deliver_quietly(envelope["c"], envelope["m"])

    # ------------------------------------------------------------ loop and bridge

    def _bind_loop(self) -> None:
        running = asyncio.get_running_loop()
        if self.loop is not running:
            if self.loop is not None and not self.loop.is_closed():
                return
            # A new loop (tests start one per test): state of a closed loop is dead.
            self.loop = running
            self.channels.clear()
            self.groups.clear()
            self.memberships.clear()
            self.sequencer = Sequencer(self.fan_out)
            self.sinks.clear()
            self.bridge = None

    def _bridge(self) -> "_Bridge":
        running = asyncio.get_running_loop()
        if self.bridge is None or self.bridge.loop is not running:
            if self.loop is None or self.loop.is_closed():
                self.loop = running
            self.bridge = _Bridge(self, running)
        return self.bridge


class _Bridge:
    """This process's Redis link in its serving loop: a publisher and a subscriber."""

    def __init__(self, layer: ChatChannelLayer, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        own = {f"p:{layer.process_id}", EVERYONE}
        if layer.partitions is not None:
            client = cluster_client(layer.cluster_nodes)
            self.subscriber = ShardedSubscriber(
                client,
                partitions=layer.partitions,
                loop=loop,
                channels=own,
                on_message=layer._receive_remote,
            )
        else:
            client = redis_client(layer.redis_url)
            self.subscriber = RedisSubscriber(
                client,
                prefix=layer.prefix,
                loop=loop,
                channels=own,
                on_message=layer._receive_remote,
            )
        self.publisher = _publisher(layer, client, loop)
        self.client = client
        self.listened = False

    async def first_listening(self) -> None:
        """Wait (a while) until the subscriber has listened once. The bridge starts with the
        process's first socket, whose `connect` frame must not go out before this process can
        hear what other processes publish next (a co-member's presence: nothing replays it).
        Once it has listened, never again: a later outage must not hold up connects."""
        if self.listened:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.subscriber.ready.wait()), FIRST_LISTEN_WAIT)
        self.listened = True

    async def close(self) -> None:
        await self.publisher.close()
        await self.subscriber.close()
        try:
            await self.client.aclose()
        except Exception:
            logger.debug("closing the redis client failed", exc_info=True)


def _envelopes(pairs: Iterable[tuple[str, dict]]):
    """What goes to Redis for these (group, event) pairs: (layer name, payload) per group, except
    for one event published to several groups in a row (the same object: a user's presence to
    each co-member), which goes once, on the channel every process hears (`EVERYONE`), naming
    its groups: one publish, and one message for each process to read, instead of one per
    group (docs/benchmarks.md, 2026-12-04d)."""
    # By identity: every event is alive in `pairs` meanwhile, so no two share an id.
    for _, run in itertools.groupby(pairs, key=lambda pair: id(pair[1])):
        (group, event), *others = run
        if others:
            yield EVERYONE, {"gs": [group, *(other for other, _ in others)], "m": event}
        else:
            yield f"g:{group}", {"g": group, "m": event}


def _publisher(layer: ChatChannelLayer, client, loop) -> RedisPublisher:
    """PUBLISH on `<prefix>:<name>` (one Redis), or SPUBLISH on the name's partition (cluster)."""
    partitions = layer.partitions
    return RedisPublisher(
        client,
        prefix=layer.prefix,
        origin=layer.process_id,
        loop=loop,
        channel_of=partitions.channel_of if partitions is not None else None,
        sharded=partitions is not None,
        refresh=client.nodes_manager.initialize if partitions is not None else None,
    )


class _DetachedPublisher:
    """Publishes for a process that serves no socket: its own thread and event loop, so that no
    caller waits on Redis; at exit the process waits (a while) until Redis has everything."""

    def __init__(self, layer: ChatChannelLayer):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="layer-publisher", daemon=True
        )
        self.thread.start()
        client = (
            cluster_client(layer.cluster_nodes)
            if layer.partitions
            else redis_client(layer.redis_url)
        )
        self.publisher = _publisher(layer, client, self.loop)
        atexit.register(self.flush, EXIT_FLUSH_SECONDS)

    def publish_many(self, pairs: tuple) -> None:
        for name, payload in _envelopes(pairs):
            self.publish_raw(name, payload)

    def publish_raw(self, name: str, payload: dict) -> None:
        self.loop.call_soon_threadsafe(self.publisher.publish_soon, name, payload)

    def flush(self, timeout: float) -> None:
        """Block until what was published so far reached Redis (or `timeout` passed)."""
        if self.loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self.publisher.flushed(), self.loop)
        try:
            future.result(timeout)
        except Exception:
            logger.warning("publishes still waiting for Redis were given up at exit")
