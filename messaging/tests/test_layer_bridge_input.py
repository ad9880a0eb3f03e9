"""What another process sends through Redis reaches the local members; what cannot be read is
skipped, not raised (raised, it would cost the subscriber its connection and what is in flight
behind it). Calls the layer's reader with the bytes a subscriber hands it."""

import orjson
import pytest

from messaging.realtime.layer import ChatChannelLayer

pytestmark = pytest.mark.engine_independent  # the layer alone, no database or Redis


def envelope(group: str, n: int, origin: str = "elsewhere") -> dict:
    return {"o": origin, "g": group, "m": {"type": "chat.test", "n": n}}


def joined(*envelopes: dict) -> bytes:
    return orjson.dumps({"o": "elsewhere", "b": list(envelopes)})


async def test_a_joined_run_reaches_the_members_in_order_and_unreadable_input_is_skipped():
    layer = ChatChannelLayer()
    got: list[int] = []
    channel = await layer.new_channel()
    layer.attach(channel, lambda message: got.append(message["n"]))
    await layer.group_add("chat.1", channel)
    own = layer.process_id

    for data in (
        b"not json",
        b"42",
        b"[1, 2]",
        orjson.dumps({"o": "elsewhere", "b": 5}),
        orjson.dumps(envelope("chat.1", 1)),
        joined(
            envelope("chat.1", 2),
            {"o": "elsewhere", "g": "chat.1"},  # no event: skipped, the rest still delivered
            7,  # not an envelope
            envelope("chat.1", 99, origin=own),  # this process's own: its members have it
            envelope("chat.2", 98),  # a chat with no member here
            envelope("chat.1", 3),
        ),
        orjson.dumps(envelope("chat.1", 4)),
    ):
        layer._receive_remote(data)

    assert got == [1, 2, 3, 4]
