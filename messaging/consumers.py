"""ChatConsumer: one WebSocket connection speaking docs/protocol.md; the work is done by services."""

import asyncio
import itertools
import logging
import secrets
import time
import weakref
from datetime import UTC, datetime

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError

from accounts.auth import InvalidToken, authenticate_token_async, query_param
from biogram import logging as biogram_logging
from biogram.batching import CallRunner
from messaging import events, metrics, presence, protocol, ratelimit, selectors, services
from messaging.errors import (
    BadRequest,
    Forbidden,
    MessagingError,
    NotMember,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from messaging.loaders import connection_state
from messaging.outbox import Outbox
from messaging.writer import writer

logger = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_INTERNAL = 1011
CLOSE_TOO_BIG = 1009
CLOSE_UNAUTHORIZED = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_FLOODING = 4008
CLOSE_GOING_AWAY = 1001
CLOSE_SLOW_CLIENT = 4009
CLOSE_TOO_MANY_SOCKETS = 4029

# Connection ids: this process's random prefix and a serial number (os.urandom per
# connection was a measurable part of the handshake cost).
_connection_ids = (f"{secrets.token_hex(6)}-{n}" for n in itertools.count(1))

# The socket path's other database calls (read receipts, sync pages): a worker thread with a
# connection that stays open, instead of database_sync_to_async's connect-per-call.
socket_db = CallRunner(name="socket-db")

# The open connections of this process, for a graceful shutdown.
live_consumers: "weakref.WeakSet[ChatConsumer]" = weakref.WeakSet()


class ChatConsumer(AsyncWebsocketConsumer):
    """Authenticates, joins the user's chats, and turns frames into service calls and back.

    Outgoing frames all go through `self.outbox`, in order. Group events arrive
    through `on_event`, which the channel layer calls synchronously for every
    event addressed to this connection (no queue, no task, no re-encoding).
    """

    async def __call__(self, scope, receive, send):
        # Channels' own loop runs a thread hop (close_old_connections) per event and a task
        # per connection for the layer's queue; this one does neither (docs/benchmarks.md).
        self.scope = scope
        self.base_send = send
        self.outbox = Outbox(send, limit=settings.WS_OUTBOX_LIMIT, on_overflow=self.on_overflow)
        self.channel_layer = get_channel_layer()
        self.channel_name = await self.channel_layer.new_channel()
        self.main_task = asyncio.current_task()
        self.dropped = False
        listener = self._attach()
        try:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    await self.receive(message.get("text"), message.get("bytes"))
                elif kind == "websocket.connect":
                    await self.connect()
                elif kind == "websocket.disconnect":
                    await self.disconnect(message.get("code", 1005))
                    return
        except StopConsumer:
            return
        except asyncio.CancelledError:
            if not self.dropped:
                raise
            await self.disconnect(CLOSE_SLOW_CLIENT)  # the slow client is let go: clean up
        finally:
            if listener is not None:
                listener.cancel()
            detach = getattr(self.channel_layer, "detach", None)
            if detach is not None:
                detach(self.channel_name)
            self.outbox.abandon()
            if self.outbox.task is not None:
                self.outbox.task.cancel()

    def _attach(self):
        attach = getattr(self.channel_layer, "attach", None)
        if attach is not None:
            attach(self.channel_name, self.on_event)
            return None
        return asyncio.ensure_future(self._listen())  # a standard layer: read its queue

    async def _listen(self):
        while True:
            self.on_event(await self.channel_layer.receive(self.channel_name))

    async def connect(self):
        self.user = self.scope.get("user")
        self.user_key = None
        self.connection_id = next(_connection_ids)
        self.chat_ids: set[str] = set()
        self.joined: set[str] = set()
        self.typing: dict[str, _TypingState] = {}
        self.tasks: set[asyncio.Task] = set()
        self.expiry = None
        self.token_expires_at = self.scope.get("token_expires_at")
        self.strikes = 0
        self.online = False
        self.closing = False
        await self.accept()
        metrics.CONNECTS.inc()
        metrics.OPEN_SOCKETS.inc()

        if self.scope.get("auth_error") == "unavailable":
            self.refuse(
                Unavailable("The server cannot check your token right now."), CLOSE_INTERNAL
            )
            return
        if self.scope.get("auth_error") or not getattr(self.user, "is_authenticated", False):
            self.refuse(Unauthorized("Missing, invalid or expired token."), CLOSE_UNAUTHORIZED)
            return
        self.user_key = str(self.user.pk)
        biogram_logging.bind(user_id=self.user_key, connection_id=self.connection_id)
        claimed = query_param(self.scope, "userId")
        if claimed is not None and claimed != self.user_key:
            self.refuse(Forbidden("userId is not the token's user."), CLOSE_FORBIDDEN)
            return
        try:
            first = await presence.connected(
                self.user_key, limit=settings.WS_MAX_SOCKETS_PER_USER or None
            )
        except presence.TooManySockets:
            self.refuse(
                RateLimited(
                    f"Too many open connections ({settings.WS_MAX_SOCKETS_PER_USER}) for this "
                    "user; close one first."
                ),
                CLOSE_TOO_MANY_SOCKETS,
            )
            return
        self.online = True
        try:
            state = await connection_state(self.user.pk)
            await self.join(events.user_group(self.user_key))
            prime = getattr(self.channel_layer, "prime_order", None)
            for chat_id in state.chat_ids:
                group = events.chat_group(chat_id)
                if prime is not None:
                    prime(group, state.last_seqs[chat_id])
                await self.join(group)
                self.chat_ids.add(str(chat_id))
        except Exception:
            logger.exception("connect failed for user %s", self.user_key)
            self.online = False
            await presence.disconnected(self.user_key)
            self.refuse(Unavailable("The server cannot load your chats right now."), CLOSE_INTERNAL)
            return
        live_consumers.add(self)
        self.send_frame(
            protocol.connect_frame(
                user_id=self.user_key,
                connection_id=self.connection_id,
                chats=sorted(self.chat_ids, key=int),
                online=await presence.online_among(state.co_member_ids),
                token_expires_at=self.token_expires_at,
            )
        )
        if first:
            self.announce_presence(state.co_member_ids, online=True)
        self.schedule_expiry()
        logger.info("socket open: %d chats", len(self.chat_ids))

    async def disconnect(self, code):
        if getattr(self, "user_key", ...) is ...:
            return  # never got as far as `connect`
        self.closing = True
        self.outbox.abandon()
        if self.user_key is not None:
            logger.info("socket closed: code %s", code)
        live_consumers.discard(self)
        metrics.OPEN_SOCKETS.dec()
        metrics.DISCONNECTS.labels(code=str(code)).inc()
        if self.expiry is not None:
            self.expiry.cancel()
        for chat_id in list(self.typing):
            self.stop_typing(chat_id, announce=True)
        for group in list(self.joined):
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:
                logger.warning("leaving group %s failed", group, exc_info=True)
        self.joined.clear()
        if self.online and await presence.disconnected(self.user_key):
            self.online = False
            try:
                state = await connection_state(self.user.pk)
            except Exception:
                logger.warning("presence: co-members of %s unknown", self.user_key, exc_info=True)
            else:
                self.announce_presence(state.co_member_ids, online=False)
        self.online = False

    # ------------------------------------------------------------ incoming frames

    async def receive(self, text_data=None, bytes_data=None):
        if self.closing or self.user_key is None:
            return
        if text_data is None:
            if len(bytes_data or b"") > settings.WS_MAX_FRAME_BYTES:
                self.close_with(CLOSE_TOO_BIG)
                return
            self.send_error(BadRequest("Binary frames are not supported; send JSON text."), None)
            return
        if len(text_data) > settings.WS_MAX_FRAME_BYTES or (
            len(text_data) * 4 > settings.WS_MAX_FRAME_BYTES
            and len(text_data.encode("utf-8", "surrogatepass")) > settings.WS_MAX_FRAME_BYTES
        ):
            self.close_with(CLOSE_TOO_BIG)
            return
        if self.token_expires_at is not None and self.token_expires_at <= datetime.now(UTC):
            self.expire()
            return
        try:
            frame = protocol.parse_frame(text_data)
        except protocol.FrameError as error:
            metrics.FRAMES_IN.labels(type="invalid").inc()
            self.send_error(error, error.ref)
            return
        metrics.FRAMES_IN.labels(type=frame.type_name).inc()
        handler = getattr(self, f"on_{frame.type_name}")
        chat_id = getattr(frame, "chat_id", None)
        context = None if chat_id is None else biogram_logging.bind(chat_id=str(chat_id))
        logger.debug("frame %s", frame.type_name)
        try:
            await handler(frame)
        except MessagingError as error:
            self.send_error(error, protocol.frame_ref(frame))
        except DatabaseError:
            logger.warning("database error on %s frame", frame.type_name, exc_info=True)
            self.send_error(Unavailable(), protocol.frame_ref(frame))
        except Exception:
            logger.exception("unexpected error on %s frame", frame.type_name)
            self.send_error(Unavailable("Internal error; try again."), protocol.frame_ref(frame))
        finally:
            if context is not None:
                biogram_logging.socket_context.reset(context)

    async def on_message(self, frame: protocol.SendMessage):
        if frame.sender_id is not None and frame.sender_id != self.user_key:
            raise Forbidden("senderId is not the authenticated user.")
        wait = ratelimit.take_message_token(self.user_key)
        if wait:
            metrics.RATE_LIMITED.inc()
            self.strikes += 1
            if self.strikes > settings.RATE_LIMIT_STRIKES:
                self.send_error(RateLimited("Flooding; closing."), protocol.frame_ref(frame))
                self.close_with(CLOSE_FLOODING)
                return
            raise RateLimited(retryAfterMs=max(1, int(wait * 1000 + 0.999)))
        self.strikes = 0
        message, created = await writer.store(
            services.Outgoing(self.user, frame.chat_id, frame.text, frame.client_message_id)
        )
        if not created:
            # A retry: the stored copy is this connection's acknowledgement.
            self.send_frame(protocol.message_frame(message))

    async def on_typing(self, frame: protocol.Typing):
        if frame.sender_id is not None and frame.sender_id != self.user_key:
            raise Forbidden("senderId is not the typist.")
        chat_id = str(frame.chat_id)
        if chat_id not in self.chat_ids:
            raise NotMember()
        if not frame.is_typing:
            self.stop_typing(chat_id, announce=True, force=True)
            return
        now = time.monotonic()
        state = self.typing.get(chat_id)
        if state is None:
            state = self.typing[chat_id] = _TypingState()
        if now - state.forwarded_at >= settings.TYPING_COALESCE_MS / 1000:
            state.forwarded_at = now
            self.publish_typing(chat_id, True)
        if state.timer is not None:
            state.timer.cancel()
        state.timer = asyncio.get_running_loop().call_later(
            settings.TYPING_TIMEOUT_MS / 1000, self.stop_typing, chat_id, True
        )

    async def on_read(self, frame: protocol.Read):
        if frame.user_id is not None and frame.user_id != self.user_key:
            raise Forbidden("userId is not the reader.")
        await socket_db.call(
            services.mark_read, user=self.user, chat_id=frame.chat_id, message_id=frame.message_id
        )

    async def on_sync(self, frame: protocol.Sync):
        summary = {}
        for chat_id, after in frame.chats.items():
            if str(chat_id) not in self.chat_ids:
                self.send_error(NotMember(f"Chat {str(chat_id)[:40]} not found."), "sync")
                continue
            page = await socket_db.call(
                selectors.missed_messages,
                chat_id=chat_id,
                after_seq=after,
                limit=settings.SYNC_MAX_PER_CHAT,
            )
            for message in page.messages:
                self.send_frame(protocol.message_frame(message))
                if self.outbox.backlog > self.outbox.limit // 2:
                    # A replay is our own burst, not a slow reader: wait for the socket.
                    await self.outbox.flushed()
            last = page.messages[-1].seq if page.messages else after
            summary[chat_id] = (last, page.has_more)
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
        self.schedule_expiry()
        self.send_frame(protocol.auth_frame(token_expires_at=self.token_expires_at))

    async def on_ping(self, frame: protocol.Ping):
        self.send_frame(protocol.pong_frame())

    async def on_disconnect(self, frame: protocol.Disconnect):
        self.close_with(CLOSE_NORMAL)

    # ------------------------------------------------------------ group events

    def on_event(self, event: dict) -> None:
        """Every channel-layer event for this connection, in order, as the layer delivers it."""
        kind = event["type"]
        if kind == "chat.frame":
            # A frame for a chat's members, encoded once by whoever sent it.
            chat_id = event["chat_id"]
            if chat_id not in self.chat_ids or event.get("skip_user") == self.user_key:
                return
            self.outbox.push(event["text"])
            if chat_id in self.typing and event.get("sender_id") == self.user_key:
                # The typist's message landed: the others hear `isTyping: false` after it.
                asyncio.get_running_loop().call_soon(self.stop_typing, chat_id, True)
        elif kind == "user.frame":
            self.outbox.push(event["text"])
        elif kind == "user.chat":
            self.on_membership(event["chat_id"], event["event"])
        elif kind == "user.banned":
            self.send_frame(protocol.closing_frame(user_id=self.user_key, reason="banned"))
            self.close_with(CLOSE_UNAUTHORIZED)
        else:
            logger.warning("unknown event %r for a chat connection", kind)

    def on_membership(self, chat_id: str, change: str) -> None:
        """Joined or left a chat: start or stop receiving it at once."""
        group = events.chat_group(chat_id)
        if change == "added":
            if chat_id in self.chat_ids:
                return
            self.chat_ids.add(chat_id)
            self.spawn(self.join(group))
            self.spawn(self.tell_who_is_online(chat_id))
        else:
            if chat_id not in self.chat_ids:
                return
            # Announce the end of typing while still a member, so the others hear it.
            self.stop_typing(chat_id, announce=True)
            self.chat_ids.discard(chat_id)
            self.joined.discard(group)
            self.spawn(self.channel_layer.group_discard(group, self.channel_name))
        self.send_frame(protocol.chat_frame(chat_id=chat_id, event=change))

    async def tell_who_is_online(self, chat_id: str) -> None:
        """A new chat may bring new co-members: `connect` for each of its members online now
        (their own sockets announce themselves only when they open)."""
        try:
            members = await socket_db.call(selectors.member_ids, int(chat_id))
            online = await presence.online_among(m for m in members if str(m) != self.user_key)
        except Exception:
            logger.warning("presence of chat %s's members unknown", chat_id, exc_info=True)
            return
        for user_id in online:
            self.send_frame(protocol.presence_frame(user_id=user_id, online=True))

    async def server_shutdown(self):
        """Say `disconnect` (server_shutdown), close with 1001, and wait until it is sent."""
        if getattr(self, "user_key", None) is not None:
            self.send_frame(protocol.closing_frame(user_id=self.user_key, reason="server_shutdown"))
        self.close_with(CLOSE_GOING_AWAY)
        await self.outbox.flushed()

    def on_overflow(self) -> None:
        """The client stopped reading and its queue is full: let it go, and resume by `sync`."""
        metrics.SLOW_CLIENT_DISCONNECTS.inc()
        logger.warning(
            "slow client: user %s connection %s dropped (outbox over %d frames)",
            self.user_key,
            self.connection_id,
            self.outbox.limit,
        )
        self.closing = True
        self.dropped = True
        detach = getattr(self.channel_layer, "detach", None)
        if detach is not None:
            detach(self.channel_name)
        # The socket cannot take even a close frame; ending the application closes the TCP
        # connection (uvicorn), and `disconnect` cleans up (groups, presence).
        self.main_task.cancel()

    # ------------------------------------------------------------ helpers

    async def join(self, group: str):
        await self.channel_layer.group_add(group, self.channel_name)
        self.joined.add(group)

    def send_frame(self, frame: dict) -> None:
        self.outbox.push(protocol.encode(frame))

    def send_error(self, error: MessagingError, ref) -> None:
        metrics.ERRORS.labels(code=error.code).inc()
        self.send_frame(
            protocol.error_frame(code=error.code, message=error.message, ref=ref, **error.extra)
        )

    def refuse(self, error: MessagingError, code: int) -> None:
        self.send_error(error, None)
        self.close_with(code)

    def close_with(self, code: int) -> None:
        if not self.closing:
            self.closing = True
            self.outbox.close(code)

    def spawn(self, coroutine):
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def schedule_expiry(self):
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if self.token_expires_at is None:
            return
        delay = max(0.0, (self.token_expires_at - datetime.now(UTC)).total_seconds())
        self.expiry = asyncio.get_running_loop().call_later(delay, self.expire)

    def expire(self):
        self.send_frame(protocol.closing_frame(user_id=self.user_key, reason="token_expired"))
        self.close_with(CLOSE_UNAUTHORIZED)

    def publish_typing(self, chat_id: str, is_typing: bool):
        frame = protocol.typing_frame(chat_id=chat_id, user_id=self.user_key, is_typing=is_typing)
        event = events.chat_frame_event(chat_id, frame)
        event["skip_user"] = self.user_key
        self.group_send(events.chat_group(chat_id), event)

    def stop_typing(self, chat_id: str, announce: bool, force: bool = False):
        """End a typing state (timer, message sent, close); tell the others `isTyping: false`."""
        state = self.typing.pop(chat_id, None)
        if state is not None and state.timer is not None:
            state.timer.cancel()
        if announce and (state is not None or force) and chat_id in self.chat_ids:
            self.publish_typing(chat_id, False)

    def announce_presence(self, user_ids, *, online: bool):
        event = events.user_frame_event(
            protocol.presence_frame(user_id=self.user_key, online=online)
        )
        for user_id in user_ids:
            self.group_send(events.user_group(user_id), event)

    def group_send(self, group: str, event: dict) -> None:
        send_now = getattr(self.channel_layer, "group_send_nowait", None)
        if send_now is not None:
            send_now(group, event)
        else:
            self.spawn(self.channel_layer.group_send(group, event))


async def _announce_offline(user_ids: list[str]) -> None:
    """Users whose only process died are offline: tell who shares a chat with them."""
    layer = get_channel_layer()
    for user_id in user_ids:
        state = await connection_state(int(user_id))
        event = events.user_frame_event(protocol.presence_frame(user_id=user_id, online=False))
        for other in state.co_member_ids:
            await layer.group_send(events.user_group(other), event)


presence.set_offline_handler(_announce_offline)


class _TypingState:
    __slots__ = ("forwarded_at", "timer")

    def __init__(self):
        self.forwarded_at = float("-inf")
        self.timer = None
