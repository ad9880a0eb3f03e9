"""ChatConsumer: one WebSocket connection speaking docs/protocol.md; frame → service call → frame."""

import asyncio
import itertools
import logging
import secrets
import weakref
from datetime import UTC, datetime

from django.conf import settings

from accounts.auth import InvalidToken, authenticate_token_async, query_param
from biogram import logging as biogram_logging
from messaging import events, metrics, protocol, selectors, services
from messaging.errors import (
    Forbidden,
    NotMember,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from messaging.realtime import presence
from messaging.realtime.access import SocketLogin
from messaging.realtime.access import watch as access_watch
from messaging.realtime.batching import CallRunner
from messaging.realtime.flood import FloodGuard
from messaging.realtime.loaders import connection_state, read_sync_page
from messaging.realtime.socket import SocketConsumer
from messaging.realtime.typing_indicators import TypingIndicators
from messaging.realtime.writer import NOT_APPLIED, change_writer, writer

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_UNAUTHORIZED = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_TOO_MANY_SOCKETS = 4029

# Connection ids: this process's random prefix and a serial number (os.urandom per
# connection was a measurable part of the handshake cost).
_connection_id_prefix = secrets.token_hex(6)
_connection_ids = (f"{_connection_id_prefix}-{n}" for n in itertools.count(1))

# The socket path's other database calls (read receipts, member lists): a worker thread with a
# connection that stays open, instead of database_sync_to_async's connect-per-call.
socket_db = CallRunner(name="socket-db")

# What a pipelined frame's client is told when its work failed for want of the database.
NOT_STORED = Unavailable()
CHANGE_NOT_STORED = Unavailable(NOT_APPLIED)
SYNC_NOT_READ = Unavailable("The server cannot read your chats right now; sync again.")

# The open connections of this process, for a graceful shutdown.
live_consumers: "weakref.WeakSet[ChatConsumer]" = weakref.WeakSet()


class ChatConsumer(SocketConsumer):
    """Authenticates, joins the user's chats, and turns frames into service calls and back."""

    pipelined_frames = {
        "message": "messages",
        "edit": "changes",
        "delete": "changes",
        "react": "changes",
        "sync": "sync",
    }
    # A sync's replay is history: a message acknowledged meanwhile arrives live, and the
    # client drops a repeat by id (docs/protocol.md, Resume).
    unordered_pipelines = frozenset({"sync"})
    last_sync: asyncio.Future | None = None
    user_key: str | None = None  # the user's id once authenticated
    started = False
    held_back: list[dict] | None = None  # events that came before the `connect` frame

    async def connect(self):
        self.started = True
        self.user = self.scope.get("user")
        self.connection_id = next(_connection_ids)
        self.chat_ids: set[str] = set()
        self.tasks: set[asyncio.Task] = set()
        self.delivered: dict[int, int] = {}  # chat id -> the highest seq reported as delivered
        self.expiry: asyncio.TimerHandle | None = None
        self.token_expires_at = self.scope.get("token_expires_at")
        self.online = False
        # Events of the chats joined before the `connect` frame is sent (reading who is online
        # waits on Redis) wait here: `connect` is always the first frame.
        self.held_back: list[dict] | None = []
        await self.accept()
        metrics.CONNECTS.inc()
        metrics.OPEN_SOCKETS.inc()

        if self.scope.get("auth_error") == "unavailable":
            self.refuse(
                Unavailable("The server cannot check your token right now."),
                close_code=CLOSE_INTERNAL,
            )
            return
        if self.scope.get("auth_error") or not getattr(self.user, "is_authenticated", False):
            self.refuse(
                Unauthorized("Missing, invalid or expired token."), close_code=CLOSE_UNAUTHORIZED
            )
            return
        self.user_key = str(self.user.pk)
        self.login = SocketLogin(self.scope)
        self.typing = TypingIndicators(self.user_key)
        self.flood = FloodGuard(self.user_key)
        biogram_logging.bind(user_id=self.user_key, connection_id=self.connection_id)
        claimed = query_param(self.scope, "userId")
        if claimed is not None and claimed != self.user_key:
            self.refuse(Forbidden("userId is not the token's user."), close_code=CLOSE_FORBIDDEN)
            return
        limit = settings.WS_MAX_SOCKETS_PER_USER
        try:
            first = await presence.connected(self.user_key, limit=limit or None)
        except presence.TooManySockets:
            self.refuse(
                RateLimited(f"Too many open connections ({limit}) for this user; close one first."),
                close_code=CLOSE_TOO_MANY_SOCKETS,
            )
            return
        self.online = True
        try:
            state = await connection_state(self.user.pk)
            await self.channel_layer.group_add(events.user_group(self.user_key), self.channel_name)
            for chat_id in state.chat_ids:
                group = events.chat_group(chat_id)
                self.channel_layer.prime_order(group, *state.positions[chat_id])
                await self.channel_layer.group_add(group, self.channel_name)
                self.chat_ids.add(str(chat_id))
        except Exception:
            logger.exception("connect failed")
            self.online = False
            await presence.disconnected(self.user_key)
            self.refuse(
                Unavailable("The server cannot load your chats right now."),
                close_code=CLOSE_INTERNAL,
            )
            return
        live_consumers.add(self)
        access_watch.add(self)
        self.send_frame(
            protocol.connect_frame(
                user_id=self.user_key,
                connection_id=self.connection_id,
                chats=sorted(self.chat_ids, key=int),
                online=await presence.online_among(state.co_member_ids),
                token_expires_at=self.token_expires_at,
            )
        )
        held_back, self.held_back = self.held_back, None
        for event in held_back:
            self.on_event(event)
        if first:
            events.broadcast_presence(self.user_key, state.co_member_ids, online=True)
        self.schedule_expiry()
        logger.info("socket open: %d chats", len(self.chat_ids))

    async def disconnect(self, code):
        if not self.started:
            return
        self.closing = True
        self.outbox.abandon()
        live_consumers.discard(self)
        if self.user_key is not None:
            access_watch.discard(self)
        metrics.OPEN_SOCKETS.dec()
        metrics.DISCONNECTS.labels(code=str(code)).inc()
        if self.user_key is None:
            return
        logger.info("socket closed: code %s", code)
        if self.expiry is not None:
            self.expiry.cancel()
        self.typing.stop_all()
        self.channel_layer.detach(self.channel_name)
        if self.online and await presence.disconnected(self.user_key):
            try:
                state = await connection_state(self.user.pk)
            except Exception:
                logger.warning("presence: co-members unknown", exc_info=True)
            else:
                events.broadcast_presence(self.user_key, state.co_member_ids, online=False)
        self.online = False

    # ------------------------------------------------------------ incoming frames

    def ready_for_frames(self) -> bool:
        if self.closing or self.user_key is None:
            return False
        if self.token_expires_at is not None and self.token_expires_at <= datetime.now(UTC):
            self.expire()
            return False
        return True

    async def on_message(self, frame: protocol.SendMessage):
        if frame.sender_id is not None and frame.sender_id != self.user_key:
            raise Forbidden("senderId is not the authenticated user.")
        self.flood.admit()
        request = services.Outgoing(
            self.user, frame.chat_id, frame.text, frame.client_message_id, frame.reply_to
        )
        # A message to a chat this socket has not joined, or a reply (whose target may not be
        # found), is likely refused: it is not pipelined, so its error keeps its place.
        alone = str(frame.chat_id) not in self.chat_ids or frame.reply_to is not None
        if alone:
            await self.pipeline_drained()
        await self.pipelined(
            writer.enqueue(request), protocol.frame_ref(frame), self.stored, failure=NOT_STORED
        )
        if alone:
            await self.pipeline_drained()

    def stored(self, result) -> None:
        message, created = result
        if not created:
            # A retry: the stored copy is this connection's acknowledgement (a new message's
            # is its broadcast).
            self.send_frame(protocol.message_frame(message))

    async def on_edit(self, frame: protocol.Edit):
        await self.change(
            frame,
            services.Change(
                self.user, frame.chat_id, frame.message_id, services.Action.EDIT, text=frame.text
            ),
        )

    async def on_delete(self, frame: protocol.Delete):
        await self.change(
            frame,
            services.Change(self.user, frame.chat_id, frame.message_id, services.Action.DELETE),
        )

    async def on_react(self, frame: protocol.React):
        action = services.Action.REACT if frame.on else services.Action.UNREACT
        await self.change(
            frame,
            services.Change(self.user, frame.chat_id, frame.message_id, action, emoji=frame.emoji),
        )

    async def change(self, frame, change: services.Change) -> None:
        """Edits, deletions and reactions count against the message rate like messages."""
        self.flood.admit()
        await self.pipelined(
            change_writer.enqueue(change),
            protocol.frame_ref(frame),
            self.changed,
            failure=CHANGE_NOT_STORED,
        )

    def changed(self, outcome: services.Outcome) -> None:
        if not outcome.changed:
            # Nothing changed, nothing announced: the current state answers this connection.
            self.send_frame(outcome.frame)

    async def on_delivered(self, frame: protocol.Delivered):
        if frame.seq <= self.delivered.get(frame.chat_id, -1):
            return  # this connection reported as much already: the position cannot move
        position, _ = await socket_db.call(
            services.mark_delivered, user=self.user, chat_id=frame.chat_id, seq=frame.seq
        )
        self.delivered[frame.chat_id] = position

    async def on_typing(self, frame: protocol.Typing):
        if frame.sender_id is not None and frame.sender_id != self.user_key:
            raise Forbidden("senderId is not the typist.")
        chat_id = str(frame.chat_id)
        if chat_id not in self.chat_ids:
            raise NotMember()
        if frame.is_typing:
            self.typing.typing(chat_id)
        else:
            self.typing.stop(chat_id, force=True)

    async def on_read(self, frame: protocol.Read):
        if frame.user_id is not None and frame.user_id != self.user_key:
            raise Forbidden("userId is not the reader.")
        await socket_db.call(
            services.mark_read, user=self.user, chat_id=frame.chat_id, message_id=frame.message_id
        )

    async def on_sync(self, frame: protocol.Sync):
        # Read and replayed by a task of its own: meanwhile this socket's next frames are read
        # (a reconnecting client's repeated sends, or its close). A second `sync` waits for the
        # first's replay.
        previous = self.last_sync
        self.last_sync = asyncio.ensure_future(self.replay(frame, previous))
        await self.pipelined(
            self.last_sync,
            "sync",
            lambda _: None,
            failure=SYNC_NOT_READ,
        )

    async def replay(self, frame: protocol.Sync, previous: asyncio.Future | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        # Every chat at once: each joins the sync reader's next batch, where identical reads
        # of other sockets (a reconnect storm) are made once.
        pages = await asyncio.gather(
            *(
                read_sync_page(
                    selectors.SyncRequest(self.user.pk, chat_id, held, settings.SYNC_MAX_PER_CHAT)
                )
                for chat_id, held in frame.chats.items()
            ),
            return_exceptions=True,
        )
        summary = {}
        for chat_id, replay in zip(frame.chats, pages, strict=True):
            if isinstance(replay, NotMember):
                self.send_error(NotMember(f"Chat {str(chat_id)[:40]} not found."), "sync")
                continue
            if isinstance(replay, BaseException):
                raise replay
            await self.send_texts(replay.texts, replay.frames)
            page = replay.page
            summary[chat_id] = (page.last_seq, page.rev, page.has_more)
        self.send_frame(protocol.sync_frame(summary))

    async def on_auth(self, frame: protocol.Auth):
        try:
            identity = await authenticate_token_async(frame.token)
        except InvalidToken:
            raise Unauthorized(
                "The token is invalid or expired; the old one stays in force."
            ) from None
        if str(identity.user.pk) != self.user_key:
            raise Unauthorized("The token belongs to another user; the old one stays in force.")
        self.token_expires_at = identity.expires_at
        self.login.renewed(identity.claims)
        self.schedule_expiry()
        self.send_frame(protocol.auth_frame(token_expires_at=self.token_expires_at))

    async def on_ping(self, frame: protocol.Ping):
        self.send_frame(protocol.pong_frame())

    async def on_disconnect(self, frame: protocol.Disconnect):
        self.close_with(CLOSE_NORMAL)

    # ------------------------------------------------------------ group events

    def on_event(self, event: dict) -> None:
        if self.held_back is not None:  # before the `connect` frame
            self.held_back.append(event)
            return
        handler = self.event_handlers.get(event["type"])
        if handler is None:
            logger.warning("unknown event %r for a chat connection", event["type"])
            return
        handler(self, event)

    def on_chat_frame(self, event: dict) -> None:
        """A frame for a chat's members, encoded once by whoever sent it."""
        chat_id = event["chat_id"]
        if chat_id not in self.chat_ids or event.get("skip_user") == self.user_key:
            return
        self.send_text(event["text"])
        if event.get("sender_id") == self.user_key and chat_id in self.typing:
            # The typist's message landed: the others hear `isTyping: false` after it.
            asyncio.get_running_loop().call_soon(self.typing.stop, chat_id)

    def on_user_frame(self, event: dict) -> None:
        """A frame for this user's connections (presence)."""
        self.send_text(event["text"])

    def on_user_chat(self, event: dict) -> None:
        """Joined or left a chat: start or stop receiving it at once."""
        chat_id, change = event["chat_id"], event["event"]
        group = events.chat_group(chat_id)
        if change == "added":
            if chat_id in self.chat_ids:
                return
            self.chat_ids.add(chat_id)
            self.spawn(self.channel_layer.group_add(group, self.channel_name))
            self.spawn(self.tell_who_is_online(chat_id))
        else:
            if chat_id not in self.chat_ids:
                return
            # Announce the end of typing while still a member, so the others hear it.
            if chat_id in self.typing:
                self.typing.stop(chat_id)
            self.chat_ids.discard(chat_id)
            self.spawn(self.channel_layer.group_discard(group, self.channel_name))
        self.send_frame(protocol.chat_frame(chat_id=chat_id, event=change))

    def on_user_banned(self, event: dict) -> None:
        self.end("banned")

    def on_user_standing(self, event: dict) -> None:
        """The user's access changed (a login ended): re-read it from the database."""
        self.spawn(access_watch.recheck([self]))

    event_handlers = {
        "chat.frame": on_chat_frame,
        "user.frame": on_user_frame,
        "user.chat": on_user_chat,
        "user.banned": on_user_banned,
        "user.standing": on_user_standing,
    }

    # ------------------------------------------------------------ access

    def apply_standing(self, standing, live_logins: set[str], live_sessions: set[str]) -> None:
        """What the database says of this socket's user now (access.AccessWatch): close the
        socket of a banned user or an ended login; start or stop receiving chats."""
        if self.closing or self.user_key is None:
            return
        if not standing.active:
            self.end("banned")
            return
        if not self.login.live(standing, live_logins, live_sessions):
            self.end("logged_out")
            return
        for chat_id in standing.chat_ids - self.chat_ids:
            self.on_user_chat({"chat_id": chat_id, "event": "added"})
        for chat_id in self.chat_ids - standing.chat_ids:
            self.on_user_chat({"chat_id": chat_id, "event": "removed"})

    def end(self, reason: str) -> None:
        """`disconnect` with `reason`, then close 4001 (banned, logged out, token expired)."""
        if self.closing:
            return
        self.say_goodbye(reason)
        self.close_with(CLOSE_UNAUTHORIZED)

    def say_goodbye(self, reason: str) -> None:
        self.send_frame(protocol.closing_frame(user_id=self.user_key, reason=reason))

    async def tell_who_is_online(self, chat_id: str) -> None:
        """A new chat may bring new co-members: `connect` for each of its members online now,
        and this user's `connect` to them (sockets announce themselves only when they open)."""
        try:
            members = await socket_db.call(selectors.member_ids, int(chat_id))
            others = [m for m in members if str(m) != self.user_key]
            online = await presence.online_among(others)
        except Exception:
            logger.warning("presence of chat %s's members unknown", chat_id, exc_info=True)
            return
        events.broadcast_presence(self.user_key, others, online=True)
        for user_id in online:
            self.send_frame(protocol.presence_frame(user_id=user_id, online=True))

    # ------------------------------------------------------------ closing

    async def server_shutdown(self):
        """Say `disconnect` (server_shutdown), close with 1001, and wait until it is sent."""
        if self.user_key is not None:
            self.send_frame(protocol.closing_frame(user_id=self.user_key, reason="server_shutdown"))
        self.close_with(CLOSE_GOING_AWAY)
        await self.outbox.flushed()

    def spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def schedule_expiry(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if self.token_expires_at is None:
            return
        delay = max(0.0, (self.token_expires_at - datetime.now(UTC)).total_seconds())
        self.expiry = asyncio.get_running_loop().call_later(delay, self.expire)

    def expire(self) -> None:
        self.end("token_expired")
