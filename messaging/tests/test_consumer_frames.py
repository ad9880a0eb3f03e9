"""What each frame does over a live socket: message, typing, read, sync, ping, disconnect, and the server's own frames."""

import asyncio
import re

from django.utils import timezone

from conftest import db_call, expect_error, expect_errors
from messaging import services
from messaging.models import Chat, Message, ReadReceipt
from messaging.realtime.consumer import live_consumers

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


async def send_stored(sender, chat, text: str) -> Message:
    """A message stored (and broadcast) the way the REST API does it."""
    message, _ = await db_call(services.send_message)(sender=sender, chat_id=chat.pk, text=text)
    return message


async def message_count(**filters) -> int:
    return await db_call(lambda: Message.objects.filter(**filters).count())()


# ---------------------------------------------------------------- message


async def test_message_reaches_every_connection_of_every_member_and_no_one_else(
    user, other_user, third_user, outsider, group_chat, connect
):
    alice = await connect(user)
    alice_phone = await connect(user)
    bob = await connect(other_user)
    carol = await connect(third_user)
    mallory = await connect(outsider)

    await alice.send("message", chatId=str(group_chat.pk), text="hi all", clientMessageId="m-1")

    frames = [await c.receive_type("message") for c in (alice, alice_phone, bob, carol)]
    assert all(frame == frames[0] for frame in frames)
    assert await mallory.nothing()


async def test_message_frame_carries_the_stored_message(user, other_user, chat, connect):
    alice = await connect(user)
    bob = await connect(other_user)

    await alice.send(
        "message", chatId=str(chat.pk), text="Hello, world!", clientMessageId="b8a3", extra=1
    )

    frame = await bob.receive_type("message")
    stored = await db_call(Message.objects.get)(chat=chat)
    assert frame["data"]["chatId"] == str(chat.pk)
    assert frame["data"]["senderId"] == str(user.pk)
    assert frame["data"]["text"] == "Hello, world!"
    message = frame["data"]["message"]
    assert message["id"] == str(stored.pk)
    assert message["chatId"] == str(chat.pk)
    assert message["seq"] == "1"
    assert message["senderId"] == str(user.pk)
    assert message["text"] == "Hello, world!"
    assert message["clientMessageId"] == "b8a3"
    assert ISO_MS.match(message["createdAt"])
    assert stored.text == "Hello, world!" and stored.sender_id == user.pk


async def test_message_seq_increases_without_holes(user, other_user, chat, connect):
    alice = await connect(user)
    bob = await connect(other_user)

    for n in range(3):
        await alice.send("message", chatId=str(chat.pk), text=f"n{n}")

    seqs = [(await bob.receive_type("message"))["data"]["message"]["seq"] for _ in range(3)]
    texts = [(await alice.receive_type("message"))["data"]["text"] for _ in range(3)]
    assert seqs == ["1", "2", "3"]
    assert texts == ["n0", "n1", "n2"]


async def test_message_with_matching_sender_id_is_accepted(user, chat, connect):
    alice = await connect(user)

    await alice.send("message", chatId=str(chat.pk), text="me", senderId=str(user.pk))

    assert (await alice.receive_type("message"))["data"]["senderId"] == str(user.pk)


async def test_retry_with_same_client_message_id_returns_stored_message_and_creates_nothing(
    user, other_user, chat, connect
):
    alice = await connect(user)
    bob = await connect(other_user)
    await alice.send("message", chatId=str(chat.pk), text="once", clientMessageId="retry-1")
    first = await alice.receive_type("message")
    await bob.receive_type("message")

    await alice.send("message", chatId=str(chat.pk), text="once", clientMessageId="retry-1")

    again = await alice.receive()
    assert again == first
    assert await message_count(chat=chat) == 1
    assert await bob.nothing()


async def test_sender_id_of_another_user_is_forbidden(user, other_user, chat, connect):
    alice = await connect(user)

    await alice.send(
        "message", chatId=str(chat.pk), text="x", senderId=str(other_user.pk), clientMessageId="f1"
    )

    await expect_error(alice, "forbidden", "f1")
    assert await message_count() == 0


async def test_message_to_chat_of_others_is_not_member(user, other_user, third_user, connect):
    others_chat, _ = await db_call(services.create_chat)(
        creator=other_user, member_ids=[third_user.pk]
    )
    alice = await connect(user)

    await alice.send("message", chatId=str(others_chat.pk), text="let me in")

    await expect_error(alice, "not_member", "message")
    assert await message_count() == 0


async def test_message_to_nonexistent_chat_is_not_member(user, chat, connect):
    alice = await connect(user)

    await expect_errors(
        alice,
        ["999999", "abc", "-1", "0", 0, 999999, "99999999999999999999999"],
        lambda chat_id: alice.send("message", chatId=chat_id, text="hi?", clientMessageId="nx"),
        "not_member",
        "nx",
    )

    assert await message_count() == 0


async def test_empty_missing_or_non_string_text_is_bad_request(user, chat, connect):
    alice = await connect(user)
    cases = [{"text": ""}, {"text": "  \n\t"}, {}, {"text": None}, {"text": 42}, {"text": ["a"]}]

    await expect_errors(
        alice,
        cases,
        lambda data: alice.send("message", chatId=str(chat.pk), clientMessageId="t1", **data),
        "bad_request",
        "t1",
    )

    assert await message_count() == 0


async def test_mistyped_chat_id_is_bad_request(user, chat, connect):
    alice = await connect(user)

    await expect_errors(
        alice,
        [None, True, 1.5, [1], {"id": 1}, -1, ""],
        lambda chat_id: alice.send("message", chatId=chat_id, text="hi"),
        "bad_request",
        "message",
    )

    assert await message_count() == 0


async def test_text_over_limit_is_too_large(user, chat, connect):
    alice = await connect(user)

    await alice.send("message", chatId=str(chat.pk), text="x" * 4001, clientMessageId="big")

    await expect_error(alice, "too_large", "big")
    assert await message_count() == 0


async def test_text_at_limit_is_stored(user, chat, connect):
    alice = await connect(user)

    await alice.send("message", chatId=str(chat.pk), text="x" * 4000)

    frame = await alice.receive_type("message")
    assert len(frame["data"]["text"]) == 4000


async def test_text_limit_follows_settings(user, chat, connect, settings):
    settings.MESSAGE_MAX_LENGTH = 10
    alice = await connect(user)

    await alice.send("message", chatId=str(chat.pk), text="x" * 11)

    await expect_error(alice, "too_large", "message")


async def test_client_message_id_over_64_characters_is_bad_request(user, chat, connect):
    alice = await connect(user)
    too_long = "c" * 65

    await alice.send("message", chatId=str(chat.pk), text="hi", clientMessageId=too_long)

    frame = await alice.receive()
    assert frame["type"] == "error"
    assert frame["data"]["code"] == "bad_request"
    assert too_long.startswith(frame["data"]["ref"])
    assert await message_count() == 0


async def test_mistyped_client_message_id_is_bad_request(user, chat, connect):
    alice = await connect(user)

    await expect_errors(
        alice,
        ["", 5, True, ["a"]],
        lambda cmid: alice.send("message", chatId=str(chat.pk), text="hi", clientMessageId=cmid),
        "bad_request",
        "message",
    )

    assert await message_count() == 0


async def test_client_message_id_of_64_characters_is_accepted(user, chat, connect):
    alice = await connect(user)

    await alice.send("message", chatId=str(chat.pk), text="hi", clientMessageId="c" * 64)

    frame = await alice.receive_type("message")
    assert frame["data"]["message"]["clientMessageId"] == "c" * 64


async def test_client_message_id_reused_in_another_chat_is_another_message(
    user, chat, group_chat, connect
):
    alice = await connect(user)
    await alice.send("message", chatId=str(chat.pk), text="first", clientMessageId="dup")
    await alice.receive_type("message")

    await alice.send("message", chatId=str(group_chat.pk), text="second", clientMessageId="dup")

    frame = await alice.receive_type("message")
    assert frame["data"]["message"]["text"] == "second"
    assert await message_count(chat=group_chat) == 1


async def test_same_client_message_id_from_two_users_are_two_messages(
    user, other_user, chat, connect
):
    alice = await connect(user)
    bob = await connect(other_user)

    await alice.send("message", chatId=str(chat.pk), text="a", clientMessageId="same")
    await alice.receive_type("message")
    await bob.receive_type("message")
    await bob.send("message", chatId=str(chat.pk), text="b", clientMessageId="same")

    frame = await bob.receive_type("message")
    assert frame["data"]["text"] == "b"
    assert frame["data"]["message"]["seq"] == "2"
    assert await message_count(chat=chat) == 2


async def test_muted_member_sending_is_forbidden(user, other_user, chat, connect):
    await db_call(services.set_muted)(chat_id=chat.pk, user_id=user.pk, muted=True)
    bob = await connect(other_user)
    alice = await connect(user)
    await bob.receive_type("connect")  # alice's presence

    await alice.send("message", chatId=str(chat.pk), text="can you hear me", clientMessageId="mu")

    await expect_error(alice, "forbidden", "mu")
    assert await bob.nothing()
    assert await message_count() == 0


async def test_message_error_ref_is_the_type_without_client_message_id(user, chat, connect):
    alice = await connect(user)

    await alice.send("message", chatId=str(chat.pk), text="")

    await expect_error(alice, "bad_request", "message")


# ---------------------------------------------------------------- typing


async def test_typing_is_forwarded_to_other_members_only(
    user, other_user, third_user, group_chat, connect
):
    bob = await connect(other_user)
    carol = await connect(third_user)
    alice = await connect(user)
    alice_phone = await connect(user)

    await alice.send("typing", chatId=str(group_chat.pk))

    expected = {
        "type": "typing",
        "data": {
            "chatId": str(group_chat.pk),
            "senderId": str(user.pk),
            "userId": str(user.pk),
            "isTyping": True,
            "expiresInMs": 3000,
        },
    }
    assert await bob.receive_type("typing") == expected
    assert await carol.receive_type("typing") == expected
    assert await alice.nothing()
    assert await alice_phone.nothing()


async def test_typing_repeated_within_a_second_is_coalesced_without_error(
    user, other_user, chat, connect
):
    bob = await connect(other_user)
    alice = await connect(user)

    await alice.send("typing", chatId=str(chat.pk), isTyping=True)
    await alice.send("typing", chatId=str(chat.pk), isTyping=True)
    await alice.send("typing", chatId=str(chat.pk))

    assert (await bob.receive_type("typing"))["data"]["isTyping"] is True
    assert await bob.nothing()
    assert await alice.nothing()


async def test_typing_ends_by_itself_after_the_timeout(user, other_user, chat, connect, settings):
    settings.TYPING_TIMEOUT_MS = 300
    alice = await connect(user)
    bob = await connect(other_user)

    await alice.send("typing", chatId=str(chat.pk))

    started = await bob.receive_type("typing")
    stopped = await bob.receive_type("typing", timeout=2)
    assert started["data"]["isTyping"] is True
    assert started["data"]["expiresInMs"] == 300
    assert stopped["data"] == {**started["data"], "isTyping": False}


async def test_coalesced_typing_restarts_the_timeout(user, other_user, chat, connect, settings):
    settings.TYPING_TIMEOUT_MS = 500
    alice = await connect(user)
    bob = await connect(other_user)
    await alice.send("typing", chatId=str(chat.pk))
    assert (await bob.receive())["data"]["isTyping"] is True
    await asyncio.sleep(0.3)

    await alice.send("typing", chatId=str(chat.pk))

    assert await bob.nothing(timeout=0.35)
    assert (await bob.receive(timeout=2))["data"]["isTyping"] is False


async def test_typing_false_from_client_is_forwarded_at_once(user, other_user, chat, connect):
    alice = await connect(user)
    bob = await connect(other_user)
    await alice.send("typing", chatId=str(chat.pk))
    assert (await bob.receive_type("typing"))["data"]["isTyping"] is True

    await alice.send("typing", chatId=str(chat.pk), isTyping=False)

    assert (await bob.receive_type("typing", timeout=1))["data"]["isTyping"] is False
    assert await bob.nothing()


async def test_typing_ends_when_the_typist_sends_a_message(user, other_user, chat, connect):
    alice = await connect(user)
    bob = await connect(other_user)
    await alice.send("typing", chatId=str(chat.pk))
    assert (await bob.receive_type("typing"))["data"]["isTyping"] is True

    await alice.send("message", chatId=str(chat.pk), text="done typing")

    assert (await bob.receive_type("message"))["data"]["text"] == "done typing"
    stopped = await bob.receive_type("typing", timeout=1)
    assert stopped["data"]["isTyping"] is False
    assert stopped["data"]["userId"] == str(user.pk)


async def test_typing_ends_when_the_typists_connection_closes(user, other_user, chat, connect):
    alice = await connect(user)
    bob = await connect(other_user)
    await alice.send("typing", chatId=str(chat.pk))
    assert (await bob.receive_type("typing"))["data"]["isTyping"] is True

    await alice.close()

    stopped = await bob.receive_type("typing", timeout=1)
    assert stopped["data"]["isTyping"] is False
    assert stopped["data"]["userId"] == str(user.pk)


async def test_typing_in_chat_you_are_not_in_is_not_member(user, other_user, third_user, connect):
    others_chat, _ = await db_call(services.create_chat)(
        creator=other_user, member_ids=[third_user.pk]
    )
    alice = await connect(user)
    bob = await connect(other_user)

    await alice.send("typing", chatId=str(others_chat.pk))
    await alice.send("typing", chatId="999999")

    await expect_error(alice, "not_member", "typing")
    await expect_error(alice, "not_member", "typing")
    assert await bob.nothing()


async def test_typing_with_sender_id_of_another_user_is_forbidden(user, other_user, chat, connect):
    alice = await connect(user)

    await alice.send("typing", chatId=str(chat.pk), senderId=str(other_user.pk))

    await expect_error(alice, "forbidden", "typing")


async def test_typing_with_non_boolean_is_typing_is_bad_request(user, chat, connect):
    alice = await connect(user)

    await alice.send("typing", chatId=str(chat.pk), isTyping="yes")

    await expect_error(alice, "bad_request", "typing")


# ---------------------------------------------------------------- read


async def test_read_is_persisted_and_announced_to_all_members(
    user, other_user, third_user, group_chat, connect
):
    first = await send_stored(user, group_chat, "one")
    await send_stored(user, group_chat, "two")
    alice = await connect(user)
    bob = await connect(other_user)
    carol = await connect(third_user)

    await bob.send("read", chatId=str(group_chat.pk), messageId=str(first.pk))

    frames = [await c.receive_type("read") for c in (alice, bob, carol)]
    assert all(frame == frames[0] for frame in frames)
    data = frames[0]["data"]
    assert set(data) == {"chatId", "userId", "messageId", "seq", "readAt"}
    assert data["chatId"] == str(group_chat.pk)
    assert data["userId"] == str(other_user.pk)
    assert data["messageId"] == str(first.pk)
    assert data["seq"] == "1"
    assert ISO_MS.match(data["readAt"])
    receipt = await db_call(ReadReceipt.objects.get)(chat=group_chat, user=other_user)
    assert (receipt.message_id, receipt.seq) == (first.pk, 1)


async def test_read_without_message_id_marks_the_latest(user, other_user, chat, connect):
    await send_stored(user, chat, "one")
    latest = await send_stored(user, chat, "two")
    bob = await connect(other_user)

    await bob.send("read", chatId=str(chat.pk))

    data = (await bob.receive_type("read"))["data"]
    assert (data["messageId"], data["seq"]) == (str(latest.pk), "2")


async def test_read_never_moves_backwards_and_is_not_announced(user, other_user, chat, connect):
    first = await send_stored(user, chat, "one")
    second = await send_stored(user, chat, "two")
    alice = await connect(user)
    bob = await connect(other_user)
    await bob.send("read", chatId=str(chat.pk), messageId=str(second.pk))
    await alice.receive_type("read")
    await bob.receive_type("read")

    await bob.send("read", chatId=str(chat.pk), messageId=str(first.pk))
    await bob.send("read", chatId=str(chat.pk), messageId=str(second.pk))

    assert await alice.nothing()
    assert await bob.nothing()
    receipt = await db_call(ReadReceipt.objects.get)(chat=chat, user=other_user)
    assert receipt.seq == 2


async def test_read_of_empty_chat_announces_nothing(user, other_user, chat, connect):
    alice = await connect(user)

    await alice.send("read", chatId=str(chat.pk))

    assert await alice.nothing()


async def test_read_of_message_not_in_chat_is_not_found(
    user, other_user, chat, group_chat, connect
):
    elsewhere = await send_stored(user, group_chat, "elsewhere")
    await send_stored(user, chat, "here")
    alice = await connect(user)

    await expect_errors(
        alice,
        [str(elsewhere.pk), "999999", "abc", "0", 999999],
        lambda message_id: alice.send("read", chatId=str(chat.pk), messageId=message_id),
        "not_found",
        "read",
    )

    assert await alice.nothing()


async def test_read_with_user_id_of_another_user_is_forbidden(user, other_user, chat, connect):
    message = await send_stored(user, chat, "one")
    alice = await connect(user)

    await alice.send(
        "read", chatId=str(chat.pk), messageId=str(message.pk), userId=str(other_user.pk)
    )

    await expect_error(alice, "forbidden", "read")
    receipt = await db_call(ReadReceipt.objects.get)(chat=chat, user=other_user)
    assert receipt.seq == 0


async def test_read_in_chat_you_are_not_in_is_not_member(user, other_user, third_user, connect):
    others_chat, _ = await db_call(services.create_chat)(
        creator=other_user, member_ids=[third_user.pk]
    )
    alice = await connect(user)

    await alice.send("read", chatId=str(others_chat.pk))

    await expect_error(alice, "not_member", "read")


# ---------------------------------------------------------------- presence


async def test_first_connection_is_announced_to_co_members_only(
    user, other_user, outsider, chat, connect
):
    bob = await connect(other_user)
    mallory = await connect(outsider)

    await connect(user)

    assert await bob.receive() == {"type": "connect", "data": {"userId": str(user.pk)}}
    assert await mallory.nothing()


async def test_second_connection_and_its_closing_announce_nothing(user, other_user, chat, connect):
    bob = await connect(other_user)
    alice = await connect(user)
    assert (await bob.receive())["data"] == {"userId": str(user.pk)}

    alice_phone = await connect(user)
    await alice_phone.close()

    assert await bob.nothing()
    await alice.close()
    assert await bob.receive() == {"type": "disconnect", "data": {"userId": str(user.pk)}}


async def test_last_disconnection_is_announced_to_co_members_only(
    user, other_user, outsider, chat, connect
):
    alice = await connect(user)
    bob = await connect(other_user)
    mallory = await connect(outsider)
    await alice.receive_type("connect")

    await bob.close()

    assert await alice.receive() == {"type": "disconnect", "data": {"userId": str(other_user.pk)}}
    assert await mallory.nothing()


# ---------------------------------------------------------------- chat added / removed


async def test_added_member_is_told_and_receives_the_chat_at_once(
    user, outsider, group_chat, connect
):
    alice = await connect(user)
    mallory = await connect(outsider)

    await db_call(services.add_member)(actor=user, chat_id=group_chat.pk, user_id=outsider.pk)

    assert await mallory.receive_type("chat") == {
        "type": "chat",
        "data": {"chatId": str(group_chat.pk), "event": "added"},
    }
    await alice.send("message", chatId=str(group_chat.pk), text="welcome")
    assert (await mallory.receive_type("message"))["data"]["text"] == "welcome"
    assert (await alice.receive_type("message"))["data"]["text"] == "welcome"
    await mallory.send("message", chatId=str(group_chat.pk), text="thanks")
    assert (await alice.receive_type("message"))["data"]["text"] == "thanks"


async def test_removed_member_is_told_and_stops_receiving_the_chat_at_once(
    user, third_user, group_chat, connect
):
    alice = await connect(user)
    carol = await connect(third_user)

    await db_call(services.remove_member)(actor=user, chat_id=group_chat.pk, user_id=third_user.pk)

    assert await carol.receive_type("chat") == {
        "type": "chat",
        "data": {"chatId": str(group_chat.pk), "event": "removed"},
    }
    await alice.send("message", chatId=str(group_chat.pk), text="after you left")
    await alice.receive_type("message")
    assert await carol.nothing()
    await carol.send("typing", chatId=str(group_chat.pk))
    await expect_error(carol, "not_member", "typing")


async def test_removed_typist_stops_typing_for_the_others(
    user, other_user, third_user, group_chat, connect
):
    bob = await connect(other_user)
    carol = await connect(third_user)
    await carol.send("typing", chatId=str(group_chat.pk))
    assert (await bob.receive_type("typing"))["data"]["isTyping"] is True

    await db_call(services.remove_member)(actor=user, chat_id=group_chat.pk, user_id=third_user.pk)

    stopped = await bob.receive_type("typing", timeout=1)
    assert stopped["data"]["isTyping"] is False
    assert stopped["data"]["userId"] == str(third_user.pk)


async def test_created_chat_is_announced_to_every_member_connected(
    user, outsider, third_user, connect
):
    alice = await connect(user)
    mallory = await connect(outsider)

    new_chat, _ = await db_call(services.create_chat)(
        creator=user, member_ids=[outsider.pk], title="New"
    )

    expected = {"type": "chat", "data": {"chatId": str(new_chat.pk), "event": "added"}}
    assert await alice.receive_type("chat") == expected
    assert await mallory.receive_type("chat") == expected
    await alice.send("message", chatId=str(new_chat.pk), text="first words")
    assert (await mallory.receive_type("message"))["data"]["text"] == "first words"


async def test_created_direct_chat_is_announced(user, outsider, connect):
    mallory = await connect(outsider)

    new_chat, _ = await db_call(services.create_chat)(creator=user, member_ids=[outsider.pk])

    assert (await mallory.receive_type("chat"))["data"] == {
        "chatId": str(new_chat.pk),
        "event": "added",
    }


# ---------------------------------------------------------------- delete


async def test_deleted_message_is_announced_to_members(user, other_user, outsider, chat, connect):
    message = await send_stored(user, chat, "oops")
    alice = await connect(user)
    bob = await connect(other_user)
    mallory = await connect(outsider)

    await db_call(services.delete_message)(message=message, moderator=user)

    expected = {
        "type": "delete",
        "data": {"chatId": str(chat.pk), "messageId": str(message.pk), "seq": "1", "rev": "2"},
    }
    assert await alice.receive_type("delete") == expected
    assert await bob.receive_type("delete") == expected
    assert await mallory.nothing()


# ---------------------------------------------------------------- the server closing a socket


async def test_banned_users_sockets_are_told_and_closed_with_4001(user, other_user, chat, connect):
    alice = await connect(user)
    alice_phone = await connect(user)
    bob = await connect(other_user)

    await db_call(services.ban_user)(user=user)

    for client in (alice, alice_phone):
        assert await client.receive_type("disconnect") == {
            "type": "disconnect",
            "data": {"userId": str(user.pk), "reason": "banned"},
        }
        assert await client.closed_with() == 4001
    assert await bob.nothing()


async def test_server_shutdown_tells_each_socket_before_closing(user, other_user, chat, connect):
    alice = await connect(user)
    bob = await connect(other_user)

    await asyncio.gather(*(consumer.server_shutdown() for consumer in list(live_consumers)))

    for client, someone in ((alice, user), (bob, other_user)):
        assert await client.receive_type("disconnect") == {
            "type": "disconnect",
            "data": {"userId": str(someone.pk), "reason": "server_shutdown"},
        }
        assert await client.closed_with() == 1001


# ---------------------------------------------------------------- sync


async def test_sync_replays_missed_messages_in_seq_order_then_the_summary(
    user, other_user, chat, group_chat, connect
):
    for n in range(1, 4):
        await send_stored(other_user, chat, f"c{n}")
    await send_stored(other_user, group_chat, "g1")
    alice = await connect(user)

    await alice.send("sync", chats={str(chat.pk): "1", str(group_chat.pk): "0"})

    frames = [await alice.receive() for _ in range(3)]
    by_chat = {}
    for frame in frames:
        assert frame["type"] == "message", frames
        by_chat.setdefault(frame["data"]["chatId"], []).append(frame["data"]["text"])
    assert by_chat == {str(chat.pk): ["c2", "c3"], str(group_chat.pk): ["g1"]}
    assert await alice.receive() == {
        "type": "sync",
        "data": {
            "chats": {
                str(chat.pk): {"lastSeq": "3", "rev": "3", "hasMore": False},
                str(group_chat.pk): {"lastSeq": "1", "rev": "1", "hasMore": False},
            }
        },
    }


async def test_sync_answers_the_clients_own_seq_when_nothing_was_missed(
    user, other_user, chat, group_chat, connect
):
    await send_stored(other_user, chat, "seen")
    alice = await connect(user)

    await alice.send("sync", chats={str(chat.pk): "1", str(group_chat.pk): "0"})

    assert await alice.receive() == {
        "type": "sync",
        "data": {
            "chats": {
                str(chat.pk): {"lastSeq": "1", "rev": "1", "hasMore": False},
                str(group_chat.pk): {"lastSeq": "0", "rev": "0", "hasMore": False},
            }
        },
    }


async def test_sync_replays_at_most_the_limit_per_chat(user, other_user, chat, connect, settings):
    settings.SYNC_MAX_PER_CHAT = 2
    for n in range(1, 6):
        await send_stored(other_user, chat, f"m{n}")
    alice = await connect(user)

    await alice.send("sync", chats={str(chat.pk): "1"})

    replayed = [await alice.receive() for _ in range(2)]
    assert [frame["data"]["message"]["seq"] for frame in replayed] == ["2", "3"]
    assert (await alice.receive())["data"]["chats"] == {
        str(chat.pk): {"lastSeq": "3", "rev": "0", "hasMore": True}
    }


async def test_sync_default_limit_is_500(user, other_user, chat, connect):
    def store_many(count):
        # In bulk: 501 sends through the service would take seconds on PostgreSQL.
        now = timezone.now()
        Message.objects.bulk_create(
            Message(chat=chat, seq=n, rev=n, sender=other_user, text=f"m{n}", created_at=now)
            for n in range(1, count + 1)
        )
        Chat.objects.filter(pk=chat.pk).update(last_seq=count, last_rev=count, last_message_at=now)

    await db_call(store_many)(501)
    alice = await connect(user)

    await alice.send("sync", chats={str(chat.pk): "0"})

    replayed = [await alice.receive() for _ in range(500)]
    assert [frame["data"]["message"]["seq"] for frame in replayed] == [
        str(n) for n in range(1, 501)
    ]
    assert (await alice.receive())["data"]["chats"] == {
        str(chat.pk): {"lastSeq": "500", "rev": "0", "hasMore": True}
    }


async def test_sync_replays_a_deleted_message_without_its_text(user, other_user, chat, connect):
    message = await send_stored(other_user, chat, "regret")
    await db_call(services.delete_message)(message=message, moderator=other_user)
    alice = await connect(user)

    await alice.send("sync", chats={str(chat.pk): "0"})

    replayed = (await alice.receive())["data"]["message"]
    assert replayed["id"] == str(message.pk)
    assert replayed["text"] is None
    assert replayed["deleted"] is True


async def test_sync_of_chat_you_cannot_see_is_not_member_and_skipped(
    user, other_user, third_user, chat, connect
):
    others_chat, _ = await db_call(services.create_chat)(
        creator=other_user, member_ids=[third_user.pk]
    )
    await send_stored(other_user, others_chat, "private")
    await send_stored(other_user, chat, "visible")
    alice = await connect(user)

    await alice.send("sync", chats={str(others_chat.pk): "0", "999999": "0", "abc": "0"})
    await alice.send("sync", chats={str(chat.pk): "0"})

    frames = [await alice.receive() for _ in range(6)]
    assert [(f["type"], f["data"].get("code"), f["data"].get("ref")) for f in frames[:3]] == [
        ("error", "not_member", "sync")
    ] * 3
    assert frames[3] == {"type": "sync", "data": {"chats": {}}}
    assert frames[4]["data"]["text"] == "visible"
    assert frames[5] == {
        "type": "sync",
        "data": {"chats": {str(chat.pk): {"lastSeq": "1", "rev": "1", "hasMore": False}}},
    }


async def test_sync_mixing_hidden_and_visible_chats_answers_the_visible_ones(
    user, other_user, third_user, chat, connect
):
    others_chat, _ = await db_call(services.create_chat)(
        creator=other_user, member_ids=[third_user.pk]
    )
    await send_stored(other_user, chat, "visible")
    alice = await connect(user)

    await alice.send("sync", chats={str(others_chat.pk): "0", str(chat.pk): "0"})

    frames = [await alice.receive() for _ in range(3)]
    assert [frame["type"] for frame in frames] == ["error", "message", "sync"]
    assert frames[2]["data"]["chats"] == {
        str(chat.pk): {"lastSeq": "1", "rev": "1", "hasMore": False}
    }


async def test_sync_accepts_numbers_for_seq(user, other_user, chat, connect):
    await send_stored(other_user, chat, "one")
    alice = await connect(user)

    await alice.send("sync", chats={str(chat.pk): 0})

    assert (await alice.receive())["type"] == "message"
    assert (await alice.receive())["data"]["chats"][str(chat.pk)]["lastSeq"] == "1"


async def test_sync_of_no_chats_answers_an_empty_summary(user, connect):
    alice = await connect(user)

    await alice.send("sync", chats={})

    assert await alice.receive() == {"type": "sync", "data": {"chats": {}}}


async def test_sync_with_bad_shape_is_bad_request(user, chat, connect):
    alice = await connect(user)
    seqs = ["x", "-1", -1, None, True, 1.5, "1e3", "", {"seq": 1}]
    cases = [{}, {"chats": None}, {"chats": []}, {"chats": "1:0"}] + [
        {"chats": {str(chat.pk): seq}} for seq in seqs
    ]

    await expect_errors(
        alice, cases, lambda data: alice.send("sync", **data), "bad_request", "sync"
    )

    assert await alice.nothing()


# ---------------------------------------------------------------- ping, disconnect


async def test_ping_is_answered_pong(user, connect):
    alice = await connect(user)

    await alice.send("ping")
    await alice.send_raw('{"type": "ping"}')

    frame = await alice.receive()
    assert frame["type"] == "pong"
    assert ISO_MS.match(frame["data"]["serverTime"])
    assert (await alice.receive())["type"] == "pong"


async def test_disconnect_frame_closes_the_socket_with_1000(user, connect):
    alice = await connect(user)

    await alice.send("disconnect")

    assert await alice.closed_with() == 1000


async def test_a_new_chat_tells_each_member_which_of_the_others_are_online(
    user, other_user, third_user, connect
):
    alice = await connect(user)
    carol = await connect(third_user)
    await connect(other_user)  # online, but shares no chat with the others yet

    chat, _ = await db_call(services.create_chat)(
        creator=user, member_ids=[other_user.pk, third_user.pk], title="New"
    )

    for client, others in ((alice, {other_user, third_user}), (carol, {user, other_user})):
        assert (await client.receive_type("chat"))["data"] == {
            "chatId": str(chat.pk),
            "event": "added",
        }
        told = set()
        while len(told) < len(others):
            frame = await client.receive_type("connect")
            told.add(frame["data"]["userId"])
        assert told == {str(u.pk) for u in others}
