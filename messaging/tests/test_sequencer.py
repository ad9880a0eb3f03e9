"""The per-chat sequencer that orders chat-log events (new messages, updates, deletions) by rev."""

import asyncio

import orjson

from conftest import db_call
from messaging import events, services
from messaging.realtime.sequencer import GAP_WAIT, Sequencer


def stored(sender, chat, count):
    return [
        services.send_message(sender=sender, chat_id=chat.pk, text=f"m{n}")[0] for n in range(count)
    ]


def change_event(outcome: services.Outcome) -> dict:
    """The live event a change was announced with."""
    return events.chat_frame_event(outcome.message.chat_id, outcome.frame, rev=outcome.rev)


def collecting_sequencer():
    """A sequencer that records (rev, frame type) of what it delivers, in order."""
    delivered = []

    def deliver(group, event):
        delivered.append((event["rev"], orjson.loads(event["text"])["type"]))

    return Sequencer(deliver), delivered


async def settle(delivered, count: int) -> None:
    for _ in range(50):
        await asyncio.sleep(GAP_WAIT)
        if len(delivered) >= count:
            return


async def test_a_message_arriving_before_its_predecessor_waits_for_it(user, chat):
    messages = await db_call(stored)(user, chat, 3)
    sequencer, delivered = collecting_sequencer()
    group = events.chat_group(chat.pk)
    sequencer.prime(group, 0, 0)

    sequencer.offer(group, events.message_event(messages[0]))
    sequencer.offer(group, events.message_event(messages[2]))
    assert [rev for rev, _ in delivered] == [1]
    sequencer.offer(group, events.message_event(messages[1]))

    assert [rev for rev, _ in delivered] == [1, 2, 3]


async def test_an_update_arriving_before_the_message_before_it_waits_for_it(user, chat):
    first, second = await db_call(stored)(user, chat, 2)
    edit = await db_call(services.edit_message)(
        user=user, chat_id=chat.pk, message_id=first.pk, text="m0, edited"
    )
    sequencer, delivered = collecting_sequencer()
    group = events.chat_group(chat.pk)
    sequencer.prime(group, 1, 1)

    sequencer.offer(group, change_event(edit))
    assert delivered == []
    sequencer.offer(group, events.message_event(second))

    assert delivered == [(2, "message"), (3, "update")]


async def test_a_hole_that_does_not_fill_is_read_from_the_database(user, chat):
    messages = await db_call(stored)(user, chat, 4)
    sequencer, delivered = collecting_sequencer()
    group = events.chat_group(chat.pk)
    sequencer.prime(group, 0, 0)

    sequencer.offer(group, events.message_event(messages[0]))
    sequencer.offer(group, events.message_event(messages[3]))  # 2 and 3 never come
    await settle(delivered, 4)

    assert delivered == [(1, "message"), (2, "message"), (3, "message"), (4, "message")]


async def test_a_hole_is_filled_with_the_current_state_of_what_changed_in_it(user, chat):
    first, _second = await db_call(stored)(user, chat, 2)
    deletion = await db_call(services.delete_own_message)(
        user=user, chat_id=chat.pk, message_id=first.pk
    )
    (third,) = await db_call(stored)(user, chat, 1)
    sequencer, delivered = collecting_sequencer()
    group = events.chat_group(chat.pk)
    sequencer.prime(group, 0, 0)

    sequencer.offer(group, events.message_event(first))
    sequencer.offer(group, events.message_event(third))  # rev 4; 2 (message) and 3 (delete) lost
    await settle(delivered, 4)

    assert deletion.rev == 3
    assert delivered == [(1, "message"), (2, "message"), (3, "delete"), (4, "message")]


async def test_a_rev_no_message_carries_any_more_is_skipped_after_the_fill(user, chat):
    first, second, _third = await db_call(stored)(user, chat, 3)
    edit = await db_call(services.edit_message)(
        user=user, chat_id=chat.pk, message_id=second.pk, text="m1, edited"
    )
    sequencer, delivered = collecting_sequencer()
    group = events.chat_group(chat.pk)
    sequencer.prime(group, 0, 0)

    sequencer.offer(group, events.message_event(first))
    sequencer.offer(group, change_event(edit))  # rev 4: 2 was superseded by it, 3 is lost
    await settle(delivered, 3)
    sequencer.offer(group, events.message_event(second))  # rev 2 arrives after all: passed over

    assert delivered == [(1, "message"), (3, "message"), (4, "update")]


async def test_a_late_message_is_delivered_not_dropped(user, chat):
    messages = await db_call(stored)(user, chat, 2)
    sequencer, delivered = collecting_sequencer()
    group = events.chat_group(chat.pk)
    sequencer.prime(group, 1, 1)  # primed after rev 1 was stored: its event comes late

    sequencer.offer(group, events.message_event(messages[1]))
    sequencer.offer(group, events.message_event(messages[0]))

    assert [rev for rev, _ in delivered] == [2, 1]


async def test_a_message_filled_from_the_database_is_not_delivered_again_when_it_arrives(
    user, chat
):
    messages = await db_call(stored)(user, chat, 3)
    sequencer, delivered = collecting_sequencer()
    group = events.chat_group(chat.pk)
    sequencer.prime(group, 0, 0)

    sequencer.offer(group, events.message_event(messages[0]))
    sequencer.offer(group, events.message_event(messages[2]))  # 2 is late: filled from the DB
    await settle(delivered, 3)
    sequencer.offer(group, events.message_event(messages[1]))  # the real 2 arrives after all

    assert [rev for rev, _ in delivered] == [1, 2, 3]
