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

logger = logging.getLogger(__name__)

HEARTBEAT = 5.0
DEAD_AFTER = 15.0

_connections: Counter = Counter()
process_id = secrets.token_hex(6)


async def connected(user_id) -> bool:
    """Count a new socket; True when the user just came online (their first socket anywhere)."""
    key = str(user_id)
    _connections[key] += 1
    if _connections[key] > 1:
        return False
    if _redis is None or not settings.REDIS_URL:
        return True
    return await _redis.claim(key)


async def disconnected(user_id) -> bool:
    """Forget a socket; True when it was the user's last anywhere (they went offline)."""
    key = str(user_id)
    if _connections[key] > 1:
        _connections[key] -= 1
        return False
    _connections.pop(key, None)
    if _redis is None or not settings.REDIS_URL:
        return True
    return await _redis.release(key)


async def online_among(user_ids) -> list[str]:
    keys = [str(user_id) for user_id in user_ids]
    if _redis is not None and settings.REDIS_URL:
        online = await _redis.online(keys)
    else:
        online = {key for key in keys if key in _connections}
    return sorted(online, key=int)


def reset() -> None:
    """Forget everything local (tests)."""
    _connections.clear()


class RedisPresence:
    """The shared half of presence, in Redis; `announce(user_ids, online=False)` is called for
    users of a dead process who are now offline everywhere."""

    def __init__(self, url: str, prefix: str):
        self.url = url
        self.prefix = f"{prefix}:presence"
        self.loop = None
        self.client = None
        self.heart: asyncio.Task | None = None
        self.on_offline = None  # async callable(user_ids), set by the consumer module
        self.live_cache: tuple[float, set[str]] | None = None

    def _client(self):
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            import redis.asyncio as redis

            self.loop = loop
            self.live_cache = None
            self.client = redis.Redis.from_url(
                self.url, socket_connect_timeout=2, socket_timeout=5, max_connections=None
            )
            self.heart = loop.create_task(self._beat())
        return self.client

    def _user(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}"

    def _process(self, pid: str) -> str:
        return f"{self.prefix}:process:{pid}"

    @property
    def _alive(self) -> str:
        return f"{self.prefix}:alive"

    async def _live_processes(self, client) -> set[str]:
        now = time.monotonic()
        if self.live_cache is None or now - self.live_cache[0] > 1.0:
            members = await client.zrangebyscore(self._alive, time.time() - DEAD_AFTER, "+inf")
            self.live_cache = (now, {m.decode() for m in members} | {process_id})
        return self.live_cache[1]

    async def claim(self, user_id: str) -> bool:
        client = self._client()
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.zadd(self._alive, {process_id: time.time()})
                pipe.hkeys(self._user(user_id))
                pipe.hset(self._user(user_id), process_id, 1)
                pipe.sadd(self._process(process_id), user_id)
                _, holders, _, _ = await pipe.execute()
            others = {h.decode() for h in holders} - {process_id}
            return not (others & await self._live_processes(client))
        except Exception:
            logger.warning("presence: redis unavailable; counting this process only", exc_info=True)
            return True

    async def release(self, user_id: str) -> bool:
        client = self._client()
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hdel(self._user(user_id), process_id)
                pipe.srem(self._process(process_id), user_id)
                pipe.hkeys(self._user(user_id))
                _, _, holders = await pipe.execute()
            others = {h.decode() for h in holders} - {process_id}
            return not (others & await self._live_processes(client))
        except Exception:
            logger.warning("presence: redis unavailable; counting this process only", exc_info=True)
            return True

    async def online(self, user_ids: list[str]) -> set[str]:
        local = {key for key in user_ids if key in _connections}
        rest = [key for key in user_ids if key not in local]
        if not rest:
            return local
        client = self._client()
        try:
            async with client.pipeline(transaction=False) as pipe:
                for key in rest:
                    pipe.hkeys(self._user(key))
                holders = await pipe.execute()
            live = await self._live_processes(client)
        except Exception:
            logger.warning("presence: redis unavailable; local sockets only", exc_info=True)
            return local
        return local | {
            key
            for key, held in zip(rest, holders, strict=True)
            if {h.decode() for h in held} & live
        }

    async def _beat(self) -> None:
        while True:
            try:
                client = self.client
                await client.zadd(self._alive, {process_id: time.time()})
                if _connections:  # re-assert what this process holds (Redis may have restarted)
                    async with client.pipeline(transaction=False) as pipe:
                        for user_id in list(_connections):
                            pipe.hset(self._user(user_id), process_id, 1)
                        pipe.sadd(self._process(process_id), *list(_connections))
                        await pipe.execute()
                await self._sweep(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("presence heartbeat failed: %s", exc)
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
                    pipe.hkeys(self._user(user_id))
                results = await pipe.execute()
            live = await self._live_processes(client)
            gone = [
                user_id
                for user_id, held in zip(users, results[1::2], strict=True)
                if not ({h.decode() for h in held} & live)
            ]
            logger.info("presence: process %s is gone; %d users offline", pid, len(gone))
            if gone and self.on_offline is not None:
                with contextlib.suppress(Exception):
                    await self.on_offline(gone)


_redis = (
    RedisPresence(settings.REDIS_URL, settings.CHANNEL_LAYER_PREFIX) if settings.REDIS_URL else None
)


def set_offline_handler(handler) -> None:
    if _redis is not None:
        _redis.on_offline = handler
