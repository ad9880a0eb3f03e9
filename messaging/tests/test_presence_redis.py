"""Presence shared through Redis: other processes' users count, a dead process's users go offline.

Runs in `make test`'s PostgreSQL + Redis pass (skipped without REDIS_URL). Another
process is played by writing its records into Redis the way it would.
"""

import asyncio
import time

import pytest
import redis.asyncio as redis
from django.conf import settings

from messaging.realtime import presence

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")


async def other_process_holds(user_id: str, pid: str, last_beat: float):
    """Write another process's records, its beat last: this process's own heartbeat may sweep at
    any moment, and a dead process swept before its users were written would vanish unannounced."""
    shared = presence._redis
    client = redis.Redis.from_url(settings.REDIS_URL)
    await client.hset(shared._user(user_id), pid, 1)
    await client.sadd(shared._process(pid), user_id)
    await client.zadd(shared._alive, {pid: last_beat})
    for key in (shared._alive, shared._user(user_id), shared._process(pid)):
        await client.expire(key, presence.KEY_TTL)  # nothing of this test outlives it for long
    await client.aclose()


async def test_a_user_connected_only_through_another_live_process_is_online():
    await other_process_holds("900001", "live-peer", time.time())
    presence._redis.live_cache = None

    assert await presence.online_among([900001, 900002]) == ["900001"]
    # Their first socket here does not announce them again; closing it does not take them offline.
    assert await presence.connected(900001) is False
    assert await presence.disconnected(900001) is False


async def test_the_users_of_a_process_that_stopped_beating_are_announced_offline(monkeypatch):
    shared = presence._redis
    announced = []
    swept = asyncio.Event()

    async def record(user_ids):
        announced.extend(user_ids)
        swept.set()

    # Recorded whichever sweeps first: this test, or this process's own heartbeat.
    monkeypatch.setattr(presence, "_announce_offline", record)
    # The live holder first: a sweep between any two of these writes must not see 900012 orphaned.
    await other_process_holds("900012", "live-peer-2", time.time())
    await other_process_holds("900011", "dead-peer", time.time() - presence.DEAD_AFTER - 1)
    await other_process_holds("900012", "dead-peer", time.time() - presence.DEAD_AFTER - 1)
    shared.live_cache = None
    await shared._sweep(shared._client())
    # If the heartbeat won the sweep, it may still be announcing: wait for it, not for a fixed time.
    await asyncio.wait_for(swept.wait(), 10)

    assert announced == ["900011"]
    assert await presence.online_among([900011, 900012]) == ["900012"]


async def test_a_users_first_socket_anywhere_brings_them_online_and_the_last_takes_them_off():
    assert await presence.connected(900021) is True
    assert await presence.connected(900021) is False
    assert await presence.online_among([900021]) == ["900021"]
    assert await presence.disconnected(900021) is False
    assert await presence.disconnected(900021) is True
    assert await presence.online_among([900021]) == []


async def test_a_burst_of_sockets_is_claimed_and_looked_up_in_a_few_pipelines():
    shared = presence._redis
    users = list(range(900100, 900160))
    elsewhere = list(range(900200, 900230))  # held by another live process only
    for user in elsewhere:
        await other_process_holds(str(user), "live-peer-3", time.time())
    shared.live_cache = None
    claims_before, lookups_before = shared.claims.batches, shared.lookups.batches

    firsts = await asyncio.gather(*(presence.connected(user) for user in users))
    onlines = await asyncio.gather(*(presence.online_among([*elsewhere, 900299]) for _ in users))

    assert firsts == [True] * len(users)
    assert all(online == [str(user) for user in elsewhere] for online in onlines)
    # 60 handshakes at once: one pipeline for the first, one for all that queued behind it.
    assert 1 <= shared.claims.batches - claims_before <= 2
    assert 1 <= shared.lookups.batches - lookups_before <= 2
    # What each pipeline wrote is each user's own: the last socket of each takes them offline.
    lasts = await asyncio.gather(*(presence.disconnected(user) for user in users))
    assert lasts == [True] * len(users)
    assert await presence.online_among(users) == []


async def test_a_burst_that_finds_the_live_processes_stale_reads_them_once(monkeypatch):
    shared = presence._redis
    await other_process_holds("900301", "live-peer-4", time.time())
    reads = []
    read = shared._read_live_processes

    async def counted(client):
        # The heartbeat's sweep of a dead process (a peer an earlier test wrote, grown old)
        # reads afresh on purpose: only the reads of the burst count.
        if asyncio.current_task().get_name() != "presence-heartbeat":
            reads.append(client)
        return await read(client)

    monkeypatch.setattr(shared, "_read_live_processes", counted)
    shared.live_cache = None
    users = list(range(900310, 900350))

    firsts = await asyncio.gather(*(presence.connected(user) for user in users))
    onlines = await asyncio.gather(*(presence.online_among([900301, 900302]) for _ in users))

    assert firsts == [True] * len(users)
    assert onlines == [["900301"]] * len(users)
    # 40 handshakes found the list stale together: one ZRANGEBYSCORE, not one each.
    assert len(reads) == 1
    assert all(await asyncio.gather(*(presence.disconnected(user) for user in users)))
