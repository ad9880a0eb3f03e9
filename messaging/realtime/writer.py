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

import asyncio
import logging

from messaging import events, services
from messaging.errors import MessagingError
from messaging.realtime.batching import BatchRunner

logger = logging.getLogger(__name__)

NOT_APPLIED = "The change was not stored; try again."  # what the client is told then


class MessageWriter:
    def __init__(self, max_batch: int = 500):
        self.runner = BatchRunner(self._store, name="message-writer", max_batch=max_batch)

    def enqueue(self, request: services.Outgoing) -> asyncio.Future:
        """Store one message: the future of (message, created), set once it is committed and
        its broadcast is on its way; a MessagingError refuses it, any other error means it was
        not stored."""
        return self.runner.enqueue(request)

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

    def enqueue(self, change: services.Change) -> asyncio.Future:
        """Apply one change: the future of its `Outcome`, set once it is committed and its
        broadcast is on its way; a MessagingError refuses it, any other error means it was not
        applied."""
        return self.runner.enqueue(change)

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
