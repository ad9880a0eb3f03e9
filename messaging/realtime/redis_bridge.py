"""The link between processes through Redis: ordered pipelined publishes and one self-healing subscriber.

Everything here retries the same way (`retry_pause`): short backoff, an end as
soon as the task was cancelled (redis-py may turn a cancellation into a
timeout, and a retry loop that swallows it hangs the loop's shutdown), and one
log line when Redis goes away and one when it is back (`redis_outage`), not one
per retry.
"""

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import orjson

from biogram.logging import process_task
from messaging import metrics
from messaging.realtime.batching import LoopBatch

logger = logging.getLogger(__name__)

RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)

# Events waiting for Redis while it is away; past this the oldest are dropped (and counted).
MAX_OUTGOING = 100_000


def raise_if_cancelled() -> None:
    """End the task if it was asked to, even if a client library turned the cancellation into
    another exception (a timeout)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def retry_pause(attempt: int, error: Exception) -> int:
    """After a failed Redis call: note the outage, back off, and return the next attempt number.

    Ends the task instead if it was cancelled.
    """
    raise_if_cancelled()
    redis_outage.failed(error)
    await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
    return attempt + 1


class Outage:
    """Logs an outage of a dependency once when it begins and once when it ends."""

    def __init__(self, name: str):
        self.name = name
        self.down = False

    # The outage is the process's, whichever socket's call noticed it: logged outside that
    # socket's log context (contextvars.Context() is empty).
    def failed(self, error: Exception) -> None:
        if not self.down:
            self.down = True
            contextvars.Context().run(
                logger.warning,
                "%s is unreachable (%s); retrying until it is back",
                self.name,
                error,
            )

    def recovered(self) -> None:
        if self.down:
            self.down = False
            contextvars.Context().run(logger.warning, "%s is reachable again", self.name)


redis_outage = Outage("Redis (REDIS_URL)")


def redis_client(url: str):
    """An asyncio Redis client for the server's long-lived connections."""
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


class RedisPublisher:
    """Publishes in the order asked, pipelined, from one task; drops what waits if Redis stays down
    (it is stored; clients `sync`)."""

    def __init__(
        self,
        client,
        *,
        prefix: str,
        origin: str,
        loop: asyncio.AbstractEventLoop,
        channel_of: Callable[[str], str] | None = None,
        sharded: bool = False,
        refresh: Callable[[], Awaitable[None]] | None = None,
    ):
        self.client = client
        self.prefix = prefix
        self.origin = origin
        self.loop = loop
        # A layer name ("g:<group>", "p:<process>") → the Redis channel it is published on;
        # `sharded`: SPUBLISH (Redis Cluster: redis_cluster.Partitions), else PUBLISH.
        self.channel_of = channel_of or (lambda name: f"{prefix}:{name}")
        self.sharded = sharded
        # After a failed publish, before the retry: re-read where things are (a cluster's slot
        # map, which redis-py's pipeline refreshes only every few errors).
        self.refresh = refresh
        self.outgoing: deque[tuple[str, bytes]] = deque()
        self.task: asyncio.Task | None = None

    def publish_soon(self, name: str, payload: dict) -> None:
        """Queue a publish of `payload` on channel `name` (call in `loop`)."""
        if len(self.outgoing) >= MAX_OUTGOING:
            self.outgoing.popleft()
            metrics.LAYER_SEND_FAILURES.inc()
            logger.warning("redis publish queue full; the oldest event was dropped")
        data = orjson.dumps({"o": self.origin, **payload})
        self.outgoing.append((self.channel_of(name), data))
        if self.task is None:
            self.task = process_task(self.loop, self._publish_queued(), name="redis-publisher")

    async def flushed(self) -> None:
        """Wait until everything queued so far has been published (or given up on)."""
        while self.task is not None:
            await asyncio.shield(self.task)

    async def _publish_queued(self) -> None:
        try:
            attempt = 0
            while self.outgoing:
                raise_if_cancelled()
                batch = list(self.outgoing)
                try:
                    async with self.client.pipeline(transaction=False) as pipe:
                        publish = pipe.spublish if self.sharded else pipe.publish
                        for key, data in _runs(batch, self.origin):
                            publish(key, data)
                        await pipe.execute()
                except Exception as exc:
                    if attempt >= len(RECONNECT_DELAYS):
                        metrics.LAYER_SEND_FAILURES.inc(len(batch))
                        logger.warning("redis publish failed; %d events dropped", len(batch))
                        for _ in batch:
                            self.outgoing.popleft()
                        attempt = 0
                        continue
                    attempt = await retry_pause(attempt, exc)
                    if self.refresh is not None:
                        with contextlib.suppress(Exception):
                            await self.refresh()
                    continue
                redis_outage.recovered()
                attempt = 0
                for _ in batch:
                    self.outgoing.popleft()
        finally:
            self.task = None

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


# A run joined into one message stops at this many payloads or bytes: a backlog (Redis was
# away) must not become one message past what a subscriber's output buffer takes.
RUN_PAYLOADS = 256
RUN_BYTES = 256 * 1024


def _runs(batch: list[tuple[str, bytes]], origin: str):
    """The batch's publishes with each run of payloads for the same channel in a row joined into
    one message (`unpack`): a burst of handshakes publishes a presence event per socket on the
    same channel, and every process read each one alone. Only runs in a row are joined, so that
    nothing is delivered in another order than it was published.

    A joined message is an object `{"o": origin, "b": [payload, …]}`: a process of an earlier
    release reads it as an envelope of no group and ignores it (docs/deployment.md, Redis)."""
    head = b'{"o":' + orjson.dumps(origin) + b',"b":['
    key, run, size = None, [], 0
    for name, data in batch:
        if run and (name != key or len(run) == RUN_PAYLOADS or size + len(data) > RUN_BYTES):
            yield key, _joined(head, run)
            run, size = [], 0
        key = name
        run.append(data)
        size += len(data)
    if run:
        yield key, _joined(head, run)


def _joined(head: bytes, run: list[bytes]) -> bytes:
    return run[0] if len(run) == 1 else head + b",".join(run) + b"]}"


def unpack(data: bytes) -> list:
    """The payloads of a message `RedisPublisher` published: one, or a joined run of them.
    Raises ValueError for what no publisher of ours sends (not JSON, not an object)."""
    decoded = orjson.loads(data)
    if not isinstance(decoded, dict):
        raise ValueError("not an envelope")
    payloads = decoded.get("b", [decoded])
    if not isinstance(payloads, list):
        raise ValueError("not a joined run")
    return payloads


class RedisSubscriber:
    """One subscriber connection for the process's channels; reconnects and resubscribes itself.

    Calls `on_message(data)` for every message, in the order Redis delivers them.
    """

    def __init__(
        self, client, *, prefix: str, loop, channels: set[str], on_message: Callable[[bytes], None]
    ):
        self.client = client
        self.prefix = prefix
        self.on_message = on_message
        self.loop = loop
        self.wanted: set[str] = set(channels)
        self.pubsub = None
        self.ready = asyncio.Event()
        self.subscribes = LoopBatch(self._subscribe_many, name="redis-subscribes")
        self.task: asyncio.Task = process_task(loop, self._listen(), name="redis-subscriber")

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    async def subscribe(self, name: str) -> None:
        self.wanted.add(name)
        if self.pubsub is not None and self.ready.is_set():
            try:
                await self.subscribes.submit(name)
            except Exception:
                # The listener resubscribes everything wanted once it reconnects.
                logger.warning("subscribe to %s failed; will retry on reconnect", name)
                self.ready.clear()

    async def _subscribe_many(self, names: list[str]) -> list[None]:
        """One SUBSCRIBE for the channels asked for while the last was on its way (a burst of
        handshakes sent one per socket)."""
        keys = [self.key(name) for name in dict.fromkeys(names) if name in self.wanted]
        if keys and self.pubsub is not None:
            await self.pubsub.subscribe(*keys)
        return [None] * len(names)

    def unsubscribe(self, name: str) -> None:
        self.wanted.discard(name)
        if self.pubsub is not None and self.ready.is_set():
            process_task(self.loop, self._unsubscribe(name))

    async def _unsubscribe(self, name: str) -> None:
        with contextlib.suppress(Exception):
            if name not in self.wanted and self.pubsub is not None:
                await self.pubsub.unsubscribe(self.key(name))

    async def _listen(self) -> None:
        attempt = 0
        while True:
            try:
                self.pubsub = self.client.pubsub()
                await self.pubsub.subscribe(*[self.key(name) for name in self.wanted])
                self.ready.set()
                redis_outage.recovered()
                attempt = 0
                while True:
                    raise_if_cancelled()
                    # No read timeout: a timeout context around the read is where a
                    # cancellation could be lost, and a dead connection raises anyway.
                    message = await self.pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=None
                    )
                    if message is not None and message["type"] == "message":
                        self.on_message(message["data"])
            except Exception as exc:
                self.ready.clear()
                with contextlib.suppress(Exception):
                    await self.pubsub.aclose()
                self.pubsub = None
                attempt = await retry_pause(attempt, exc)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
        with contextlib.suppress(Exception):
            if self.pubsub is not None:
                await self.pubsub.aclose()
