"""Who is online: each process counts its own sockets per user; with Redis, the processes agree.

One process (no REDIS_URL): a Counter of open sockets per user.

Several processes (REDIS_URL): each process also records, in Redis, which
users it has sockets for (`<prefix>:presence:user:<id>`, a hash of process ids)
and which users it holds (`<prefix>:presence:process:<id>`, a set), and beats
its heart every HEARTBEAT seconds (`<prefix>:presence:alive`, a sorted set of
process ids by last beat). A user is online while some live process holds
them. A process that stops beating for DEAD_AFTER seconds (SIGKILL, a lost
machine) is swept by whichever live process notices first: its users who are
held by no other process are announced offline, within DEAD_AFTER + HEARTBEAT
seconds of the crash.
"""

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter

from django.conf import settings

from biogram.logging import process_task
from messaging import events
from messaging.realtime.batching import LoopBatch
from messaging.realtime.loaders import connection_state
from messaging.realtime.redis_bridge import raise_if_cancelled, redis_outage
from messaging.realtime.redis_cluster import shared_client

logger = logging.getLogger(__name__)

HEARTBEAT = settings.PRESENCE_HEARTBEAT_SECONDS
DEAD_AFTER = 3 * HEARTBEAT  # three beats missed
KEY_TTL = 60  # seconds; every beat renews it, so the keys vanish once no process runs

_connections: Counter = Counter()
process_id = secrets.token_hex(6)


# One more socket of this process (ARGV[1]) for a user (KEYS[1]), the key kept KEY_TTL (ARGV[2])
# seconds; the user's holders after it, as HGETALL gives them. One command instead of three (a
# burst of handshakes spent a fifth of its Redis time packing and parsing them).
CLAIM = """
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return redis.call('HGETALL', KEYS[1])
"""


class TooManySockets(Exception):
    """The user already has the most sockets allowed open."""


async def connected(user_id, *, limit: int | None = None) -> bool:
    """Count a new socket; True when the user just came online (their first socket anywhere).

    Raises TooManySockets (and counts nothing) when the user already has `limit` open,
    on this process or, with Redis, on all of them together.
    """
    key = str(user_id)
    if limit is not None and _connections[key] >= limit:
        raise TooManySockets()
    _connections[key] += 1
    if _redis is None or not settings.REDIS_SHARED:
        return _connections[key] == 1
    first, total = await _redis.claim(key)
    if limit is not None and total > limit:
        await disconnected(user_id)
        raise TooManySockets()
    return first and _connections[key] == 1


async def disconnected(user_id) -> bool:
    """Forget a socket; True when it was the user's last anywhere (they went offline)."""
    key = str(user_id)
    if _connections[key] > 1:
        _connections[key] -= 1
        last_here = False
    else:
        _connections.pop(key, None)
        last_here = True
    if _redis is None or not settings.REDIS_SHARED:
        return last_here
    gone = await _redis.release(key)
    return last_here and gone


async def online_among(user_ids) -> list[str]:
    keys = [str(user_id) for user_id in user_ids]
    if _redis is not None and settings.REDIS_SHARED:
        online = await _redis.online(keys)
    else:
        online = {key for key in keys if key in _connections}
    return sorted(online, key=int)


def reset() -> None:
    """Forget everything local (tests)."""
    _connections.clear()


class RedisPresence:
    """The shared half of presence, in Redis."""

    def __init__(self, prefix: str):
        self.prefix = f"{prefix}:presence"
        self.loop = None
        self.client = None
        self.heart: asyncio.Task | None = None
        self.live_cache: tuple[float, set[str]] | None = None
        self.live_read: asyncio.Future | None = None  # the read of live_cache under way
        self.claims = LoopBatch(self._claim_many, name="presence-claims")
        # A burst of connections reads who is online together and resumes together: the
        # `connect` frames and presence frames that follow go out in one write per socket.
        self.lookups = LoopBatch(self._holders_many, name="presence-lookups", corked_wakeups=True)

    def _client(self):
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self.loop = loop
            self.live_cache = self.live_read = None
            self.client = shared_client()
            self.heart = process_task(loop, self._beat(), name="presence-heartbeat")
        return self.client

    def _user(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}"

    def _process(self, pid: str) -> str:
        return f"{self.prefix}:process:{pid}"

    @property
    def _alive(self) -> str:
        return f"{self.prefix}:alive"

    async def _live_processes(self, client) -> set[str]:
        """The processes beating now, read at most once a second; callers that find the cache
        stale meanwhile share one read (a burst of handshakes sent one each, every second)."""
        cached = self.live_cache
        if cached is not None and time.monotonic() - cached[0] <= 1.0:
            return cached[1]
        if self.live_read is None or self.live_read.done():
            self.live_read = asyncio.ensure_future(self._read_live_processes(client))
        return await asyncio.shield(self.live_read)

    async def _read_live_processes(self, client) -> set[str]:
        now = time.monotonic()
        members = await client.zrangebyscore(self._alive, time.time() - DEAD_AFTER, "+inf")
        self.live_cache = (now, {m.decode() for m in members} | {process_id})
        return self.live_cache[1]

    async def claim(self, user_id: str) -> tuple[bool, int]:
        """Count one more socket of the user here: (nobody else held them, sockets in all).

        Claims made while a pipeline is on its way to Redis go together in the next one (a
        burst of handshakes made two round trips of its own per socket)."""
        self._client()
        try:
            holders = await self.claims.submit(user_id)
            live = await self._live_processes(self.client)
        except Exception as exc:
            redis_outage.failed(exc)  # counting this process only meanwhile
            return True, _connections.get(user_id, 0)
        counts = {
            pid.decode(): int(count)
            for pid, count in holders.items()
            if pid.decode() in live and int(count) > 0
        }
        others = sum(count for pid, count in counts.items() if pid != process_id)
        return others == 0, others + _connections.get(user_id, 0)

    async def _claim_many(self, user_ids: list[str]) -> list[dict]:
        """One pipeline for the claims of a batch: each user's holders (this process counted
        already), in order; one command per user (`CLAIM`)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zadd(self._alive, {process_id: time.time()})
            for user_id in user_ids:
                pipe.eval(CLAIM, 1, self._user(user_id), process_id, KEY_TTL)
            pipe.sadd(self._process(process_id), *user_ids)
            for key in (self._alive, self._process(process_id)):
                pipe.expire(key, KEY_TTL)
            results = await pipe.execute()
        return [dict(zip(flat[::2], flat[1::2], strict=True)) for flat in results[1:-3]]

    async def release(self, user_id: str) -> bool:
        """Count one socket fewer here: True when no live process holds the user any more."""
        client = self._client()
        here = _connections.get(user_id, 0)
        try:
            async with client.pipeline(transaction=False) as pipe:
                if here:
                    pipe.hset(self._user(user_id), process_id, here)
                else:
                    pipe.hdel(self._user(user_id), process_id)
                    pipe.srem(self._process(process_id), user_id)
                pipe.hgetall(self._user(user_id))
                results = await pipe.execute()
            live = await self._live_processes(client)
            return not any(
                int(count) > 0 and pid.decode() in live for pid, count in results[-1].items()
            )
        except Exception as exc:
            redis_outage.failed(exc)  # counting this process only meanwhile
            return here == 0

    async def online(self, user_ids: list[str]) -> set[str]:
        local = {key for key in user_ids if key in _connections}
        rest = [key for key in user_ids if key not in local]
        if not rest:
            return local
        self._client()
        try:
            holders = await self.lookups.submit(rest)
            live = await self._live_processes(self.client)
        except Exception as exc:
            redis_outage.failed(exc)  # local sockets only meanwhile
            return local
        return local | {
            key
            for key, held in zip(rest, holders, strict=True)
            if any(int(count) > 0 and pid.decode() in live for pid, count in held.items())
        }

    async def _holders_many(self, requests: list[list[str]]) -> list[list[dict]]:
        """One pipeline for a batch of `online` lookups, each distinct user read once."""
        users = list(dict.fromkeys(key for keys in requests for key in keys))
        async with self.client.pipeline(transaction=False) as pipe:
            for key in users:
                pipe.hgetall(self._user(key))
            found = dict(zip(users, await pipe.execute(), strict=True))
        return [[found[key] for key in keys] for keys in requests]

    async def _beat(self) -> None:
        while True:
            raise_if_cancelled()
            try:
                client = self.client
                # Beat, and re-assert what this process holds (Redis may have restarted).
                async with client.pipeline(transaction=False) as pipe:
                    pipe.zadd(self._alive, {process_id: time.time()})
                    pipe.expire(self._alive, KEY_TTL)
                    for user_id, count in list(_connections.items()):
                        pipe.hset(self._user(user_id), process_id, count)
                        pipe.expire(self._user(user_id), KEY_TTL)
                    if _connections:
                        pipe.sadd(self._process(process_id), *list(_connections))
                        pipe.expire(self._process(process_id), KEY_TTL)
                    await pipe.execute()
                await self._sweep(client)
                redis_outage.recovered()
            except Exception as exc:
                raise_if_cancelled()
                redis_outage.failed(exc)
            await asyncio.sleep(HEARTBEAT)

    async def _sweep(self, client) -> None:
        """Take over the users of processes that stopped beating; announce who went offline."""
        dead = await client.zrangebyscore(self._alive, "-inf", time.time() - DEAD_AFTER)
        for raw in dead:
            pid = raw.decode()
            if pid == process_id or not await client.zrem(self._alive, pid):
                continue  # ourselves, or another process won the sweep
            users = [u.decode() for u in await client.smembers(self._process(pid))]
            await client.delete(self._process(pid))
            if not users:
                continue
            async with client.pipeline(transaction=False) as pipe:
                for user_id in users:
                    pipe.hdel(self._user(user_id), pid)
                    pipe.hgetall(self._user(user_id))
                results = await pipe.execute()
            live = await self._read_live_processes(client)  # now: a read under way may be older
            gone = [
                user_id
                for user_id, held in zip(users, results[1::2], strict=True)
                if not any(int(n) > 0 and p.decode() in live for p, n in held.items())
            ]
            logger.info("presence: process %s is gone; %d users offline", pid, len(gone))
            if gone:
                with contextlib.suppress(Exception):
                    await _announce_offline(gone)


async def _announce_offline(user_ids: list[str]) -> None:
    """Users whose only process died are offline: tell who shares a chat with them."""
    for user_id in user_ids:
        state = await connection_state(int(user_id))
        events.broadcast_presence(user_id, state.co_member_ids, online=False)


_redis = RedisPresence(settings.CHANNEL_LAYER_PREFIX) if settings.REDIS_SHARED else None
