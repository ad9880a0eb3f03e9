"""Hostile frames, generated: every text parses to a frame or a documented refusal, and no barrage from one socket stops a chat from delivering to the others."""

import contextlib
import itertools
import json

import pytest
from django.conf import settings as django_settings
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import db_call
from messaging import protocol, ratelimit
from messaging.models import Message

# docs/protocol.md: the `error` table, and `unauthorized` of "Connecting".
DOCUMENTED_ERROR_CODES = {
    "bad_request",
    "unknown_type",
    "not_found",
    "not_member",
    "forbidden",
    "too_large",
    "rate_limited",
    "unavailable",
    "unauthorized",
}
# What parsing alone can refuse: the other codes need the database or the user.
PARSER_ERROR_CODES = {"bad_request", "unknown_type", "too_large"}
# docs/protocol.md, "What this server adds": the close codes the server sends (a slow reader's
# 4009 is never sent: its connection ends without a close frame).
DOCUMENTED_CLOSE_CODES = {1000, 1001, 1009, 1011, 4001, 4003, 4008, 4029}
SERVER_FRAME_TYPES = {
    "connect",
    "disconnect",
    "message",
    "typing",
    "read",
    "sync",
    "auth",
    "pong",
    "error",
    "delete",
    "update",
    "delivered",
    "chat",
}
ID_MAX = 2**63 - 1

# Every frame type of the protocol table, and the fields each one reads.
FIELDS = {
    "message": ("chatId", "text", "clientMessageId", "senderId", "replyTo"),
    "edit": ("chatId", "messageId", "text"),
    "delete": ("chatId", "messageId"),
    "react": ("chatId", "messageId", "emoji", "on"),
    "delivered": ("chatId", "seq"),
    "typing": ("chatId", "isTyping", "senderId"),
    "read": ("chatId", "messageId", "userId"),
    "sync": ("chats",),
    "auth": ("token",),
    "ping": (),
    "disconnect": (),
}

# ---------------------------------------------------------------- strategies


@st.composite
def weighted(draw, *choices):
    """`one_of` with weights: (weight, strategy) pairs."""
    index = draw(
        st.sampled_from([i for i, (weight, _) in enumerate(choices) for _ in range(weight)])
    )
    return draw(choices[index][1])


any_char = st.characters()
any_text = st.text(any_char, max_size=30)
# Characters a database, a terminal or a log may choke on.
odd_text = st.builds(
    lambda head, odd, tail: head + odd + tail,
    any_text,
    st.sampled_from("\x00\x1b\u0085\u2028\u202e\ufeff\uffff\U0010ffff"),
    st.text(any_char, max_size=5),
)
# Lone surrogates: a Python str can hold one (a socket cannot), and it makes the whole frame
# invalid JSON, so it stays one kind of text among others instead of a value in every field.
surrogate_text = st.builds(
    lambda head, odd, tail: head + odd + tail,
    any_text,
    st.characters(categories=["Cs"]),
    any_text,
)

ODD_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    1,
    ID_MAX,
    ID_MAX + 1,
    2**64,
    -(2**63) - 1,
    10**30,
    -(10**30),
    0.5,
    -0.0,
    1e308,
    -1e308,
    5e-324,
    "",
    " ",
    "\t\n",
    "0",
    "00",
    "-1",
    "+1",
    "01",
    "1.0",
    "1e3",
    " 1",
    "1 ",
    "0x1f",
    "١٢",
    "\uff11",  # a fullwidth 1
    "²",
    "9" * 19,
    "9" * 20,
    "NaN",
    "Infinity",
    "-Infinity",
    "null",
    "true",
    "\x00",
    "a\x00b",
    "\u202e",
    "\ufeff",
    "\U0001f600",
    "x" * 5000,
    [],
    [1],
    {},
    {"$gt": 0},
    {"": None},
]

ODD_TEXTS = [
    "",
    " ",
    "\t\r\n ",
    "\x00",
    "\ud800",
    "\udfff",
    '"\\ud800"',
    '{"type": "ping", "data": {"x": "\\udc00"}}',
    '{"type": "message", "data": {"chatId": "1", "text": "\ud800"}}',
    "NaN",
    "Infinity",
    "-Infinity",
    '{"type": "ping", "data": NaN}',
    '{"type": "message", "data": {"chatId": Infinity, "text": "a"}}',
    '{"type": "message", "data": {"chatId": 1e400, "text": "a"}}',
    '{"type": "ping"}{"type": "ping"}',
    '{"type": "ping"} x',
    '\ufeff{"type": "ping"}',
    '{"type": "ping", "type": "message"}',
    '{"type": "message", "data": {"chatId": "1", "text": "a", "text": ""}}',
    "{'type': 'ping'}",
    '{"type": "ping",}',
    "[" * 2000,
    "{" * 2000,
    '{"type": "sync", "data": {"chats": {'
    + ", ".join(f'"{n}": "0"' for n in range(1, 1002))
    + "}}}",
]


def json_values(leaves: int = 10):
    """JSON values of any shape: huge integers, extreme floats, odd strings, nesting."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | any_text
        | odd_text
        | st.sampled_from(ODD_VALUES)
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
        max_leaves=leaves,
    )


def plausible_values(field: str, ids: list[str]):
    """Values of the right type for `field`, some of them valid."""
    id_values = weighted(
        (3, st.sampled_from(ids)), (1, st.sampled_from(ids).map(int)), (1, st.integers())
    )
    if field in ("chatId", "senderId", "userId", "messageId", "replyTo"):
        return id_values
    if field == "emoji":
        return weighted(
            (3, st.sampled_from(["👍", "❤️", "👩\u200d💻", "🏳️\u200d🌈", "+1", "x" * 64])),
            (1, st.text(any_char, min_size=1, max_size=20)),
            (1, st.sampled_from(["", " ", "\u200b", "\u00ad", "a\nb", "é" * 33, "\U000e0067"])),
        )
    if field == "on":
        return st.booleans()
    if field == "seq":
        return st.sampled_from(["0", "1", "5", 3, "9" * 19])
    if field == "text":
        return weighted(
            (3, st.text(any_char, min_size=1, max_size=30)),
            (1, odd_text),
            (1, st.sampled_from(["hi", " ", "\u3000", "x" * 4000, "x" * 4001, "é" * 4000])),
        )
    if field == "clientMessageId":
        return weighted((3, st.text(any_char, min_size=1, max_size=70)), (1, odd_text))
    if field == "isTyping":
        return st.booleans()
    if field == "token":
        return any_text | st.sampled_from(["a.b.c", "eyJhbGciOiJub25lIn0.e30.", "x" * 5000])
    if field == "chats":
        return st.dictionaries(
            weighted((3, st.sampled_from([*ids, "0", "00", "9" * 20])), (1, any_text)),
            weighted(
                (3, st.sampled_from(["0", "1", 0, 3])),
                (
                    2,
                    st.fixed_dictionaries({"seq": st.sampled_from(["0", "1"])}).map(
                        lambda held: {**held, "rev": "0"}
                    ),
                ),
                (1, st.fixed_dictionaries({"seq": st.sampled_from(ODD_VALUES)})),
                (1, st.sampled_from(ODD_VALUES)),
            ),
            max_size=5,
        )
    raise AssertionError(field)


@st.composite
def frame_objects(draw, ids: list[str]):
    """A frame of the protocol's shape, with a wrong type or value anywhere in it."""
    frame_type = draw(
        weighted(
            (12, st.sampled_from(sorted(FIELDS))),
            (1, st.sampled_from(["", "Message", "PING", "pong", "error", "connect", "update"])),
            (1, any_text),
            (1, json_values(3)),
        )
    )
    data = draw(st.dictionaries(any_text, json_values(3), max_size=2))  # unknown fields
    fields = FIELDS.get(frame_type, ()) if isinstance(frame_type, str) else ()
    for field in (*fields, "clientMessageId"):
        # Mostly present, so that parsing gets past the first field. (Hypothesis favours
        # the first element of `sampled_from`, and 0 of `integers`: the common case goes first.)
        if draw(st.sampled_from([True] * 5 + [False])):
            data[field] = draw(
                weighted(
                    (6, plausible_values(field, ids)),
                    (1, st.sampled_from(ODD_VALUES)),
                    (1, json_values(5)),
                )
            )
    frame = draw(st.dictionaries(any_text, json_values(3), max_size=2))  # unknown fields
    if draw(st.sampled_from([True] * 19 + [False])):
        frame["type"] = frame_type
    shape = draw(st.sampled_from(["object"] * 8 + ["missing", "other"]))
    if shape == "object":
        frame["data"] = data
    elif shape == "other":
        frame["data"] = draw(json_values(3))
    return frame


@st.composite
def deeply_nested(draw, ids: list[str]):
    """Deep nesting, up to past the JSON decoder's depth limit (1024), alone or in a field."""
    depth = draw(st.integers(100, 3000))
    nested = draw(
        st.sampled_from(["[" * depth + "]" * depth, '{"a": ' * depth + "1" + "}" * depth])
    )
    field = draw(st.sampled_from(["chatId", "text", "chats", "token"]))
    frame_type = {"chats": "sync", "token": "auth"}.get(field, "message")
    return draw(
        st.sampled_from(
            [
                nested,
                f'{{"type": "{frame_type}", "data": {{"chatId": "{ids[0]}", "{field}": {nested}}}}}',
            ]
        )
    )


@st.composite
def mutated(draw, ids: list[str]):
    """A frame's text cut short or with a character slipped in."""
    text = json.dumps(draw(frame_objects(ids)), ensure_ascii=draw(st.booleans()))
    at = draw(st.integers(0, len(text)))
    if draw(st.booleans()):
        return text[:at]
    return text[:at] + draw(any_char) + text[at:]


def frame_texts(ids: list[str] = ("1", "2")):
    """Text frames: JSON in the protocol's shape, JSON of any shape, and text that is no JSON."""
    ids = list(ids)
    return weighted(
        (10, st.builds(json.dumps, frame_objects(ids), ensure_ascii=st.booleans())),
        (1, st.builds(json.dumps, json_values(), ensure_ascii=st.booleans())),
        (1, mutated(ids)),
        (1, deeply_nested(ids)),
        (1, any_text | odd_text | surrogate_text),
        (1, st.sampled_from(ODD_TEXTS)),
    )


def oversized_frames() -> list[tuple[str, str | bytes]]:
    """Frames past the hard limit: ASCII, multi-byte (under it in characters), binary."""
    limit = django_settings.WS_MAX_FRAME_BYTES
    return [
        ("text", json.dumps({"type": "message", "data": {"chatId": "1", "text": "x" * limit}})),
        (
            "text",
            json.dumps(
                {"type": "ping", "data": {"pad": "é" * (limit // 2 + 1)}}, ensure_ascii=False
            ),
        ),
        ("bytes", b"x" * (limit + 1)),
    ]


@st.composite
def valid_frames(draw, ids: list[str]):
    """Frames a well-behaved client sends, with odd but valid text: the barrage's cover."""
    chat_id = draw(st.sampled_from(ids))
    frame_type = draw(st.sampled_from(["message", "message", "typing", "read", "sync", "ping"]))
    data = {
        "message": lambda: {
            "chatId": chat_id,
            "text": draw(st.text(any_char, min_size=1, max_size=30) | odd_text),
            "clientMessageId": draw(st.none() | st.text(any_char, min_size=1, max_size=64)),
        },
        "typing": lambda: {"chatId": chat_id, "isTyping": draw(st.booleans())},
        "read": lambda: {"chatId": chat_id},
        "sync": lambda: {"chats": {chat_id: draw(st.sampled_from(["0", "1", "2"]))}},
        "ping": lambda: {},
    }[frame_type]()
    return json.dumps({"type": frame_type, "data": data}, ensure_ascii=draw(st.booleans()))


def wire_frames(ids: list[str]):
    """What a hostile client can put on its socket: text, binary, blank, oversized."""
    return weighted(
        (12, frame_texts(ids).map(lambda text: ("text", text))),
        (4, valid_frames(ids).map(lambda text: ("text", text))),
        (1, st.binary(max_size=64).map(lambda data: ("bytes", data))),
        (1, st.sampled_from(["", " ", "\n", "\t \r\n"]).map(lambda text: ("text", text))),
        (1, st.sampled_from(oversized_frames())),
    )


def is_oversized(kind: str, payload: str | bytes) -> bool:
    size = len(payload) if kind == "bytes" else len(payload.encode("utf-8", "surrogatepass"))
    return size > django_settings.WS_MAX_FRAME_BYTES


# ---------------------------------------------------------------- the parser


def assert_well_formed(frame):
    """A parsed frame holds only values the consumer can use as they are."""

    def valid_id(value, *, unknown_ok=True):
        if value is None:
            return unknown_ok
        return type(value) is int and 0 < value <= ID_MAX

    assert isinstance(frame, protocol.ClientFrame), frame
    if isinstance(frame, protocol.SendMessage):
        assert valid_id(frame.chat_id)
        assert isinstance(frame.text, str) and frame.text.strip()
        assert len(frame.text) <= django_settings.MESSAGE_MAX_LENGTH
        assert "\x00" not in frame.text
        cid = frame.client_message_id
        assert cid is None or (
            isinstance(cid, str) and 0 < len(cid) <= protocol.CLIENT_MESSAGE_ID_MAX
        )
        assert cid is None or "\x00" not in cid
        assert frame.reply_to is None or (type(frame.reply_to) is int and frame.reply_to >= 0)
    if isinstance(frame, protocol.Edit | protocol.Delete | protocol.React):
        assert valid_id(frame.chat_id)
        assert type(frame.message_id) is int and 0 <= frame.message_id <= ID_MAX
    if isinstance(frame, protocol.Edit):
        assert isinstance(frame.text, str) and frame.text.strip() and "\x00" not in frame.text
    if isinstance(frame, protocol.React):
        assert type(frame.on) is bool
        assert 0 < len(frame.emoji.encode("utf-8")) <= protocol.EMOJI_MAX_BYTES
    if isinstance(frame, protocol.Delivered):
        assert valid_id(frame.chat_id)
        assert type(frame.seq) is int and 0 <= frame.seq <= ID_MAX
    if isinstance(frame, protocol.Typing):
        assert valid_id(frame.chat_id)
        assert type(frame.is_typing) is bool
    if isinstance(frame, protocol.Read):
        assert valid_id(frame.chat_id)
        assert frame.message_id is None or (type(frame.message_id) is int and frame.message_id >= 0)
    if isinstance(frame, protocol.Sync):
        assert len(frame.chats) <= protocol.SYNC_MAX_CHATS
        for chat_id, held in frame.chats.items():
            assert valid_id(chat_id, unknown_ok=False) or (
                isinstance(chat_id, str) and 0 < len(chat_id) <= 200
            )
            assert isinstance(held, protocol.SyncFrom)
            assert type(held.seq) is int and 0 <= held.seq <= ID_MAX
            assert held.rev is None or (type(held.rev) is int and 0 <= held.rev <= ID_MAX)
    if isinstance(frame, protocol.Auth):
        assert isinstance(frame.token, str) and frame.token
    for name in ("sender_id", "user_id"):
        value = getattr(frame, name, None)
        assert value is None or isinstance(value, str)


def assert_documented_refusal(error: protocol.FrameError):
    assert error.code in PARSER_ERROR_CODES, error.code
    assert isinstance(error.message, str) and error.message
    assert error.ref is None or (isinstance(error.ref, str) and len(error.ref) <= 64)
    # The answer itself can be sent.
    protocol.encode(
        protocol.error_frame(code=error.code, message=error.message, ref=error.ref, **error.extra)
    )


@pytest.mark.engine_independent  # parsing alone: `make test` runs it once
@settings(max_examples=500, deadline=None)
@given(text=frame_texts())
def test_parse_frame_returns_a_well_formed_frame_or_a_documented_refusal(text):
    try:
        frame = protocol.parse_frame(text)
    except protocol.FrameError as error:
        assert_documented_refusal(error)
    else:
        assert_well_formed(frame)


@pytest.mark.parametrize(
    "text",
    [
        "\ud800",
        "\udfff\ud800",
        '"\\ud800"',
        '{"type": "ping", "data": {"note": "\ud800"}}',
        '{"type": "message", "data": {"chatId": "1", "text": "\\ud800"}}',
        '{"type": "message", "data": {"chatId": "1", "text": "a", "clientMessageId": "\ud83d"}}',
    ],
)
def test_lone_surrogates_anywhere_are_bad_request_not_a_crash(text):
    with pytest.raises(protocol.FrameError) as refused:
        protocol.parse_frame(text)

    assert refused.value.code == "bad_request"
    assert_documented_refusal(refused.value)


@pytest.mark.parametrize(
    "data",
    [
        {"chatId": "1", "text": "a\x00b"},
        {"chatId": "1", "text": "\x00"},
        {"chatId": "1", "text": "fine", "clientMessageId": "c\x00"},
    ],
)
def test_nul_in_text_or_client_message_id_is_bad_request(data):
    # PostgreSQL cannot store NUL; unrefused it failed the writer's whole batch, every
    # sender in it answered `unavailable`.
    with pytest.raises(protocol.FrameError) as refused:
        protocol.parse_frame(json.dumps({"type": "message", "data": data}))

    assert refused.value.code == "bad_request"


# ---------------------------------------------------------------- a live consumer


_markers = itertools.count(1)


class Room:
    """A group chat: the attacker's socket beside two members who keep talking."""

    def __init__(self, *, chat, attacker, bob, carol, carol_id, connect):
        self.chat = chat
        self.carol_id = carol_id
        self.attacker_user = attacker
        self.attacker = None
        self.bob = bob
        self.carol = carol
        self.connect = connect

    async def attacker_socket(self):
        if self.attacker is None:
            self.attacker = await self.connect(self.attacker_user)
        return self.attacker

    async def drop_attacker(self):
        """The server closed the attacker's socket: the client side goes too, as on a real server."""
        attacker, self.attacker = self.attacker, None
        with contextlib.suppress(Exception):  # its application may have ended already
            await attacker.communicator.disconnect()


@pytest.fixture
async def room(user, other_user, third_user, group_chat, connect, settings):
    # Low limits, so that a generated burst of messages reaches `rate_limited` and 4008 too.
    settings.RATE_LIMIT_BURST = 2
    settings.RATE_LIMIT_PER_SECOND = 1
    settings.RATE_LIMIT_STRIKES = 1
    bob = await connect(other_user)
    carol = await connect(third_user)
    return Room(
        chat=group_chat,
        attacker=user,
        bob=bob,
        carol=carol,
        carol_id=third_user.pk,
        connect=connect,
    )


async def answers(client, pongs: int) -> tuple[list[dict], int | None]:
    """The frames sent to `client` until its `pongs`-th pong, or until the server closes it."""
    frames = []
    while True:
        output = await client.communicator.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return frames, output.get("code", 1000)
        assert output["type"] == "websocket.send" and output.get("text") is not None, output
        frame = json.loads(output["text"])
        frames.append(frame)
        if frame["type"] == "pong":
            pongs -= 1
            if pongs == 0:
                return frames, None


def assert_documented_frames(frames: list[dict]):
    for frame in frames:
        assert frame["type"] in SERVER_FRAME_TYPES, frame
        if frame["type"] == "error":
            # `unavailable` means an internal failure: the database is up here.
            assert frame["data"]["code"] in DOCUMENTED_ERROR_CODES - {"unavailable"}, frame
            assert frame["data"]["ref"] is None or isinstance(frame["data"]["ref"], str), frame


def parsed(kind: str, payload: str | bytes):
    """The frame the consumer reads from this, None for one it refuses or never parses."""
    if kind != "text" or is_oversized(kind, payload):
        return None
    try:
        return protocol.parse_frame(payload)
    except protocol.FrameError:
        return None


def expected_close(frames: list[tuple[str, str | bytes]]) -> int | None:
    """The close code these frames must end in (rate limiting aside), None for none."""
    for kind, payload in frames:
        if is_oversized(kind, payload):
            return 1009
        if isinstance(parsed(kind, payload), protocol.Disconnect):
            return 1000
    return None


def pings_in(frames: list[tuple[str, str | bytes]]) -> int:
    return sum(isinstance(parsed(kind, payload), protocol.Ping) for kind, payload in frames)


async def send_frames(client, frames):
    for kind, payload in frames:
        # Straight to the application: the communicator refuses an empty text.
        await client.communicator.send_input({"type": "websocket.receive", kind: payload})


async def assert_room_still_delivers(room: Room):
    """A message from a third party reaches the member beside the attacker."""
    marker = f"still-here-{next(_markers)}"

    await room.carol.send("message", chatId=str(room.chat.pk), text=marker, clientMessageId=marker)

    seen = []
    while True:
        frame = await room.bob.receive(timeout=5)
        seen.append(frame)
        if frame["type"] == "message" and frame["data"]["message"]["clientMessageId"] == marker:
            break
    assert_documented_frames(seen)
    assert frame["data"]["senderId"] == str(room.carol_id)


async def probe(room: Room, frames: list[tuple[str, str | bytes]]):
    """Send `frames` and a ping from the attacker; check its answers and the room's delivery."""
    ratelimit.reset()  # the members' buckets are full again; the attacker's too
    attacker = await room.attacker_socket()

    await send_frames(attacker, frames)
    await attacker.send("ping")

    replies, code = await answers(attacker, pongs=1 + pings_in(frames))
    assert_documented_frames(replies)
    if code is not None:
        assert code in DOCUMENTED_CLOSE_CODES, (frames, code)
        flooded = any(r["type"] == "error" and r["data"]["code"] == "rate_limited" for r in replies)
        assert code == expected_close(frames) or (code == 4008 and flooded), (frames, code)
        await room.drop_attacker()
    else:
        assert expected_close(frames) is None, (frames, replies)
    await assert_room_still_delivers(room)
    return replies, code


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_hostile_frames_get_documented_answers_and_the_chat_keeps_delivering(data, room):
    ids = [str(room.chat.pk), "999999"]

    frames = data.draw(st.lists(wire_frames(ids), min_size=1, max_size=6), label="frames")

    replies, code = await probe(room, frames)

    # What the barrage met, for `pytest --hypothesis-show-statistics`.
    event(f"closed with {code}" if code else "left open")
    for reply in replies:
        event(f"answered {reply['data']['code'] if reply['type'] == 'error' else reply['type']}")


@pytest.mark.parametrize(
    "payload", [b"", b"\x00\xff", b'{"type": "ping", "data": {}}', bytes(range(256))]
)
async def test_binary_frame_is_bad_request_and_the_chat_keeps_delivering(room, payload):
    replies, code = await probe(room, [("bytes", payload)])

    assert code is None
    assert replies[0]["data"] | {"message": None} == {
        "code": "bad_request",
        "ref": None,
        "message": None,
    }


@pytest.mark.parametrize("text", ["", " ", "\n", "\t \r\n ", " " * 60_000])
async def test_whitespace_only_frame_is_bad_request_and_the_chat_keeps_delivering(room, text):
    replies, code = await probe(room, [("text", text)])

    assert code is None
    assert [(r["type"], r["data"].get("code"), r["data"].get("ref")) for r in replies] == [
        ("error", "bad_request", None),
        ("pong", None, None),
    ]


@pytest.mark.parametrize("index", range(3), ids=["ascii-text", "multibyte-text", "binary"])
async def test_oversized_frame_closes_only_its_socket_with_1009(room, index):
    replies, code = await probe(room, [oversized_frames()[index]])

    assert (replies, code) == ([], 1009)
    assert await db_call(Message.objects.filter(sender=room.attacker_user).count)() == 0


async def test_nul_in_message_text_is_bad_request_and_nothing_is_stored(room):
    frame = {"type": "message", "data": {"chatId": str(room.chat.pk), "text": "a\x00b"}}

    replies, code = await probe(room, [("text", json.dumps(frame))])

    assert code is None
    assert replies[0]["data"]["code"] == "bad_request"
    assert await db_call(Message.objects.filter(sender=room.attacker_user).count)() == 0


async def test_flooding_attacker_is_closed_with_4008_and_the_chat_keeps_delivering(room):
    flood = [
        (
            "text",
            json.dumps({"type": "message", "data": {"chatId": str(room.chat.pk), "text": f"{n}"}}),
        )
        for n in range(6)
    ]

    replies, code = await probe(room, flood)

    assert code == 4008
    assert [r["data"]["code"] for r in replies if r["type"] == "error"][-1] == "rate_limited"
