"""The chat log over live sockets (docs/protocol.md, version 2): edit, delete, react, delivered, replyTo, restores, and sync with {seq, rev}."""

import asyncio
import datetime

from django.utils import timezone

from conftest import db_call, expect_error, expect_errors
from messaging import selectors, services
from messaging.models import Chat, Message, MessageEdit, Reaction, ReadReceipt
from messaging.services import Action, Change, Outgoing


async def send_stored(sender, chat, text: str, **extra) -> Message:
    """A message stored (and broadcast) the way the REST API does it."""
    message, _ = await db_call(services.send_message)(
        sender=sender, chat_id=chat.pk, text=text, **extra
    )
    return message


async def chat_rev(chat) -> int:
    return await db_call(lambda: Chat.objects.get(pk=chat.pk).last_rev)()


async def stored(message) -> Message:
    return await db_call(lambda: Message.objects.framed(message.chat_id).get(pk=message.pk))()


def ids(*users) -> list[str]:
    return [str(u.pk) for u in users]


# ---------------------------------------------------------------- edit


async def test_author_edits_and_every_connection_of_every_member_receives_update(
    user, other_user, outsider, chat, connect
):
    message = await send_stored(user, chat, "helo")
    alice = await connect(user)
    alice_phone = await connect(user)
    bob = await connect(other_user)
    mallory = await connect(outsider)

    await alice.send("edit", chatId=str(chat.pk), messageId=str(message.pk), text="hello")

    frames = [await c.receive_type("update") for c in (alice, alice_phone, bob)]
    assert all(frame == frames[0] for frame in frames)
    data = frames[0]["data"]
    assert data["chatId"] == str(chat.pk)
    assert data["message"]["id"] == str(message.pk)
    assert data["message"]["text"] == "hello"
    assert (data["message"]["seq"], data["message"]["rev"]) == ("1", "2")
    assert data["message"]["editedAt"] is not None
    assert await mallory.nothing()
    assert await chat_rev(chat) == 2


async def test_an_edit_keeps_the_earlier_text_in_the_edit_history(user, chat, connect):
    message = await send_stored(user, chat, "first")
    alice = await connect(user)

    await alice.send("edit", chatId=str(chat.pk), messageId=str(message.pk), text="second")
    await alice.receive_type("update")
    await alice.send("edit", chatId=str(chat.pk), messageId=str(message.pk), text="third")
    await alice.receive_type("update")

    history = await db_call(selectors.edit_history)(await stored(message))
    assert [entry["text"] for entry in history] == ["first", "second", "third"]
    assert history[0]["editedAt"] == (await db_call(lambda: _created_at(message))())


def _created_at(message) -> str:
    from messaging.protocol import format_time

    return format_time(Message.objects.get(pk=message.pk).created_at)


async def test_editing_someone_elses_message_is_forbidden(user, other_user, chat, connect):
    message = await send_stored(other_user, chat, "bob's")
    alice = await connect(user)

    await alice.send("edit", chatId=str(chat.pk), messageId=str(message.pk), text="mine now")

    await expect_error(alice, "forbidden", "edit")
    assert (await stored(message)).text == "bob's"
    assert await chat_rev(chat) == 1


async def test_muted_author_editing_is_forbidden_even_to_the_same_text(
    user, other_user, chat, connect
):
    message = await send_stored(user, chat, "said")
    await db_call(services.set_muted)(chat_id=chat.pk, user_id=user.pk, muted=True)
    alice = await connect(user)

    await alice.send("edit", chatId=str(chat.pk), messageId=str(message.pk), text="unsaid")
    await alice.send("edit", chatId=str(chat.pk), messageId=str(message.pk), text="said")

    await expect_error(alice, "forbidden", "edit")
    await expect_error(alice, "forbidden", "edit")


async def test_editing_a_deleted_message_is_not_found(user, chat, connect):
    message = await send_stored(user, chat, "gone")
    await db_call(services.delete_own_message)(user=user, chat_id=chat.pk, message_id=message.pk)
    alice = await connect(user)

    await alice.send("edit", chatId=str(chat.pk), messageId=str(message.pk), text="back?")

    await expect_error(alice, "not_found", "edit")


async def test_editing_past_the_edit_window_is_forbidden(user, chat, connect, settings):
    settings.MESSAGE_EDIT_WINDOW_SECONDS = 60
    old = await send_stored(user, chat, "old")
    recent = await send_stored(user, chat, "recent")
    an_hour_ago = timezone.now() - datetime.timedelta(hours=1)
    await db_call(lambda: Message.objects.filter(pk=old.pk).update(created_at=an_hour_ago))()
    alice = await connect(user)

    await alice.send("edit", chatId=str(chat.pk), messageId=str(old.pk), text="too late")
    await expect_error(alice, "forbidden", "edit")
    await alice.send("edit", chatId=str(chat.pk), messageId=str(recent.pk), text="in time")

    assert (await alice.receive_type("update"))["data"]["message"]["text"] == "in time"


async def test_editing_to_the_same_text_answers_the_sender_alone_and_takes_no_rev(
    user, other_user, chat, connect
):
    message = await send_stored(user, chat, "same")
    alice = await connect(user)
    alice_phone = await connect(user)
    bob = await connect(other_user)
    await alice.receive_type("connect")  # bob's presence
    await alice_phone.receive_type("connect")

    await alice.send("edit", chatId=str(chat.pk), messageId=str(message.pk), text="same")

    answer = await alice.receive()
    assert answer["type"] == "update"
    assert answer["data"]["message"]["rev"] == "1"
    assert await alice_phone.nothing()
    assert await bob.nothing()
    assert await chat_rev(chat) == 1


async def test_editing_a_message_that_is_not_in_the_chat_is_not_found(
    user, other_user, chat, group_chat, connect
):
    elsewhere = await send_stored(user, group_chat, "elsewhere")
    alice = await connect(user)

    await expect_errors(
        alice,
        [str(elsewhere.pk), "999999", "abc", "0", 999999, "9" * 30],
        lambda message_id: alice.send("edit", chatId=str(chat.pk), messageId=message_id, text="x"),
        "not_found",
        "edit",
    )


async def test_edit_delete_and_react_in_a_chat_you_are_not_in_are_not_member(
    user, other_user, outsider, chat, connect
):
    message = await send_stored(user, chat, "private")
    mallory = await connect(outsider)
    target = {"chatId": str(chat.pk), "messageId": str(message.pk)}

    await mallory.send("edit", text="mine", **target)
    await expect_error(mallory, "not_member", "edit")
    await mallory.send("delete", **target)
    await expect_error(mallory, "not_member", "delete")
    await mallory.send("react", emoji="👍", **target)
    await expect_error(mallory, "not_member", "react")
    await mallory.send("delivered", chatId=str(chat.pk), seq="1")
    await expect_error(mallory, "not_member", "delivered")
    assert await chat_rev(chat) == 1


async def test_edit_with_bad_text_is_refused_like_a_message(user, chat, connect, settings):
    settings.MESSAGE_MAX_LENGTH = 10
    message = await send_stored(user, chat, "short")
    alice = await connect(user)
    target = {"chatId": str(chat.pk), "messageId": str(message.pk)}

    await expect_errors(
        alice,
        ["", "  ", None, 5, "a\x00b"],
        lambda text: alice.send("edit", text=text, **target),
        "bad_request",
        "edit",
    )
    await alice.send("edit", text="x" * 11, **target)
    await expect_error(alice, "too_large", "edit")
    await alice.send("edit", chatId=str(chat.pk), text="no id")
    await expect_error(alice, "bad_request", "edit")


# ---------------------------------------------------------------- delete


async def test_author_deletes_and_members_receive_delete_with_seq_and_rev(
    user, other_user, chat, connect
):
    message = await send_stored(user, chat, "oops")
    alice = await connect(user)
    bob = await connect(other_user)

    await alice.send("delete", chatId=str(chat.pk), messageId=str(message.pk))

    expected = {
        "type": "delete",
        "data": {"chatId": str(chat.pk), "messageId": str(message.pk), "seq": "1", "rev": "2"},
    }
    assert await alice.receive_type("delete") == expected
    assert await bob.receive_type("delete") == expected
    deleted = await stored(message)
    assert deleted.deleted_at is not None and deleted.deleted_by_author
    assert deleted.seq == 1


async def test_deleting_someone_elses_message_is_forbidden_even_once_deleted(
    user, other_user, chat, connect
):
    message = await send_stored(other_user, chat, "bob's")
    alice = await connect(user)

    await alice.send("delete", chatId=str(chat.pk), messageId=str(message.pk))
    await expect_error(alice, "forbidden", "delete")
    await db_call(services.delete_own_message)(
        user=other_user, chat_id=chat.pk, message_id=message.pk
    )
    await alice.receive_type("delete")
    await alice.send("delete", chatId=str(chat.pk), messageId=str(message.pk))

    await expect_error(alice, "forbidden", "delete")


async def test_a_muted_author_may_still_delete(user, other_user, chat, connect):
    message = await send_stored(user, chat, "said in haste")
    await db_call(services.set_muted)(chat_id=chat.pk, user_id=user.pk, muted=True)
    alice = await connect(user)

    await alice.send("delete", chatId=str(chat.pk), messageId=str(message.pk))

    assert (await alice.receive_type("delete"))["data"]["messageId"] == str(message.pk)


async def test_deleting_a_deleted_message_answers_the_sender_alone(user, other_user, chat, connect):
    message = await send_stored(user, chat, "twice")
    alice = await connect(user)
    bob = await connect(other_user)
    await alice.receive_type("connect")
    await alice.send("delete", chatId=str(chat.pk), messageId=str(message.pk))
    first = await alice.receive_type("delete")
    await bob.receive_type("delete")

    await alice.send("delete", chatId=str(chat.pk), messageId=str(message.pk))

    assert await alice.receive() == first
    assert await bob.nothing()
    assert await chat_rev(chat) == 2


async def test_a_deleted_message_loses_its_text_and_reactions_everywhere(
    user, other_user, chat, connect
):
    message = await send_stored(user, chat, "secret")
    await db_call(services.react)(
        user=other_user, chat_id=chat.pk, message_id=message.pk, emoji="👍"
    )
    alice = await connect(user)

    await alice.send("delete", chatId=str(chat.pk), messageId=str(message.pk))
    await alice.receive_type("delete")

    page = await db_call(selectors.history)(chat=chat, after=None, before=None, limit=10)
    (shown,) = [services.protocol.message_data(m) for m in page.messages]
    assert (shown["deleted"], shown["text"], shown["reactions"]) == (True, None, [])
    assert not await db_call(Reaction.objects.filter(message=message).exists)()


# ---------------------------------------------------------------- react


async def test_reactions_are_announced_as_update_with_emoji_and_users_in_order(
    user, other_user, third_user, group_chat, connect
):
    message = await send_stored(user, group_chat, "lunch?")
    alice = await connect(user)
    bob = await connect(other_user)
    carol = await connect(third_user)
    target = {"chatId": str(group_chat.pk), "messageId": str(message.pk)}

    await bob.send("react", emoji="👍", **target)
    await alice.receive_type("update")
    await carol.send("react", emoji="🎉", **target)
    await alice.receive_type("update")
    await alice.send("react", emoji="👍", on=True, **target)

    update = await carol.receive_type("update")
    while update["data"]["message"]["rev"] != "4":
        update = await carol.receive_type("update")
    assert update["data"]["message"]["reactions"] == [
        {"emoji": "👍", "userIds": ids(other_user, user)},
        {"emoji": "🎉", "userIds": ids(third_user)},
    ]


async def test_removing_an_emojis_last_reaction_drops_it_and_it_comes_back_last(
    user, other_user, chat, connect
):
    message = await send_stored(user, chat, "hi")
    alice = await connect(user)
    target = {"chatId": str(chat.pk), "messageId": str(message.pk)}
    for emoji in ("👍", "❤️"):
        await alice.send("react", emoji=emoji, **target)
        await alice.receive_type("update")

    await alice.send("react", emoji="👍", on=False, **target)
    without = await alice.receive_type("update")
    await alice.send("react", emoji="👍", **target)
    again = await alice.receive_type("update")

    assert without["data"]["message"]["reactions"] == [{"emoji": "❤️", "userIds": ids(user)}]
    assert [r["emoji"] for r in again["data"]["message"]["reactions"]] == ["❤️", "👍"]


async def test_a_reaction_that_changes_nothing_answers_the_sender_alone(
    user, other_user, chat, connect
):
    message = await send_stored(user, chat, "hi")
    alice = await connect(user)
    bob = await connect(other_user)
    await alice.receive_type("connect")
    target = {"chatId": str(chat.pk), "messageId": str(message.pk)}
    await alice.send("react", emoji="👍", **target)
    await alice.receive_type("update")
    await bob.receive_type("update")

    await alice.send("react", emoji="👍", **target)
    twice = await alice.receive()
    await alice.send("react", emoji="🎉", on=False, **target)
    never = await alice.receive()

    assert twice["type"] == never["type"] == "update"
    assert twice["data"]["message"]["rev"] == never["data"]["message"]["rev"] == "2"
    assert await bob.nothing()


async def test_muted_member_reacting_is_forbidden(user, other_user, chat, connect):
    message = await send_stored(user, chat, "hi")
    await db_call(services.set_muted)(chat_id=chat.pk, user_id=other_user.pk, muted=True)
    bob = await connect(other_user)

    await bob.send("react", chatId=str(chat.pk), messageId=str(message.pk), emoji="👎")

    await expect_error(bob, "forbidden", "react")


async def test_reacting_to_a_deleted_message_is_not_found(user, other_user, chat, connect):
    message = await send_stored(user, chat, "gone")
    await db_call(services.delete_message)(message=message, moderator=user)
    bob = await connect(other_user)

    await bob.send("react", chatId=str(chat.pk), messageId=str(message.pk), emoji="👍")

    await expect_error(bob, "not_found", "react")


async def test_a_21st_different_emoji_is_too_large_but_more_of_the_20_are_fine(
    user, other_user, chat, connect
):
    message = await send_stored(user, chat, "popular")
    twenty = [chr(0x1F600 + n) for n in range(20)]
    await db_call(services.apply_changes)(
        [
            services.Change(user, chat.pk, message.pk, services.Action.REACT, emoji=emoji)
            for emoji in twenty
        ]
    )
    bob = await connect(other_user)
    target = {"chatId": str(chat.pk), "messageId": str(message.pk)}

    await bob.send("react", emoji="🦄", **target)
    await expect_error(bob, "too_large", "react")
    await bob.send("react", emoji=twenty[0], **target)

    reactions = (await bob.receive_type("update"))["data"]["message"]["reactions"]
    assert len(reactions) == 20
    assert reactions[0] == {"emoji": twenty[0], "userIds": ids(user, other_user)}


async def test_emoji_outside_the_protocols_rule_is_bad_request(user, chat, connect):
    message = await send_stored(user, chat, "hi")
    alice = await connect(user)
    target = {"chatId": str(chat.pk), "messageId": str(message.pk)}
    refused = [
        "",
        " ",
        "👍 ",
        "\u00a0",  # no-break space (Zs)
        "\u2028",  # line separator (Zl)
        "\n",  # Cc
        "\u200b",  # zero-width space (Cf)
        "\u00ad",  # soft hyphen (Cf)
        "a\u202eb",  # right-to-left override (Cf)
        "é" * 33,  # 66 bytes
        None,
        5,
        ["👍"],
    ]

    await expect_errors(
        alice,
        refused,
        lambda emoji: alice.send("react", emoji=emoji, **target),
        "bad_request",
        "react",
    )
    await alice.send("react", emoji="👍", on="yes", **target)
    await expect_error(alice, "bad_request", "react")


async def test_emoji_with_joiners_and_variation_selectors_are_accepted(user, chat, connect):
    message = await send_stored(user, chat, "hi")
    alice = await connect(user)
    target = {"chatId": str(chat.pk), "messageId": str(message.pk)}
    accepted = ["❤️", "👩\u200d💻", "🏳️\u200d🌈", "+1", "x" * 64]

    for emoji in accepted:
        await alice.send("react", emoji=emoji, **target)
        await alice.receive_type("update")

    shown = (await db_call(selectors.history)(chat=chat, after=None, before=None, limit=1)).messages
    assert [r["emoji"] for r in services.protocol.message_data(shown[0])["reactions"]] == accepted


# ---------------------------------------------------------------- replyTo


async def test_a_reply_carries_the_id_and_seq_of_the_message_it_answers(
    user, other_user, chat, connect
):
    original = await send_stored(other_user, chat, "question")
    alice = await connect(user)
    bob = await connect(other_user)

    await alice.send("message", chatId=str(chat.pk), text="answer", replyTo=str(original.pk))

    frame = await bob.receive_type("message")
    assert frame["data"]["message"]["replyTo"] == {"id": str(original.pk), "seq": "1"}
    assert frame["data"]["message"]["rev"] == "2"


async def test_a_reply_to_a_message_that_is_not_in_the_chat_is_not_found(
    user, chat, group_chat, connect
):
    elsewhere = await send_stored(user, group_chat, "elsewhere")
    alice = await connect(user)

    await expect_errors(
        alice,
        [str(elsewhere.pk), "999999", "abc", 0],
        lambda reply_to: alice.send(
            "message", chatId=str(chat.pk), text="re", replyTo=reply_to, clientMessageId="r1"
        ),
        "not_found",
        "r1",
    )
    assert await db_call(Message.objects.filter(chat=chat).count)() == 0


async def test_a_deleted_original_stays_referenced(user, other_user, chat, connect):
    original = await send_stored(other_user, chat, "soon gone")
    reply = await send_stored(user, chat, "answer", reply_to=original.pk)
    await db_call(services.delete_own_message)(
        user=other_user, chat_id=chat.pk, message_id=original.pk
    )
    alice = await connect(user)

    await alice.send("sync", chats={str(chat.pk): "0"})

    replayed = [(await alice.receive())["data"]["message"] for _ in range(2)]
    assert replayed[0]["deleted"] is True
    assert replayed[1]["id"] == str(reply.pk)
    assert replayed[1]["replyTo"] == {"id": str(original.pk), "seq": "1"}


# ---------------------------------------------------------------- delivered


async def test_delivered_is_stored_and_announced_to_all_members(
    user, other_user, third_user, group_chat, connect
):
    for n in range(3):
        await send_stored(user, group_chat, f"m{n}")
    alice = await connect(user)
    bob = await connect(other_user)
    carol = await connect(third_user)

    await bob.send("delivered", chatId=str(group_chat.pk), seq="2")

    expected = {
        "type": "delivered",
        "data": {"chatId": str(group_chat.pk), "userId": str(other_user.pk), "seq": "2"},
    }
    for client in (alice, bob, carol):
        assert await client.receive_type("delivered") == expected
    receipt = await db_call(ReadReceipt.objects.get)(chat=group_chat, user=other_user)
    assert receipt.delivered_seq == 2


async def test_delivered_past_the_last_seq_counts_as_the_last(user, other_user, chat, connect):
    await send_stored(user, chat, "only")
    bob = await connect(other_user)

    await bob.send("delivered", chatId=str(chat.pk), seq="9999")

    assert (await bob.receive_type("delivered"))["data"]["seq"] == "1"


async def test_delivered_never_moves_backwards_and_is_not_announced(
    user, other_user, chat, connect, settings
):
    settings.DELIVERED_ANNOUNCE_INTERVAL_MS = 0
    for n in range(3):
        await send_stored(user, chat, f"m{n}")
    bob = await connect(other_user)
    await bob.send("delivered", chatId=str(chat.pk), seq="3")
    await bob.receive_type("delivered")

    await bob.send("delivered", chatId=str(chat.pk), seq="1")
    await bob.send("delivered", chatId=str(chat.pk), seq="3")

    assert await bob.nothing()
    receipt = await db_call(ReadReceipt.objects.get)(chat=chat, user=other_user)
    assert receipt.delivered_seq == 3


async def test_delivered_is_announced_at_most_once_a_second_the_latest_position_winning(
    user, other_user, chat, connect
):
    for n in range(5):
        await send_stored(user, chat, f"m{n}")
    alice = await connect(user)
    bob = await connect(other_user)
    loop = asyncio.get_running_loop()

    started = loop.time()
    for seq in range(1, 6):
        await bob.send("delivered", chatId=str(chat.pk), seq=str(seq))
        await asyncio.sleep(0.05)
    first = await alice.receive_type("delivered")
    second = await alice.receive_type("delivered", timeout=3)
    waited = loop.time() - started

    assert first["data"]["seq"] == "1"
    assert second["data"]["seq"] == "5"
    assert 0.9 <= waited < 2.5
    assert await alice.nothing(timeout=1.2)
    receipt = await db_call(ReadReceipt.objects.get)(chat=chat, user=other_user)
    assert receipt.delivered_seq == 5


async def test_read_moves_delivered_without_a_delivered_announcement(
    user, other_user, chat, connect
):
    await send_stored(user, chat, "one")
    await send_stored(user, chat, "two")
    alice = await connect(user)
    bob = await connect(other_user)

    await bob.send("read", chatId=str(chat.pk))

    assert (await alice.receive_type("read"))["data"]["seq"] == "2"
    frames = []
    while not await alice.nothing(timeout=0.5):
        frames.append(await alice.receive())
    assert [f for f in frames if f["type"] == "delivered"] == []
    receipt = await db_call(ReadReceipt.objects.get)(chat=chat, user=other_user)
    assert receipt.delivered_seq == 2


async def test_delivered_with_a_bad_seq_is_bad_request(user, chat, connect):
    alice = await connect(user)

    await expect_errors(
        alice,
        [None, "-1", -1, "x", 1.5, True, "9" * 20],
        lambda seq: alice.send("delivered", chatId=str(chat.pk), seq=seq),
        "bad_request",
        "delivered",
    )


# ---------------------------------------------------------------- rate limit


async def test_edits_deletions_and_reactions_count_against_the_message_rate(
    user, chat, connect, settings
):
    settings.RATE_LIMIT_BURST = 3
    settings.RATE_LIMIT_PER_SECOND = 0.01
    message = await send_stored(user, chat, "hi")
    alice = await connect(user)
    target = {"chatId": str(chat.pk), "messageId": str(message.pk)}

    await alice.send("edit", text="hi!", **target)
    await alice.send("react", emoji="👍", **target)
    await alice.send("message", chatId=str(chat.pk), text="third")
    await alice.send("delete", **target)

    frames = [await alice.receive() for _ in range(4)]
    assert [f["type"] for f in frames] == ["update", "update", "message", "error"]
    assert (frames[3]["data"]["code"], frames[3]["data"]["ref"]) == ("rate_limited", "delete")
    await alice.send("delivered", chatId=str(chat.pk), seq="2")  # not counted
    assert (await alice.receive_type("delivered"))["data"]["seq"] == "2"


# ---------------------------------------------------------------- moderator restores


async def test_a_moderator_restore_is_announced_as_update_with_the_text_but_no_reactions(
    user, other_user, chat, connect
):
    message = await send_stored(user, chat, "first")
    await db_call(services.edit_message)(
        user=user, chat_id=chat.pk, message_id=message.pk, text="second"
    )
    await db_call(services.react)(
        user=other_user, chat_id=chat.pk, message_id=message.pk, emoji="👍"
    )
    await db_call(services.delete_message)(message=message, moderator=other_user)
    bob = await connect(other_user)

    restored = await db_call(services.restore_message)(message=message, moderator=other_user)

    update = await bob.receive_type("update")
    assert restored is True
    assert update["data"]["message"]["text"] == "second"
    assert update["data"]["message"]["deleted"] is False
    assert update["data"]["message"]["reactions"] == []
    assert update["data"]["message"]["rev"] == "5"
    assert await db_call(MessageEdit.objects.filter(message=message).count)() == 1


# ---------------------------------------------------------------- two devices


async def test_two_devices_of_one_user_both_see_changes_and_only_the_asking_one_a_no_op(
    user, other_user, chat, connect
):
    message = await send_stored(user, chat, "typo")
    laptop = await connect(user)
    phone = await connect(user)
    target = {"chatId": str(chat.pk), "messageId": str(message.pk)}

    await laptop.send("edit", text="fixed", **target)
    on_laptop = await laptop.receive_type("update")
    on_phone = await phone.receive_type("update")
    await phone.send("edit", text="fixed", **target)
    answered = await phone.receive_type("update")

    assert on_laptop == on_phone == answered
    assert await laptop.nothing()


# ---------------------------------------------------------------- sync with rev


async def test_an_offline_member_learns_of_a_deletion_through_sync(user, other_user, chat, connect):
    spam = await send_stored(other_user, chat, "regrettable")
    kept = await send_stored(other_user, chat, "fine")
    bob = await connect(other_user)
    await bob.send("delete", chatId=str(chat.pk), messageId=str(spam.pk))
    await bob.receive_type("delete")

    alice = await connect(user)  # was offline, holds seq 2 and rev 2
    await alice.send("sync", chats={str(chat.pk): {"seq": "2", "rev": "2"}})

    assert await alice.receive() == {
        "type": "delete",
        "data": {"chatId": str(chat.pk), "messageId": str(spam.pk), "seq": "1", "rev": "3"},
    }
    assert await alice.receive() == {
        "type": "sync",
        "data": {"chats": {str(chat.pk): {"lastSeq": "2", "rev": "3", "hasMore": False}}},
    }
    assert kept.rev == 2


async def test_sync_with_rev_replays_new_messages_then_changes_of_older_ones_in_rev_order(
    user, other_user, chat, connect
):
    one = await send_stored(other_user, chat, "one")
    two = await send_stored(other_user, chat, "two")
    three = await send_stored(user, chat, "three")
    # Alice holds seq 3 and rev 3. While she is away:
    await db_call(services.edit_message)(
        user=other_user, chat_id=chat.pk, message_id=two.pk, text="two!"
    )  # rev 4
    four = await send_stored(other_user, chat, "four")  # rev 5
    await db_call(services.react)(
        user=other_user, chat_id=chat.pk, message_id=one.pk, emoji="👍"
    )  # rev 6
    await db_call(services.delete_message)(message=three, moderator=other_user)  # rev 7
    await db_call(services.react)(
        user=other_user, chat_id=chat.pk, message_id=four.pk, emoji="🎉"
    )  # rev 8
    alice = await connect(user)

    await alice.send("sync", chats={str(chat.pk): {"seq": "3", "rev": "3"}})

    frames = [await alice.receive() for _ in range(5)]
    assert [(f["type"], f["data"].get("message", f["data"]).get("rev")) for f in frames] == [
        ("message", "8"),  # four, new to alice, in its current state
        ("update", "4"),
        ("update", "6"),
        ("delete", "7"),
        ("sync", None),
    ]
    assert frames[0]["data"]["message"]["reactions"] == [
        {"emoji": "🎉", "userIds": ids(other_user)}
    ]
    assert frames[1]["data"]["message"]["text"] == "two!"
    assert frames[3]["data"]["messageId"] == str(three.pk)
    assert frames[4]["data"]["chats"] == {
        str(chat.pk): {"lastSeq": "4", "rev": "8", "hasMore": False}
    }


async def test_sync_with_rev_of_a_client_that_holds_everything_answers_the_summary_alone(
    user, other_user, chat, connect
):
    await send_stored(other_user, chat, "one")
    alice = await connect(user)

    await alice.send("sync", chats={str(chat.pk): {"seq": "1", "rev": "1"}})

    assert await alice.receive() == {
        "type": "sync",
        "data": {"chats": {str(chat.pk): {"lastSeq": "1", "rev": "1", "hasMore": False}}},
    }


async def test_sync_summary_rev_when_new_messages_fill_the_page_is_the_clients_own(
    user, other_user, chat, connect, settings
):
    settings.SYNC_MAX_PER_CHAT = 3
    first = await send_stored(other_user, chat, "held")
    for n in range(4):
        await send_stored(other_user, chat, f"new {n}")
    await db_call(services.edit_message)(
        user=other_user, chat_id=chat.pk, message_id=first.pk, text="held, edited"
    )
    alice = await connect(user)

    await alice.send("sync", chats={str(chat.pk): {"seq": "1", "rev": "1"}})

    frames = [await alice.receive() for _ in range(4)]
    assert [f["type"] for f in frames] == ["message"] * 3 + ["sync"]
    assert frames[3]["data"]["chats"] == {
        str(chat.pk): {"lastSeq": "4", "rev": "1", "hasMore": True}
    }


async def test_sync_summary_rev_when_changes_are_cut_is_the_last_change_sent(
    user, other_user, chat, connect, settings
):
    settings.SYNC_MAX_PER_CHAT = 3
    messages = [await send_stored(other_user, chat, f"m{n}") for n in range(4)]
    await send_stored(other_user, chat, "new")  # rev 5
    for message in messages:  # revs 6, 7, 8, 9
        await db_call(services.edit_message)(
            user=other_user, chat_id=chat.pk, message_id=message.pk, text=f"{message.text}!"
        )
    alice = await connect(user)

    await alice.send("sync", chats={str(chat.pk): {"seq": "4", "rev": "4"}})

    frames = [await alice.receive() for _ in range(4)]
    assert [(f["type"], f["data"]["message"]["rev"]) for f in frames[:3]] == [
        ("message", "5"),
        ("update", "6"),
        ("update", "7"),
    ]
    assert frames[3]["data"]["chats"] == {
        str(chat.pk): {"lastSeq": "5", "rev": "7", "hasMore": True}
    }


async def test_sync_in_the_version_1_form_gets_the_chats_rev_or_0_with_more(
    user, other_user, chat, group_chat, connect, settings
):
    settings.SYNC_MAX_PER_CHAT = 2
    message = await send_stored(other_user, chat, "one")
    await db_call(services.edit_message)(
        user=other_user, chat_id=chat.pk, message_id=message.pk, text="one!"
    )
    for n in range(3):
        await send_stored(other_user, group_chat, f"g{n}")
    alice = await connect(user)

    await alice.send("sync", chats={str(chat.pk): "0", str(group_chat.pk): "0"})

    frames = [await alice.receive() for _ in range(4)]
    assert frames[0]["data"]["message"]["text"] == "one!"
    assert frames[3]["data"]["chats"] == {
        str(chat.pk): {"lastSeq": "1", "rev": "2", "hasMore": False},
        str(group_chat.pk): {"lastSeq": "2", "rev": "0", "hasMore": True},
    }


async def test_sync_with_a_half_position_object_is_bad_request(user, chat, connect):
    alice = await connect(user)

    await expect_errors(
        alice,
        [{"seq": "1"}, {"rev": "1"}, {"seq": "1", "rev": "x"}, {"seq": None, "rev": "1"}],
        lambda held: alice.send("sync", chats={str(chat.pk): held}),
        "bad_request",
        "sync",
    )


# ---------------------------------------------------------------- catching up on a long absence


def store_absence(chat, author, reactor, *, held: int, new: int, changes: int):
    """`held` messages, then `new` messages and `changes` changes interleaved (by the services,
    in batches, as the socket path stores them)."""

    def store(texts):
        return [
            m for m, _ in services.store_messages([Outgoing(author, chat.pk, t) for t in texts])
        ]

    before = []
    for start in range(0, held, 100):
        before += store([f"held {n}" for n in range(start, min(held, start + 100))])
    after = []
    step = new // changes
    for n in range(changes):
        after += store([f"new {n}-{k}" for k in range(step)])
        older = before[(n * 7) % held]
        newer = after[(n * 3) % len(after)]
        change = [
            Change(author, chat.pk, older.pk, Action.EDIT, text=f"edited {n}"),
            Change(reactor, chat.pk, newer.pk, Action.REACT, emoji=f"e{n % 25 % 20}"),
            Change(author, chat.pk, newer.pk, Action.EDIT, text=f"new, edited {n}"),
            Change(author, chat.pk, older.pk, Action.DELETE),
        ][n % 4]
        services.apply_changes([change])
    after += store([f"tail {k}" for k in range(new - step * changes)])
    return before, after


def keep_highest_rev(state: dict, frame: dict) -> None:
    """What a client does with a replayed or live frame: keep each message's highest rev."""
    if frame["type"] == "delete":
        data = frame["data"]
        copy = {"id": data["messageId"], "seq": data["seq"], "rev": data["rev"], "deleted": True}
    else:
        copy = frame["data"]["message"]
    known = state.get(copy["id"])
    if known is None or int(copy["rev"]) > int(known["rev"]):
        state[copy["id"]] = copy


async def test_an_offline_member_catches_up_on_1000_new_messages_and_changes_by_sync_then_rest(
    user, other_user, chat, connect, api_client
):
    await db_call(store_absence)(chat, other_user, user, held=200, new=700, changes=300)
    alice = await connect(user)  # was away: holds the first 200 messages, rev 200
    state: dict[str, dict] = {}

    await alice.send("sync", chats={str(chat.pk): {"seq": "200", "rev": "200"}})
    replayed = 0
    while (frame := await alice.receive())["type"] != "sync":
        keep_highest_rev(state, frame)
        replayed += 1
    summary = frame["data"]["chats"][str(chat.pk)]
    client = api_client.as_user(user)
    since, pages = summary["rev"], 0
    while True:
        page = await db_call(client.get)(f"/api/chats/{chat.pk}/changes/?since={since}&limit=200")
        body = page.json()
        for message in body["results"]:
            keep_highest_rev(state, {"type": "update", "data": {"message": message}})
        since, pages = body["rev"], pages + 1
        if not body["hasMore"]:
            break

    def stored_state():
        messages = Message.objects.framed(chat.pk)
        return {str(m.pk): services.protocol.message_data(m) for m in messages}

    expected = await db_call(stored_state)()
    assert replayed == 500
    assert summary == {"lastSeq": "700", "rev": "200", "hasMore": True}
    assert pages >= 4
    assert since == str(await chat_rev(chat))
    assert int(since) > 1100  # 900 messages and most of the 300 changes (a few refused)
    changed_before = {
        i for i, m in expected.items() if int(m["seq"]) <= 200 and m["rev"] != m["seq"]
    }
    assert len(changed_before) > 50
    for message_id, message in expected.items():
        if int(message["seq"]) <= 200 and message_id not in changed_before:
            continue  # held since before the absence, unchanged
        got = state[message_id]
        if message["deleted"]:
            assert (got["deleted"], got["rev"]) == (True, message["rev"]), message_id
        else:
            assert got == message, message_id
