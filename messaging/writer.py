"""The batching message writer of the socket path: group commit, stored before delivered.

Each socket's `message` frame becomes a request here; while one batch is in the
database, the next accumulates, so under load one transaction stores many
messages (PERFORMANCE_NOTES.md: one insert per transaction serialises on one
thread and caps throughput near 1,300 messages/s). The batch runs on a
dedicated thread with its own database connection; after it commits, every new
message is broadcast in seq order and each sender's call returns.
"""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from channels.layers import get_channel_layer
from django.db import DatabaseError, close_old_connections

from messaging import events, metrics, services
from messaging.errors import MessagingError, Unavailable

logger = logging.getLogger(__name__)

MAX_BATCH = 500


class MessageWriter:
    def __init__(self):
        self.loop = None
        self.pending: list = []
        self.wakeup: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="message-writer")

    async def store(self, request: services.Outgoing):
        """Store one message (in whatever batch it joins); returns (message, created) or raises."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop or self.task is None or self.task.done():
            self.loop = loop
            self.pending = []
            self.wakeup = asyncio.Event()
            self.task = loop.create_task(self.run())
        future = loop.create_future()
        self.pending.append((request, future))
        self.wakeup.set()
        return await future

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                requests = [request for request, _ in batch]
                try:
                    results = await loop.run_in_executor(self.executor, _store, requests)
                except Exception as exc:
                    logger.warning("storing a batch of %d failed: %s", len(batch), exc)
                    error = Unavailable() if isinstance(exc, DatabaseError) else exc
                    results = [error] * len(batch)
                await self.broadcast(results)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)

    async def broadcast(self, results) -> None:
        created = [r[0] for r in results if isinstance(r, tuple) and r[1]]
        if not created:
            return
        metrics.MESSAGES_STORED.inc(len(created))
        layer = get_channel_layer()
        for message in created:
            try:
                await layer.group_send(
                    events.chat_group(message.chat_id), events.message_event(message)
                )
            except Exception:
                metrics.LAYER_SEND_FAILURES.inc()
                logger.exception("broadcast of message %s failed", message.pk)


def _store(requests):
    close_old_connections()
    try:
        return services.store_messages(requests)
    except MessagingError as error:
        return [error] * len(requests)
    finally:
        close_old_connections()


writer = MessageWriter()
