"""The per-chat sequencer that orders message events arriving from several processes."""

import asyncio

from conftest import db_call
from messaging import events, services
from messaging.realtime.sequencer import GAP_WAIT, Sequencer


def stored(sender, chat, count):
    return [
        services.send_message(sender=sender, chat_id=chat.pk, text=f"m{n}")[0] for n in range(count)
    ]


def collecting_sequencer():
    delivered = []
    sequencer = Sequencer(lambda group, event: delivered.append(event["seq"]))
    return sequencer, delivered


async def test_a_message_arriving_before_its_predecessor_waits_for_it(user, chat):
    messages = await db_call(stored)(user, chat, 3)
    sequencer, delivered = collecting_sequencer()
    group = events.chat_group(chat.pk)
    sequencer.prime(group, 0)

    sequencer.offer(group, events.message_event(messages[0]))
    sequencer.offer(group, events.message_event(messages[2]))
    assert delivered == [1]
    sequencer.offer(group, events.message_event(messages[1]))

    assert delivered == [1, 2, 3]


async def test_a_hole_that_does_not_fill_is_read_from_the_database(user, chat):
    messages = await db_call(stored)(user, chat, 4)
    sequencer, delivered = collecting_sequencer()
    group = events.chat_group(chat.pk)
    sequencer.prime(group, 0)

    sequencer.offer(group, events.message_event(messages[0]))
    sequencer.offer(group, events.message_event(messages[3]))  # 2 and 3 never come
    for _ in range(50):
        await asyncio.sleep(GAP_WAIT)
        if len(delivered) == 4:
            break

    assert delivered == [1, 2, 3, 4]


async def test_a_late_message_is_delivered_not_dropped(user, chat):
    messages = await db_call(stored)(user, chat, 2)
    sequencer, delivered = collecting_sequencer()
    group = events.chat_group(chat.pk)
    sequencer.prime(group, 1)  # primed after seq 1 was stored: its event comes late

    sequencer.offer(group, events.message_event(messages[1]))
    sequencer.offer(group, events.message_event(messages[0]))

    assert delivered == [2, 1]


async def test_a_message_filled_from_the_database_is_not_delivered_again_when_it_arrives(
    user, chat
):
    messages = await db_call(stored)(user, chat, 3)
    sequencer, delivered = collecting_sequencer()
    group = events.chat_group(chat.pk)
    sequencer.prime(group, 0)

    sequencer.offer(group, events.message_event(messages[0]))
    sequencer.offer(group, events.message_event(messages[2]))  # 2 is late: filled from the DB
    for _ in range(50):
        await asyncio.sleep(GAP_WAIT)
        if len(delivered) == 3:
            break
    sequencer.offer(group, events.message_event(messages[1]))  # the real 2 arrives after all

    assert delivered == [1, 2, 3]
