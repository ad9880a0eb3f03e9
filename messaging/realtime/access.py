"""Access that no lost event can fool: every second, the sockets whose user's access changed re-check it.

Live events (a removal, a ban, a logout) reach sockets at once through the
channel layer, but Redis can lose them. Every change of access is also a row
of `AccessChange`, written in the change's own transaction; each process reads
the rows of the last `WINDOW` seconds every `POLL_SECONDS` and has the sockets
of the users concerned re-read their standing (active, login live, chats) from
the database. So what a socket may see is never more than about a second
behind the database, whatever Redis does. One small indexed query a second
per process, whatever the number of sockets.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.contrib.sessions.models import Session
from django.utils import timezone

from accounts import logins
from biogram.logging import process_task
from messaging.models import AccessChange, Membership
from messaging.realtime.batching import CallRunner

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
WINDOW = 30.0  # seconds of changes read each time: covers commits that land out of id order
KEEP = timedelta(hours=1)  # rows older than this are deleted now and then
PRUNE_EVERY = 600  # polls


@dataclass
class Standing:
    """What the database says of one user now."""

    active: bool = False
    logins_ended_at: object = None
    chat_ids: set[str] = field(default_factory=set)


class SocketLogin:
    """The login a socket belongs to: its token's claims (the `sid`), or, for the built-in page on
    its session cookie, that session; re-checked whenever the user's access changes."""

    def __init__(self, scope):
        self.claims: dict = scope.get("token_claims") or {}
        session = scope.get("session")
        self.session_key = None if self.claims else getattr(session, "session_key", None)
        self.connected_at = datetime.now(UTC)

    @property
    def login_id(self) -> str | None:
        return self.claims.get(logins.SID_CLAIM)

    def renewed(self, claims: dict) -> None:
        """The socket now lives on another token (`auth`)."""
        self.claims, self.session_key = claims, None

    def live(self, standing: Standing, live_logins: set[str], live_sessions: set[str]) -> bool:
        if self.claims:
            return logins.token_is_live(self.claims, standing.logins_ended_at, live_logins)
        ended = standing.logins_ended_at
        return self.session_key in live_sessions and (ended is None or ended < self.connected_at)


def load_standings(user_ids: set[int], login_ids: set[str], session_keys: set[str]):
    """Standing of each user, the live logins and the live sessions among those given."""
    from django.contrib.auth import get_user_model

    standings = {user_id: Standing() for user_id in user_ids}
    for pk, active, ended in (
        get_user_model()
        .objects.filter(pk__in=user_ids)
        .values_list("pk", "is_active", "logins_ended_at")
    ):
        standings[pk].active, standings[pk].logins_ended_at = active, ended
    for user_id, chat_id in Membership.objects.filter(user_id__in=user_ids).values_list(
        "user_id", "chat_id"
    ):
        standings[user_id].chat_ids.add(str(chat_id))
    live_logins = logins.live_login_ids(login_ids)
    live_sessions = (
        set(
            Session.objects.filter(
                session_key__in=session_keys, expire_date__gt=timezone.now()
            ).values_list("session_key", flat=True)
        )
        if session_keys
        else set()
    )
    return standings, live_logins, live_sessions


def recent_changes() -> list[tuple[int, int]]:
    """(id, user id) of the access changes recorded in the last WINDOW seconds."""
    moment = timezone.now() - timedelta(seconds=WINDOW)
    return list(AccessChange.objects.filter(created_at__gte=moment).values_list("id", "user_id"))


def prune() -> None:
    AccessChange.objects.filter(created_at__lt=timezone.now() - KEEP).delete()


class AccessWatch:
    """This process's sockets by user, and the task that has them re-check their access."""

    def __init__(self):
        self.sockets: dict[str, set] = {}
        self.seen: dict[int, float] = {}  # change id -> when first seen
        self.task: asyncio.Task | None = None
        self.db = CallRunner(name="access-watch")

    def add(self, consumer) -> None:
        self.sockets.setdefault(consumer.user_key, set()).add(consumer)
        if self.task is None or self.task.done():
            loop = asyncio.get_running_loop()
            self.task = process_task(loop, self._watch(), name="access-watch")

    def discard(self, consumer) -> None:
        sockets = self.sockets.get(consumer.user_key)
        if sockets is not None:
            sockets.discard(consumer)
            if not sockets:
                del self.sockets[consumer.user_key]

    async def recheck(self, consumers) -> None:
        """Have these sockets re-read their standing from the database (a few queries for all)."""
        consumers = list(consumers)
        if not consumers:
            return
        standings, live_logins, live_sessions = await self.db.call(
            load_standings,
            {int(c.user_key) for c in consumers},
            {c.login.login_id for c in consumers if c.login.login_id},
            {c.login.session_key for c in consumers if c.login.session_key},
        )
        for consumer in consumers:
            consumer.apply_standing(standings[int(consumer.user_key)], live_logins, live_sessions)

    async def _watch(self) -> None:
        polls = 0
        while self.sockets:
            await asyncio.sleep(POLL_SECONDS)
            polls += 1
            try:
                changes = await self.db.call(recent_changes)
                if polls % PRUNE_EVERY == 0:
                    await self.db.call(prune)
            except Exception as exc:
                logger.debug("access changes unreadable now: %s", exc)
                continue  # the database is away: so is every write that could change access
            fresh = {user_id for change_id, user_id in changes if change_id not in self.seen}
            now = time.monotonic()
            for change_id, _ in changes:
                self.seen.setdefault(change_id, now)
            self.seen = {i: t for i, t in self.seen.items() if now - t < 2 * WINDOW}
            if fresh:
                with contextlib.suppress(Exception):
                    await self.recheck(
                        c for user_id in fresh for c in list(self.sockets.get(str(user_id), ()))
                    )


watch = AccessWatch()
