"""ChatChannelLayer: a channel layer that fans out in process and bridges processes through Redis pub/sub.

Why not Channels' layers (docs/benchmarks.md has the numbers): the in-memory
layer walks every channel on each send, deep-copies each message per member and
wakes each consumer to re-dispatch it; the Redis layers send one Redis message
per member (or drop past a capacity of 100 with an INFO line). Here a
`group_send` hands the same, already encoded event to every local member's
*sink* (a plain function the consumer registered: it appends to the socket's
outbound queue), and publishes it to Redis once per group, where every other
process that has members of the group receives it once and does the same.

A channel with a sink receives every event through it, in order, without a
queue or a task; channels without one (any ordinary consumer) get the standard
queue, so the layer still serves everything else in Django.
"""

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable

import orjson
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from messaging import metrics
from messaging.sequencer import Sequencer

logger = logging.getLogger(__name__)

RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)

# Events waiting for Redis while it is away; past this the oldest are dropped (and counted).
MAX_OUTGOING = 100_000


def raise_if_cancelled() -> None:
    """End the task if it was asked to: a cancellation that a client library turned into another
    exception (a timeout) must not keep a retry loop alive, or the loop's shutdown hangs."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class ChatChannelLayer(BaseChannelLayer):
    extensions = ["groups", "flush"]

    def __init__(self, hosts=None, prefix="biogram", capacity=1000, expiry=60, **kwargs):
        super().__init__(expiry=expiry, capacity=capacity, **kwargs)
        self.process_id = secrets.token_hex(6)
        self.serial = itertools.count(1)
        self.prefix = prefix
        self.redis_url = hosts[0] if hosts else None
        self.channels: dict[str, asyncio.Queue] = {}
        self.groups: dict[str, dict[str, None]] = {}
        self.sinks: dict[str, Callable[[dict], None]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.bridge: RedisBridge | None = None
        # With other processes, messages of one chat arrive from several; put them in seq order.
        self.sequencer = Sequencer(self.fan_out) if self.redis_url else None

    # ------------------------------------------------------------ channels

    async def new_channel(self, prefix="specific"):
        self._bind_loop()
        # Unique within the process, and the process id makes it unique across processes.
        return f"{prefix}.{self.process_id}!{next(self.serial)}"

    def attach(self, channel: str, sink: Callable[[dict], None]) -> None:
        """Hand every event for `channel` to `sink`, synchronously, in the event loop."""
        self.sinks[channel] = sink

    def detach(self, channel: str) -> None:
        """Forget a channel: its sink, its queue and its groups (the consumer is gone)."""
        self.sinks.pop(channel, None)
        self.channels.pop(channel, None)
        for group in [g for g, members in self.groups.items() if channel in members]:
            self._discard(group, channel)

    async def send(self, channel, message):
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        if self._is_local(channel):
            if self._foreign_loop():
                self.loop.call_soon_threadsafe(self._deliver_quietly, channel, message)
            else:
                self._deliver_to_channel(channel, message)
        elif self.redis_url:
            owner = channel.split("!", 1)[0].rsplit(".", 1)[-1]
            await self._publish(f"p:{owner}", {"c": channel, "m": message})

    async def receive(self, channel):
        self.require_valid_channel_name(channel)
        self._bind_loop()
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        return await queue.get()

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

    # ------------------------------------------------------------ groups

    async def group_add(self, group, channel):
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._bind_loop()
        members = self.groups.get(group)
        if members is None:
            members = self.groups[group] = {}
            if self.redis_url:
                await self._bridge().subscribe(f"g:{group}")
        members[channel] = None

    async def group_discard(self, group, channel):
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self._discard(group, channel)

    def _discard(self, group: str, channel: str) -> None:
        members = self.groups.get(group)
        if members is None:
            return
        members.pop(channel, None)
        if not members:
            del self.groups[group]
            if self.sequencer is not None:
                self.sequencer.forget(group)
            if self.redis_url and self.bridge is not None:
                self.bridge.unsubscribe(f"g:{group}")

    async def group_send(self, group, message):
        """Deliver to local members now, then publish once for the other processes."""
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_group_name(group)
        if self._foreign_loop():
            # Sync code's async_to_sync outside the server's loop: members live in that loop.
            self.loop.call_soon_threadsafe(self.deliver_group, group, message)
            if self.redis_url:
                await self._publish(f"g:{group}", {"g": group, "m": message})
            return
        self.group_send_nowait(group, message)
        if self.redis_url:
            # An awaiting caller (sync code through async_to_sync, maybe in a loop that ends
            # when this returns: a management command, a shell) waits until Redis has it.
            await self._bridge().flushed()

    def group_send_nowait(self, group: str, message: dict) -> None:
        """`group_send` for code running in the layer's event loop, without awaiting:
        local members have the event when this returns, and the Redis publish is queued
        behind the earlier ones, so one process publishes in the order it sends."""
        self.deliver_group(group, message)
        if self.redis_url:
            self._bridge().publish_soon(f"g:{group}", {"g": group, "m": message})

    def _foreign_loop(self) -> bool:
        if self.loop is None or self.loop.is_closed():
            return False
        try:
            return asyncio.get_running_loop() is not self.loop
        except RuntimeError:
            return True

    async def _publish(self, name: str, payload: dict) -> None:
        if self._foreign_loop():
            await RedisBridge.publish_once(self, name, payload)
        else:
            bridge = self._bridge()
            bridge.publish_soon(name, payload)
            await bridge.flushed()

    def _deliver_quietly(self, channel: str, message: dict) -> None:
        try:
            self._deliver_to_channel(channel, message)
        except ChannelFull:
            logger.warning("channel %s is full; event %s dropped", channel, message.get("type"))

    def deliver_group(self, group: str, message: dict) -> None:
        if (
            self.sequencer is not None
            and message.get("seq") is not None
            and message.get("type") == "chat.frame"
        ):
            self.sequencer.offer(group, message)
        else:
            self.fan_out(group, message)

    def prime_order(self, group: str, last_seq: int) -> None:
        """The group's events carry seqs and the last one stored is `last_seq`."""
        if self.sequencer is not None:
            self.sequencer.prime(group, last_seq)

    def fan_out(self, group: str, message: dict) -> None:
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

    # ------------------------------------------------------------ flush

    async def flush(self):
        self.channels.clear()
        self.groups.clear()
        self.sequencer = Sequencer(self.fan_out) if self.redis_url else None
        self.sinks.clear()
        if self.bridge is not None:
            await self.bridge.close()
            self.bridge = None

    async def close(self):
        await self.flush()

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
            self.sequencer = Sequencer(self.fan_out) if self.redis_url else None
            self.sinks.clear()
            self.bridge = None

    def _bridge(self) -> "RedisBridge":
        running = asyncio.get_running_loop()
        if self.bridge is None or self.bridge.loop is not running:
            if self.loop is None or self.loop.is_closed():
                self.loop = running
            self.bridge = RedisBridge(self, running)
        return self.bridge


class RedisBridge:
    """One process's link to Redis: publishes, and one subscriber connection that reconnects itself."""

    def __init__(self, layer: ChatChannelLayer, loop):
        self.layer = layer
        self.loop = loop
        self.client = self.connect(layer.redis_url)
        self.wanted: set[str] = {f"p:{layer.process_id}"}
        self.pubsub = None
        self.ready = asyncio.Event()
        self.listener: asyncio.Task = loop.create_task(self.listen())
        self.outgoing: deque[tuple[str, bytes]] = deque()
        self.publisher: asyncio.Task | None = None

    @staticmethod
    def connect(url: str):
        import redis.asyncio as redis

        # redis-py's default pool raises MaxConnectionsError past 100 connections in use (a
        # handshake burst); a blocking pool makes the 65th caller wait for a free one instead.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=64,
            timeout=10,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=15,
        )
        return redis.Redis(connection_pool=pool)

    def key(self, name: str) -> str:
        return f"{self.layer.prefix}:{name}"

    def encode(self, payload: dict) -> bytes:
        return orjson.dumps({"o": self.layer.process_id, **payload})

    def publish_soon(self, name: str, payload: dict) -> None:
        """Queue a publish; one task sends the queue in order, pipelined."""
        if len(self.outgoing) >= MAX_OUTGOING:
            self.outgoing.popleft()
            metrics.LAYER_SEND_FAILURES.inc()
            logger.warning("redis publish queue full; the oldest event was dropped")
        self.outgoing.append((self.key(name), self.encode(payload)))
        if self.publisher is None:
            self.publisher = self.loop.create_task(self.publish_queued())

    async def flushed(self) -> None:
        """Wait until everything queued so far has been published (or given up on)."""
        while self.publisher is not None:
            await asyncio.shield(self.publisher)

    async def publish_queued(self) -> None:
        try:
            attempt = 0
            while self.outgoing:
                raise_if_cancelled()
                batch = list(self.outgoing)
                try:
                    async with self.client.pipeline(transaction=False) as pipe:
                        for key, data in batch:
                            pipe.publish(key, data)
                        await pipe.execute()
                except Exception as exc:
                    raise_if_cancelled()
                    if attempt >= len(RECONNECT_DELAYS):
                        # Redis stays down: drop what waits (it is stored; clients `sync`).
                        metrics.LAYER_SEND_FAILURES.inc(len(batch))
                        logger.warning(
                            "redis publish failed (%s); %d events dropped", exc, len(batch)
                        )
                        for _ in batch:
                            self.outgoing.popleft()
                        attempt = 0
                        continue
                    await asyncio.sleep(RECONNECT_DELAYS[attempt])
                    attempt += 1
                    continue
                attempt = 0
                for _ in batch:
                    self.outgoing.popleft()
        finally:
            self.publisher = None

    @classmethod
    async def publish_once(cls, layer: ChatChannelLayer, name: str, payload: dict) -> None:
        """Publish from a short-lived foreign loop (async_to_sync outside the server)."""
        client = cls.connect(layer.redis_url)
        try:
            data = orjson.dumps({"o": layer.process_id, **payload})
            await client.publish(f"{layer.prefix}:{name}", data)
        finally:
            await client.aclose()

    async def subscribe(self, name: str) -> None:
        self.wanted.add(name)
        if self.pubsub is not None and self.ready.is_set():
            try:
                await self.pubsub.subscribe(self.key(name))
            except Exception:
                # The listener resubscribes everything wanted once it reconnects.
                logger.warning("subscribe to %s failed; will retry on reconnect", name)
                self.ready.clear()

    def unsubscribe(self, name: str) -> None:
        self.wanted.discard(name)
        if self.pubsub is not None and self.ready.is_set():
            self.loop.create_task(self._unsubscribe(name))

    async def _unsubscribe(self, name: str) -> None:
        with contextlib.suppress(Exception):
            if name not in self.wanted and self.pubsub is not None:
                await self.pubsub.unsubscribe(self.key(name))

    async def listen(self) -> None:
        attempt = 0
        while True:
            try:
                self.pubsub = self.client.pubsub()
                await self.pubsub.subscribe(*[self.key(name) for name in self.wanted])
                self.ready.set()
                if attempt:
                    logger.info("redis subscriber reconnected")
                attempt = 0
                while True:
                    raise_if_cancelled()
                    # No read timeout: a timeout context around the read is where a
                    # cancellation could be lost, and a dead connection raises anyway.
                    message = await self.pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=None
                    )
                    if message is not None and message["type"] == "message":
                        self.dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelled()
                self.ready.clear()
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                logger.warning("redis subscriber lost (%s); reconnecting in %.2fs", exc, delay)
                with contextlib.suppress(Exception):
                    await self.pubsub.aclose()
                self.pubsub = None
                await asyncio.sleep(delay)

    def dispatch(self, data: bytes) -> None:
        try:
            envelope = orjson.loads(data)
        except orjson.JSONDecodeError:
            logger.warning("undecodable message on the bridge")
            return
        if envelope.get("o") == self.layer.process_id:
            return  # our own publish: local members already have it
        if "g" in envelope:
            self.layer.deliver_group(envelope["g"], envelope["m"])
        elif "c" in envelope:
            try:
                self.layer._deliver_to_channel(envelope["c"], envelope["m"])
            except ChannelFull:
                logger.warning("channel %s is full; remote event dropped", envelope["c"])

    async def close(self) -> None:
        for task in (self.publisher, self.listener):
            if task is not None:
                task.cancel()
        if self.listener is not None:
            with contextlib.suppress(BaseException):
                await self.listener
        with contextlib.suppress(Exception):
            if self.pubsub is not None:
                await self.pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.client.aclose()
