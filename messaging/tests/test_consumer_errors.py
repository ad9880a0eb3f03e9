"""Frames the server refuses: malformed input, unknown types, oversized frames, the rate limit; none of them crash the socket."""

import json

from conftest import db_call, expect_error, expect_errors
from messaging.models import Message


async def assert_still_answers(client):
    await client.send("ping")

    assert (await client.receive())["type"] == "pong"


# ---------------------------------------------------------------- malformed frames


async def test_frame_that_is_not_a_json_object_is_bad_request_with_null_ref(user, connect):
    alice = await connect(user)
    texts = ["hello there", '[{"type": "ping"}]', "[]", '"ping"', "42", "null", "true"]

    await expect_errors(alice, texts, alice.send_raw, "bad_request", None)

    await assert_still_answers(alice)


async def test_missing_or_mistyped_type_is_bad_request(user, connect):
    alice = await connect(user)
    frames = [{"data": {}}, {"type": None, "data": {}}, {"type": 7}, {"type": ["ping"]}]

    await expect_errors(
        alice, frames, lambda frame: alice.send_raw(json.dumps(frame)), "bad_request", None
    )

    await assert_still_answers(alice)


async def test_unknown_type_is_unknown_type_with_the_type_as_ref(user, connect):
    alice = await connect(user)

    for frame_type in ["dance", "Message", "PING", "pong", "connect", "error", "update", ""]:
        await alice.send(frame_type, clientMessageId="c-1")

        await expect_error(alice, "unknown_type", frame_type)
    await assert_still_answers(alice)


async def test_missing_data_is_bad_request(user, connect):
    alice = await connect(user)

    types = ["message", "edit", "delete", "react", "delivered", "typing", "read", "sync", "auth"]
    for frame_type in types:
        await alice.send_raw(json.dumps({"type": frame_type}))

        await expect_error(alice, "bad_request", frame_type)
    await assert_still_answers(alice)


async def test_data_that_is_not_an_object_is_bad_request(user, connect):
    alice = await connect(user)
    payloads = [[], "text", 5, True, None]

    await expect_errors(
        alice,
        payloads,
        lambda data: alice.send_raw(json.dumps({"type": "message", "data": data})),
        "bad_request",
        "message",
    )

    await assert_still_answers(alice)


async def test_unknown_fields_are_ignored(user, chat, connect):
    alice = await connect(user)

    await alice.send_raw(
        json.dumps(
            {
                "type": "message",
                "data": {"chatId": str(chat.pk), "text": "hi", "colour": "red"},
                "extra": [1, 2],
            }
        )
    )

    assert (await alice.receive_type("message"))["data"]["text"] == "hi"


async def test_client_message_id_on_other_frames_is_not_the_ref(user, connect):
    alice = await connect(user)

    await alice.send("typing", chatId="999999", clientMessageId="not-a-message")
    await alice.send("typing", chatId=[], clientMessageId="not-a-message")
    await alice.send("read", chatId="1", messageId=True, clientMessageId="not-a-message")

    await expect_error(alice, "not_member", "typing")
    await expect_error(alice, "bad_request", "typing")
    await expect_error(alice, "bad_request", "read")


async def test_binary_frame_is_bad_request_with_null_ref(user, connect):
    alice = await connect(user)

    await alice.communicator.send_to(bytes_data=b'{"type": "ping", "data": {}}')

    await expect_error(alice, "bad_request", None)
    await assert_still_answers(alice)


async def test_frame_over_64_kib_closes_the_socket_with_1009(user, chat, connect):
    ascii_text = await connect(user)
    multibyte_text = await connect(user)
    binary = await connect(user)

    await ascii_text.send("message", chatId=str(chat.pk), text="x" * (64 * 1024))
    await multibyte_text.send_raw(
        json.dumps({"type": "ping", "data": {"pad": "é" * (33 * 1024)}}, ensure_ascii=False)
    )
    await binary.communicator.send_to(bytes_data=b"x" * (64 * 1024 + 1))

    assert await ascii_text.closed_with() == 1009
    assert await multibyte_text.closed_with() == 1009
    assert await binary.closed_with() == 1009
    assert await db_call(Message.objects.count)() == 0


async def test_frame_just_under_64_kib_is_parsed(user, connect):
    alice = await connect(user)
    envelope = json.dumps({"type": "ping", "data": {"pad": ""}})

    await alice.send_raw(
        json.dumps({"type": "ping", "data": {"pad": "x" * (64 * 1024 - len(envelope))}})
    )

    assert (await alice.receive())["type"] == "pong"


# ---------------------------------------------------------------- no input crashes the consumer


BAD_FRAMES = [
    "",
    " ",
    "{",
    '{"type": "message", "data": {"chatId": "1", "text": "a"}',
    "\x00",
    "\ud800",
    '"\\ud800"',
    '{"type": "message", "data": {"chatId": "1", "text": "\\ud800"}}',
    "[]",
    "{}",
    '{"type": "\\u0000"}',
    '{"type": "ping", "data": []}',
    '{"type": "message", "data": null}',
    '{"type": "message", "data": {"chatId": 1e400, "text": "a"}}',
    '{"type": "message", "data": {"chatId": "99999999999999999999999", "text": "a"}}',
    '{"type": "message", "data": {"chatId": -1, "text": "a"}}',
    '{"type": "message", "data": {"chatId": 0, "text": "a"}}',
    '{"type": "message", "data": {"chatId": 99999999999999999999999, "text": "a"}}',
    '{"type": "message", "data": {"chatId": "١٢", "text": "a"}}',
    '{"type": "message", "data": {"chatId": {"$gt": 0}, "text": "a"}}',
    '{"type": "message", "data": {"chatId": "1", "text": "a", "senderId": {"a": 1}}}',
    '{"type": "message", "data": {"chatId": "1", "text": "a", "senderId": true}}',
    '{"type": "typing", "data": {"chatId": "1", "isTyping": null}}',
    '{"type": "typing", "data": {"chatId": [], "senderId": 1.5}}',
    '{"type": "read", "data": {"chatId": "1", "messageId": true}}',
    '{"type": "read", "data": {"chatId": "1", "messageId": -5}}',
    '{"type": "read", "data": {"chatId": "1", "messageId": "99999999999999999999999"}}',
    '{"type": "read", "data": {"chatId": "1", "userId": []}}',
    '{"type": "sync", "data": {"chats": {"": "0"}}}',
    '{"type": "sync", "data": {"chats": {"1": "99999999999999999999999"}}}',
    '{"type": "sync", "data": {"chats": {"1": 1e400}}}',
    '{"type": "sync", "data": {"chats": {"99999999999999999999999": "0"}}}',
    '{"type": "auth", "data": {"token": ""}}',
    '{"type": "auth", "data": {"token": "a.b.c"}}',
    '{"type": "auth", "data": {"token": "' + "x" * 5000 + '"}}',
    '{"type": "auth", "data": {"token": ["x"]}}',
    '{"type": "' + "t" * 1000 + '"}',
    "[" * 5000 + "]" * 5000,
    '{"a":' * 5000 + "1" + "}" * 5000,
]


async def test_no_input_crashes_the_consumer(user, chat, connect):
    alice = await connect(user)
    refusals = {"bad_request", "unknown_type", "not_member", "not_found", "unauthorized"}

    for text in BAD_FRAMES:
        # Straight to the application: the communicator's send_to refuses an empty text.
        await alice.communicator.send_input({"type": "websocket.receive", "text": text})
        await alice.send("ping")

        frame = await alice.receive()
        assert frame["type"] == "error" and frame["data"]["code"] in refusals, (text, frame)
        assert (await alice.receive_type("pong"))["type"] == "pong", text


async def test_every_error_code_leaves_the_socket_open(user, other_user, chat, connect, settings):
    settings.RATE_LIMIT_BURST = 1
    settings.RATE_LIMIT_PER_SECOND = 0.5
    alice = await connect(user)
    frames = [
        ("message", {"chatId": str(chat.pk), "text": ""}, "bad_request"),
        ("shout", {}, "unknown_type"),
        ("read", {"chatId": str(chat.pk), "messageId": "999999"}, "not_found"),
        ("typing", {"chatId": "999999"}, "not_member"),
        ("typing", {"chatId": str(chat.pk), "senderId": str(other_user.pk)}, "forbidden"),
        ("message", {"chatId": str(chat.pk), "text": "x" * 4001}, "too_large"),
        ("auth", {"token": "garbage"}, "unauthorized"),
        ("message", {"chatId": str(chat.pk), "text": "one"}, None),
        ("message", {"chatId": str(chat.pk), "text": "two"}, "rate_limited"),
    ]

    for frame_type, data, code in frames:
        await alice.send(frame_type, **data)
        frame = await alice.receive()
        if code is None:
            assert frame["type"] == "message"
        else:
            assert (frame["type"], frame["data"]["code"]) == ("error", code)

    await assert_still_answers(alice)


# ---------------------------------------------------------------- rate limit


async def test_message_over_the_burst_is_rate_limited_and_socket_stays_open(
    user, other_user, chat, connect, settings
):
    settings.RATE_LIMIT_BURST = 3
    settings.RATE_LIMIT_PER_SECOND = 1
    alice = await connect(user)
    for n in range(3):
        await alice.send("message", chatId=str(chat.pk), text=f"m{n}")
        await alice.receive_type("message")

    await alice.send("message", chatId=str(chat.pk), text="one too many", clientMessageId="r4")

    error = await expect_error(alice, "rate_limited", "r4")
    assert isinstance(error["data"]["retryAfterMs"], int)
    assert 0 < error["data"]["retryAfterMs"] <= 1000
    assert await db_call(Message.objects.count)() == 3
    await assert_still_answers(alice)


async def test_rate_limit_is_shared_by_all_connections_of_a_user(user, chat, connect, settings):
    settings.RATE_LIMIT_BURST = 2
    settings.RATE_LIMIT_PER_SECOND = 1
    alice = await connect(user)
    alice_phone = await connect(user)
    await alice.send("message", chatId=str(chat.pk), text="a")
    await alice.receive_type("message")
    await alice_phone.send("message", chatId=str(chat.pk), text="b")
    await alice_phone.receive_type("message")

    await alice_phone.send("message", chatId=str(chat.pk), text="c")

    assert (await alice_phone.receive_type("error"))["data"]["code"] == "rate_limited"


async def test_rate_limited_sender_may_send_again_after_retry_after(user, chat, connect, settings):
    settings.RATE_LIMIT_BURST = 1
    settings.RATE_LIMIT_PER_SECOND = 10
    alice = await connect(user)
    await alice.send("message", chatId=str(chat.pk), text="first")
    await alice.receive_type("message")
    await alice.send("message", chatId=str(chat.pk), text="too soon")
    retry_after = (await expect_error(alice, "rate_limited", "message"))["data"]["retryAfterMs"]

    await alice.nothing(timeout=retry_after / 1000 + 0.05)
    await alice.send("message", chatId=str(chat.pk), text="later")

    assert (await alice.receive())["data"]["text"] == "later"


async def test_persistent_flooding_closes_the_socket_with_4008(user, chat, connect, settings):
    settings.RATE_LIMIT_BURST = 1
    settings.RATE_LIMIT_PER_SECOND = 0.1
    settings.RATE_LIMIT_STRIKES = 3
    alice = await connect(user)
    await alice.send("message", chatId=str(chat.pk), text="ok")
    await alice.receive_type("message")

    for n in range(3):
        await alice.send("message", chatId=str(chat.pk), text=f"flood {n}")
        await expect_error(alice, "rate_limited", "message")
    await alice.send("message", chatId=str(chat.pk), text="flood again")

    assert (await alice.receive())["data"]["code"] == "rate_limited"
    assert await alice.closed_with() == 4008
    assert await db_call(Message.objects.count)() == 1


async def test_frames_other_than_message_are_not_rate_limited(user, chat, connect, settings):
    settings.RATE_LIMIT_BURST = 1
    settings.RATE_LIMIT_PER_SECOND = 0.1
    alice = await connect(user)

    for _ in range(5):
        await alice.send("typing", chatId=str(chat.pk))
        await alice.send("read", chatId=str(chat.pk))
        await alice.send("ping")
        assert (await alice.receive())["type"] == "pong"
    await alice.send("message", chatId=str(chat.pk), text="still allowed")

    assert (await alice.receive())["data"]["text"] == "still allowed"
