"""Per-chat ordering of chat-log events (new messages, updates, deletions) arriving from several processes.

Each process publishes its own changes of a chat in rev order, but a member's
process receives its own at once and the others' through Redis a little later,
so rev 7 (made here) can arrive before rev 6 (made next door). The sequencer
holds an early event until the ones before it arrive.

Rev N+1 committed means N is committed (revs are taken under the chat row
lock, which is held to commit), so a hole that does not fill by itself within
`GAP_WAIT` is read from the database: the messages whose current rev lies in
the hole, each sent in its current state (as `message` when its seq is beyond
the last message delivered, else as `update` or `delete`). A rev of the hole
that no message carries any more was superseded by a later change of the same
message, which is delivered with its own, higher rev: it is skipped. An event
older than the next expected one is delivered at once if it predates the
ordering (late, never lost), and dropped if the ordering already passed it
(filled from the database while it was on its way, or superseded), so nothing
arrives twice.
"""

import asyncio
import logging

from biogram.logging import process_task, process_timer
from messaging import events, selectors
from messaging.realtime.batching import BatchRunner

logger = logging.getLogger(__name__)

GAP_WAIT = 0.25  # seconds an early event waits for the ones before it
MAX_FILL = 500


class _ChatOrder:
    __slots__ = ("expected", "filling", "floor", "held", "seq", "timer")

    def __init__(self, expected: int, seq: int | None):
        self.floor = expected  # revs below this predate the ordering: never delivered by it
        self.expected = expected
        self.seq = seq  # the highest seq of a message delivered (None: unknown)
        self.held: dict[int, tuple[str, dict]] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.filling = False


class Sequencer:
    """Orders `chat.frame` events carrying a `rev` per chat; `deliver(group, event)` fans out."""

    def __init__(self, deliver):
        self.deliver = deliver
        self.chats: dict[str, _ChatOrder] = {}
        self.tasks: set[asyncio.Task] = set()

    def prime(self, group: str, last_seq: int, last_rev: int) -> None:
        """Start ordering a chat whose log ends at `last_rev` and whose last message is
        `last_seq` (first local member)."""
        if group not in self.chats:
            self.chats[group] = _ChatOrder(last_rev + 1, last_seq)

    def forget(self, group: str) -> None:
        """No local member left: drop the chat's state."""
        order = self.chats.pop(group, None)
        if order is not None and order.timer is not None:
            order.timer.cancel()

    def offer(self, group: str, event: dict) -> None:
        rev = event["rev"]
        order = self.chats.get(group)
        if order is None:  # not primed (no member connected through this process's loader)
            self.chats[group] = order = _ChatOrder(rev, None)
        if rev < order.expected:
            if rev < order.floor:
                self._deliver(order, group, event)  # from before the ordering began: late
            # else: delivered already (from the database while the hole was filled) or superseded
            return
        if rev > order.expected:
            order.held[rev] = (group, event)
            if order.timer is None and not order.filling:
                loop = asyncio.get_running_loop()
                order.timer = process_timer(loop, GAP_WAIT, self._fill_gap, group, event["chat_id"])
            return
        self._deliver(order, group, event)
        order.expected = rev + 1
        self._release(order)

    def _deliver(self, order: _ChatOrder, group: str, event: dict) -> None:
        seq = event.get("seq")
        if seq is not None and (order.seq is None or seq > order.seq):
            order.seq = seq
        self.deliver(group, event)

    def _release(self, order: _ChatOrder, *, superseded_upto: int = 0) -> None:
        """Deliver what is held from the next expected rev on; revs up to `superseded_upto`
        that are not held were superseded and are passed over."""
        while order.expected in order.held or order.expected <= superseded_upto:
            held = order.held.pop(order.expected, None)
            if held is not None:
                self._deliver(order, *held)
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
        request = (int(chat_id), order.expected - 1, upto, order.seq)
        task = process_task(asyncio.get_running_loop(), self._fill(group, chat_id, order, request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _fill(self, group: str, chat_id: str, order: _ChatOrder, request: tuple):
        _, after, upto, _ = request
        try:
            missing, complete_upto = await _filler.submit(request)
        except Exception:
            logger.warning(
                "chat %s: rev %d..%d not loaded; clients `sync`", chat_id, after + 1, upto
            )
            missing, complete_upto = [], 0
        finally:
            order.filling = False
        for event in missing:
            if event["rev"] >= order.expected:
                order.held.setdefault(event["rev"], (group, event))
        self._release(order, superseded_upto=complete_upto)
        if order.held and min(order.held) > order.expected and not complete_upto:
            # Still a hole (the database could not say): move on rather than hold forever.
            logger.warning(
                "chat %s: rev %d..%d skipped", chat_id, order.expected, min(order.held) - 1
            )
            self._release(order, superseded_upto=min(order.held) - 1)
        if order.held and order.timer is None:
            order.timer = process_timer(
                asyncio.get_running_loop(), GAP_WAIT, self._fill_gap, group, chat_id
            )


def _load_missing(requests: list[tuple]) -> list[tuple[list[dict], int]]:
    """For each (chat, after rev, up to rev, last seq delivered): the events of the messages
    whose current rev lies in the hole, and the rev up to which the hole is known in full."""
    results = []
    for chat_id, after, upto, seq in requests:
        messages = selectors.changed_between(
            chat_id=chat_id, after_rev=after, upto_rev=upto, limit=MAX_FILL
        )
        complete_upto = upto if len(messages) < MAX_FILL else messages[-1].rev
        results.append(([_current_event(m, seq) for m in messages], complete_upto))
    return results


def _current_event(message, seq: int | None) -> dict:
    """A message's current state as the live event its members lack: `message` when they have
    not had it yet, else its `update` or `delete`."""
    if seq is not None and message.seq > seq:
        return events.message_event(message)
    return events.change_event(message)


_filler = BatchRunner(_load_missing, name="gap-filler", max_batch=50)
