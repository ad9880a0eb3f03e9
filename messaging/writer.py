"""The socket path's message writer: group commit, stored before delivered, in seq order.

Each `message` frame becomes a request here; while one batch is in the
database the next accumulates, so under load one transaction stores many
messages (PERFORMANCE_NOTES.md: one insert per transaction serialises on one
thread and caps throughput near 1,300 messages/s).

Order: the batch is stored and its broadcasts handed to the event loop while
`services.publish_order` is held, the lock the REST path holds from storing to
publishing. The loop runs handed-over callbacks first in, first out, so this
process publishes each chat's messages in seq order.
"""

import asyncio
import logging

from channels.layers import get_channel_layer

from biogram.batching import BatchRunner
from messaging import events, metrics, services
from messaging.errors import MessagingError, Unavailable

logger = logging.getLogger(__name__)

_background: set[asyncio.Task] = set()


class MessageWriter:
    def __init__(self, max_batch: int = 500):
        self.runner = BatchRunner(self._store, name="message-writer", max_batch=max_batch)

    async def store(self, request: services.Outgoing):
        """Store one message; (message, created), or raises the MessagingError refusing it.

        Returns once the message is committed and its broadcast is on its way.
        """
        try:
            return await self.runner.submit(request)
        except MessagingError:
            raise
        except Exception as exc:
            raise Unavailable() from exc

    def _store(self, requests: list) -> list:
        loop = self.runner.loop
        with services.publish_order:
            try:
                results = services.store_messages(requests)
            except MessagingError as error:
                return [error] * len(requests)
            created = [r[0] for r in results if isinstance(r, tuple) and r[1]]
            if created:
                broadcasts = [
                    (events.chat_group(m.chat_id), events.message_event(m)) for m in created
                ]
                loop.call_soon_threadsafe(_broadcast, broadcasts)
        return results


def _broadcast(broadcasts: list) -> None:
    """Hand a batch's messages to the channel layer, in order (runs in the event loop)."""
    layer = get_channel_layer()
    send_now = getattr(layer, "group_send_nowait", None)
    if send_now is None:  # another channel layer: a task per batch
        task = asyncio.ensure_future(_broadcast_async(layer, broadcasts))
        _background.add(task)
        task.add_done_callback(_background.discard)
        return
    for group, event in broadcasts:
        try:
            send_now(group, event)
        except Exception:
            metrics.LAYER_SEND_FAILURES.inc()
            logger.exception("broadcast to %s failed", group)


async def _broadcast_async(layer, broadcasts: list) -> None:
    for group, event in broadcasts:
        try:
            await layer.group_send(group, event)
        except Exception:
            metrics.LAYER_SEND_FAILURES.inc()
            logger.exception("broadcast to %s failed", group)


writer = MessageWriter()
