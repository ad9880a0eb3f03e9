"""A socket's messages and changes are pipelined: the next frames are read while earlier ones
are stored, and yet every answer comes in the order of the frames.

A client that sends a burst (a reconnect resending what was never acknowledged)
no longer waits one database round trip per frame; at most WS_PIPELINE frames
are on their way, past which the socket is not read until one is stored.
"""

from conftest import db_call
from messaging import services
from messaging.models import Message


async def test_a_burst_of_messages_is_stored_and_acknowledged_in_the_order_sent(
    user, other_user, chat, connect, settings
):
    settings.RATE_LIMIT_ENABLED = False
    settings.WS_PIPELINE = 8
    alice = await connect(user)
    bob = await connect(other_user)

    for n in range(120):
        await alice.send("message", chatId=str(chat.pk), text=f"m{n}", clientMessageId=f"m{n}")

    acks = [(await alice.receive_type("message"))["data"]["message"] for _ in range(120)]
    assert [m["clientMessageId"] for m in acks] == [f"m{n}" for n in range(120)]
    assert [m["seq"] for m in acks] == [str(n) for n in range(1, 121)]
    seen = [(await bob.receive_type("message"))["data"]["message"]["seq"] for _ in range(120)]
    assert seen == [str(n) for n in range(1, 121)]
    stored = await db_call(
        lambda: list(Message.objects.filter(chat=chat).order_by("seq").values_list("text", "seq"))
    )()
    assert stored == [(f"m{n}", n + 1) for n in range(120)]


async def test_retries_in_a_burst_are_each_answered_by_the_stored_copy(
    user, chat, connect, settings
):
    settings.RATE_LIMIT_ENABLED = False
    alice = await connect(user)

    for client_id in ("a", "b", "a", "c", "b"):
        await alice.send("message", chatId=str(chat.pk), text=client_id, clientMessageId=client_id)

    acks = [(await alice.receive_type("message"))["data"]["message"] for _ in range(5)]
    # New messages are acknowledged in seq order; a retry's answer (the stored copy) may come
    # after the acknowledgement of a message sent after it (docs/protocol.md).
    assert sorted((m["clientMessageId"], m["seq"]) for m in acks) == [
        ("a", "1"),
        ("a", "1"),
        ("b", "2"),
        ("b", "2"),
        ("c", "3"),
    ]
    firsts = [m["seq"] for n, m in enumerate(acks) if m["seq"] not in (a["seq"] for a in acks[:n])]
    assert firsts == ["1", "2", "3"]
    assert await alice.nothing()
    assert await db_call(lambda: Message.objects.filter(chat=chat).count())() == 3


async def test_answers_keep_the_order_of_frames_across_writers_and_refusals(
    user, other_user, outsider, chat, connect, settings
):
    settings.RATE_LIMIT_ENABLED = False
    first = await db_call(services.send_message)(
        sender=user, chat_id=chat.pk, text="first", client_message_id="first"
    )
    foreign, _ = await db_call(services.create_chat)(creator=other_user, member_ids=[outsider.pk])
    alice = await connect(user)

    await alice.send("message", chatId=str(chat.pk), text="one", clientMessageId="one")
    await alice.send("edit", chatId=str(chat.pk), messageId=str(first[0].pk), text="first!")
    await alice.send("message", chatId=str(foreign.pk), text="no", clientMessageId="no")
    await alice.send("message", chatId=str(chat.pk), text="two", clientMessageId="two")
    await alice.send("message", chatId=str(chat.pk), text="x", senderId="999")
    await alice.send("ping")

    frames = [await alice.receive() for _ in range(6)]
    assert [f["type"] for f in frames] == ["message", "update", "error", "message", "error", "pong"]
    assert frames[0]["data"]["message"]["clientMessageId"] == "one"
    assert frames[1]["data"]["message"]["text"] == "first!"
    assert (frames[2]["data"]["code"], frames[2]["data"]["ref"]) == ("not_member", "no")
    assert frames[3]["data"]["message"]["clientMessageId"] == "two"
    assert frames[4]["data"]["code"] == "forbidden"
