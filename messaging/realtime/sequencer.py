"""Per-chat ordering of message events that arrive from several processes.

Each process publishes its own messages in seq order, but a member's process
receives its own local messages at once and the others' through Redis a little
later, so seq 7 (stored here) can arrive before seq 6 (stored next door). The
sequencer holds an early message until the ones before it arrive.

Seq N+1 committed means N is committed (seqs are taken under the chat row lock,
which is held to commit), so a hole that does not fill by itself within
`GAP_WAIT` is read from the database. A message older than the next expected
one is delivered at once if it predates the ordering (late, never lost), and
dropped if the ordering already delivered it (filled from the database while it
was on its way), so nothing arrives twice.
"""

import asyncio
import logging

from biogram.logging import process_task, process_timer
from messaging import events, selectors
from messaging.realtime.batching import BatchRunner

logger = logging.getLogger(__name__)

GAP_WAIT = 0.25  # seconds an early message waits for the ones before it
MAX_FILL = 500


class _ChatOrder:
    __slots__ = ("expected", "filling", "floor", "held", "timer")

    def __init__(self, expected: int):
        self.floor = expected  # seqs below this predate the ordering: never delivered by it
        self.expected = expected
        self.held: dict[int, tuple[str, dict]] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.filling = False


class Sequencer:
    """Orders `chat.frame` events carrying a `seq` per chat; `deliver(group, event)` fans out."""

    def __init__(self, deliver):
        self.deliver = deliver
        self.chats: dict[str, _ChatOrder] = {}
        self.tasks: set[asyncio.Task] = set()

    def prime(self, group: str, last_seq: int) -> None:
        """Start ordering a chat whose stored messages end at `last_seq` (first local member)."""
        if group not in self.chats:
            self.chats[group] = _ChatOrder(last_seq + 1)

    def forget(self, group: str) -> None:
        """No local member left: drop the chat's state."""
        order = self.chats.pop(group, None)
        if order is not None and order.timer is not None:
            order.timer.cancel()

    def offer(self, group: str, event: dict) -> None:
        seq = event["seq"]
        order = self.chats.get(group)
        if order is None:  # not primed (no member connected through this process's loader)
            self.chats[group] = order = _ChatOrder(seq)
        if seq < order.expected:
            if seq < order.floor:
                self.deliver(group, event)  # from before the ordering began: late, not lost
            # else: delivered already (it came from the database while the hole was filled)
            return
        if seq > order.expected:
            order.held[seq] = (group, event)
            if order.timer is None and not order.filling:
                loop = asyncio.get_running_loop()
                order.timer = process_timer(loop, GAP_WAIT, self._fill_gap, group, event["chat_id"])
            return
        self.deliver(group, event)
        order.expected = seq + 1
        self._release(order)

    def _release(self, order: _ChatOrder) -> None:
        while order.expected in order.held:
            group, event = order.held.pop(order.expected)
            self.deliver(group, event)
            order.expected += 1
        if not order.held and order.timer is not None:
            order.timer.cancel()
            order.timer = None

    def _fill_gap(self, group: str, chat_id: str) -> None:
        order = self.chats.get(group)
        if order is None:
            return
        order.timer = None
        if not order.held or order.filling:
            return
        order.filling = True
        upto = min(order.held) - 1
        task = process_task(
            asyncio.get_running_loop(),
            self._fill(group, chat_id, order, order.expected - 1, upto),
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _fill(self, group: str, chat_id: str, order: _ChatOrder, after: int, upto: int):
        try:
            missing = await _filler.submit((int(chat_id), after, upto))
        except Exception:
            logger.warning(
                "chat %s: seq %d..%d not loaded; clients `sync`", chat_id, after + 1, upto
            )
            missing = []
        finally:
            order.filling = False
        for event in missing:
            if event["seq"] >= order.expected:
                order.held.setdefault(event["seq"], (group, event))
        if order.held and min(order.held) > order.expected:
            # Still a hole (the database could not say): move on rather than hold forever.
            logger.warning(
                "chat %s: seq %d..%d skipped", chat_id, order.expected, min(order.held) - 1
            )
            order.expected = min(order.held)
        self._release(order)
        if order.held and order.timer is None:
            order.timer = process_timer(
                asyncio.get_running_loop(), GAP_WAIT, self._fill_gap, group, chat_id
            )


def _load_missing(requests: list[tuple[int, int, int]]) -> list[list[dict]]:
    results = []
    for chat_id, after, upto in requests:
        page = selectors.messages_after(
            chat_id=chat_id, after_seq=after, limit=min(MAX_FILL, max(1, upto - after))
        )
        results.append([events.message_event(m) for m in page.messages if m.seq <= upto])
    return results


_filler = BatchRunner(_load_missing, name="gap-filler", max_batch=50)
