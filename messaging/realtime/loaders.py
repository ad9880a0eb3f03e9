"""Batched reads of the socket path: what a new socket needs, and what `sync` replays.

A burst of connections (a deploy, a reconnect storm) loads each user's chats
and co-members in one query per batch instead of one thread hop and three
queries per socket; the `sync` frames that follow are read in batches too, where
the same page asked for by many sockets (every member of a chat missed the same
messages) is read and encoded once (`selectors.sync_pages`).
"""

from dataclasses import dataclass

from messaging import selectors, storage
from messaging.realtime.batching import BatchRunner
from messaging.realtime.wire import text_frame


@dataclass(frozen=True)
class ConnectionState:
    chat_ids: list[int]
    co_member_ids: set[int]
    positions: dict[int, tuple[int, int]]  # chat id -> its last (seq, rev), when loaded


def _load(user_ids: list[int]) -> list[ConnectionState]:
    chats, co_members, positions = storage.chats_and_co_members(set(user_ids))
    states = []
    for user_id in user_ids:
        mine = chats.get(user_id, [])
        states.append(
            ConnectionState(mine, co_members.get(user_id, set()), {c: positions[c] for c in mine})
        )
    return states


# The sockets of a burst resume together: each one's `connect` frame and the presence frames of
# the co-members connecting beside it reach it in one `write`.
_runner = BatchRunner(_load, name="connection-loader", max_batch=500, corked_wakeups=True)


async def connection_state(user_id: int) -> ConnectionState:
    """The chats the user is in and the users who share one with them."""
    return await _runner.submit(user_id)


@dataclass(frozen=True)
class Replay:
    """A sync page as sockets replay it: its frames encoded (`texts`) and framed for the wire
    (`frames`) once, in the reader's thread, however many members it goes to."""

    page: selectors.SyncPage
    texts: list[str]
    frames: list[bytes]


def _read_replays(requests: list[selectors.SyncRequest]) -> list:
    replays: dict[int, Replay] = {}  # by page: requests for the same page share its frames
    results = []
    for page in selectors.sync_pages(requests):
        if isinstance(page, selectors.SyncPage):
            replay = replays.get(id(page))
            if replay is None:
                texts = page.replay
                replay = replays[id(page)] = Replay(page, texts, [text_frame(t) for t in texts])
            page = replay
        results.append(page)
    return results


# A batch's pages are held in memory together (at most SYNC_MAX_PER_CHAT messages each).
_sync_reader = BatchRunner(_read_replays, name="sync-reader", max_batch=100)


async def read_sync_page(request: selectors.SyncRequest) -> Replay:
    """The page `request` asks for (raises `NotMember`), read with the others arriving meanwhile."""
    return await _sync_reader.submit(request)
