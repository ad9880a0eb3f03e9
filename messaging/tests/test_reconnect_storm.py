"""A reconnect storm: many members who missed the same messages come back at once and `sync`.

Each must get every missed message exactly once, in order, and the server must
read each chat's page once for all its members syncing together rather than
once per member (`selectors.sync_pages`). Correctness, not a timing test: the
time to catch up is measured by `make bench` (docs/benchmarks.md).
"""

import asyncio
import json
import urllib.request

import pytest
from websockets.asyncio.client import connect as ws_connect

from conftest import db_call, make_user, token_for
from messaging import protocol, selectors, services
from messaging.realtime import loaders
from messaging.realtime.wire import text_frame

CHATS = 10
MEMBERS = 10
MISSED = 100


def make_chats_with_missed_messages(chats=CHATS, members=MEMBERS, missed=MISSED):
    """Chats whose members are all away while `missed` messages are stored in each."""
    made = []
    for c in range(chats):
        users = [make_user(f"storm{c}_{m}") for m in range(members)]
        chat, _ = services.create_chat(
            creator=users[0], member_ids=[u.pk for u in users[1:]], title=f"storm {c}"
        )
        batch = [
            services.Outgoing(users[n % members], chat.pk, f"missed #{n}", f"storm-{n}", None)
            for n in range(missed)
        ]
        with services.publish_order:
            services.store_messages(batch)
        made.append((chat, users))
    return made


@pytest.mark.django_db
def test_members_syncing_a_chat_from_the_same_position_share_one_read(
    django_assert_max_num_queries,
):
    ((chat, users),) = make_chats_with_missed_messages(chats=1, members=8, missed=30)
    outsider = make_user("storm_outsider")
    held = protocol.SyncFrom(seq=0, rev=0)
    requests = [selectors.SyncRequest(u.pk, chat.pk, held, 500) for u in users]

    with django_assert_max_num_queries(7) as one_member:
        (alone,) = selectors.sync_pages(requests[:1])
    with django_assert_max_num_queries(len(one_member.captured_queries)):
        pages = selectors.sync_pages(
            [*requests, selectors.SyncRequest(outsider.pk, chat.pk, held, 500)]
        )

    assert [m.seq for m in alone.new] == list(range(1, 31))
    *members, refused = pages
    assert all(page is members[0] for page in members), "identical reads were repeated"
    assert [m.seq for m in members[0].new] == list(range(1, 31))
    assert members[0].replay is members[0].replay  # encoded once, for every socket
    assert isinstance(refused, selectors.NotMember)


@pytest.mark.django_db
def test_members_replaying_the_same_page_share_its_frames_framed_once():
    """The sync reader hands every socket replaying a page the same frames, already framed for
    the wire (in its thread, not the event loop's); an outsider still gets `NotMember`."""
    ((chat, users),) = make_chats_with_missed_messages(chats=1, members=4, missed=20)
    outsider = make_user("storm_outsider")
    held = protocol.SyncFrom(seq=0, rev=0)
    *replays, refused = loaders._read_replays(
        [selectors.SyncRequest(u.pk, chat.pk, held, 500) for u in [*users, outsider]]
    )

    assert all(replay is replays[0] for replay in replays), "a page was framed once per member"
    texts = replays[0].texts
    assert [json.loads(text)["data"]["message"]["seq"] for text in texts] == [
        str(seq) for seq in range(1, 21)
    ]
    assert replays[0].frames == [text_frame(text) for text in texts]
    assert isinstance(refused, selectors.NotMember)


@pytest.mark.django_db
def test_members_at_different_positions_each_get_their_own_page():
    ((chat, users),) = make_chats_with_missed_messages(chats=1, members=3, missed=10)
    requests = [
        selectors.SyncRequest(users[0].pk, chat.pk, protocol.SyncFrom(seq=0, rev=0), 500),
        selectors.SyncRequest(users[1].pk, chat.pk, protocol.SyncFrom(seq=7, rev=7), 500),
        selectors.SyncRequest(users[2].pk, chat.pk, protocol.SyncFrom(seq=7, rev=7), 500),
    ]

    first, second, third = selectors.sync_pages(requests)

    assert [m.seq for m in first.new] == list(range(1, 11))
    assert [m.seq for m in second.new] == [8, 9, 10]
    assert second is third


def metric(server, name: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def comes_back(server, user, chat, ready: asyncio.Barrier) -> list[int]:
    """Connect with the rest, `sync` from nothing at the same moment, return the seqs replayed."""
    url = f"{server.ws_url}/ws/chat/?token={token_for(user)}"
    async with ws_connect(url, max_queue=None) as socket:
        assert json.loads(await socket.recv())["type"] == "connect"
        await ready.wait()
        await socket.send(
            json.dumps(
                {"type": "sync", "data": {"chats": {str(chat.pk): {"seq": "0", "rev": "0"}}}}
            )
        )
        seqs = []
        while (frame := json.loads(await asyncio.wait_for(socket.recv(), 30)))["type"] != "sync":
            if frame["type"] == "message":
                assert frame["data"]["chatId"] == str(chat.pk), frame
                seqs.append(int(frame["data"]["message"]["seq"]))
        summary = frame["data"]["chats"][str(chat.pk)]
        assert summary["lastSeq"] == str(MISSED) and summary["hasMore"] is False, summary
        return seqs


@pytest.mark.live
async def test_a_hundred_members_coming_back_at_once_each_get_every_missed_message_once_in_order(
    start_live_server,
):
    server = start_live_server(RATE_LIMIT_ENABLED=0, LOG_LEVEL="WARNING")
    chats = await db_call(make_chats_with_missed_messages)()
    requests_before = metric(server, "biogram_sync_requests_total")
    reads_before = metric(server, "biogram_sync_pages_read_total")
    ready = asyncio.Barrier(CHATS * MEMBERS)

    replays = await asyncio.wait_for(
        asyncio.gather(
            *(comes_back(server, user, chat, ready) for chat, users in chats for user in users)
        ),
        timeout=120,
    )

    for seqs in replays:
        assert seqs == list(range(1, MISSED + 1))
    requests = metric(server, "biogram_sync_requests_total") - requests_before
    reads = metric(server, "biogram_sync_pages_read_total") - reads_before
    assert requests == CHATS * MEMBERS
    # Ten chats, their members' syncs arriving together: far fewer reads than requests.
    assert reads <= requests / 2, f"{reads:.0f} page reads for {requests:.0f} sync requests"


async def learns_who_is_online(server, user, others: set[str], ready: asyncio.Barrier) -> tuple:
    """Connect with the rest; return the first frame and the co-members this socket was told are
    online (its `connect` frame's list and each presence frame), in order, until it knows all."""
    url = f"{server.ws_url}/ws/chat/?token={token_for(user)}"
    await ready.wait()
    async with ws_connect(url, max_queue=None) as socket:
        first = json.loads(await asyncio.wait_for(socket.recv(), 30))
        told = list(first["data"].get("online", []))
        while not others <= set(told):
            frame = json.loads(await asyncio.wait_for(socket.recv(), 30))
            assert frame["type"] == "connect" and "connectionId" not in frame["data"], frame
            told.append(frame["data"]["userId"])
        await ready.wait()  # nobody leaves before everyone knows: no `disconnect` in between
        return first, told


@pytest.mark.live
async def test_co_members_connecting_together_each_get_their_connect_frame_then_every_other_online(
    start_live_server,
):
    """A burst of connections resumes together from the connection loader, the frames for one
    socket written together (`wire.corked_wakeups`): each socket still gets its own `connect`
    frame first, then learns that each co-member is online, and of nobody else."""
    server = start_live_server(RATE_LIMIT_ENABLED=0, LOG_LEVEL="WARNING")
    chats = await db_call(make_chats_with_missed_messages)(missed=0)
    ready = asyncio.Barrier(CHATS * MEMBERS)

    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                learns_who_is_online(
                    server, user, {str(u.pk) for u in users} - {str(user.pk)}, ready
                )
                for chat, users in chats
                for user in users
            )
        ),
        timeout=120,
    )

    everyone = [(chat, user, users) for chat, users in chats for user in users]
    for (chat, user, users), (first, told) in zip(everyone, results, strict=True):
        assert first["type"] == "connect" and first["data"]["userId"] == str(user.pk), first
        assert first["data"]["chats"] == [str(chat.pk)]
        assert set(told) == {str(u.pk) for u in users} - {str(user.pk)}
