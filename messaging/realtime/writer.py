"""The socket path's writers: group commit of new messages and of changes, stored before delivered, in rev order.

Each `message` frame becomes a request here; while one batch is in the
database the next accumulates, so under load one transaction stores many
messages (PERFORMANCE_NOTES.md: one insert per transaction serialises on one
thread and caps throughput near 1,300 messages/s).

Order: the batch is stored and its broadcasts handed to the channel layer
while `services.publish_order` is held, the lock the REST path holds from
storing to publishing; handing over never waits (the layer queues), so this
process publishes each chat's messages in seq order without ever holding the
lock on Redis.

Changes of existing messages (edit, delete, react) go through a writer of
their own on the same pattern (`services.apply_changes`, one transaction per
batch, chats locked in id order), under the same lock, so a chat's new
messages and changes leave this process in rev order.
"""

import logging

from messaging import events, services
from messaging.errors import MessagingError, Unavailable
from messaging.realtime.batching import BatchRunner

logger = logging.getLogger(__name__)


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
        with services.publish_order:
            try:
                results = services.store_messages(requests)
            except MessagingError as error:
                return [error] * len(requests)
            created = [r[0] for r in results if isinstance(r, tuple) and r[1]]
            if created:
                events.broadcast_messages(created)
        return results


writer = MessageWriter()


class ChangeWriter:
    def __init__(self, max_batch: int = 500):
        self.runner = BatchRunner(self._apply, name="change-writer", max_batch=max_batch)

    async def apply(self, change: services.Change) -> services.Outcome:
        """Apply one change; its `Outcome`, or raises the MessagingError refusing it.

        Returns once the change is committed and its broadcast is on its way.
        """
        try:
            return await self.runner.submit(change)
        except MessagingError:
            raise
        except Exception as exc:
            raise Unavailable("The change was not stored; try again.") from exc

    def _apply(self, changes: list) -> list:
        with services.publish_order:
            try:
                results = services.apply_changes(changes)
            except MessagingError as error:
                return [error] * len(changes)
            changed = [r for r in results if isinstance(r, services.Outcome) and r.changed]
            if changed:
                events.broadcast_changes(changed)
        return results


change_writer = ChangeWriter()
