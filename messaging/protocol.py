"""The wire protocol (docs/protocol.md): incoming frames parsed into typed values, and the one builder of each outgoing frame."""

import functools
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

import orjson
from django.conf import settings

from messaging.errors import BadRequest, MessagingError, TooLarge

CLIENT_MESSAGE_ID_MAX = 64
SYNC_MAX_CHATS = 1000
EMOJI_MAX_BYTES = 64
EMOJI_MAX_PER_MESSAGE = 20
ZERO_WIDTH_JOINER = "\u200d"
_ID_MAX = 2**63 - 1


class FrameError(MessagingError):
    """An incoming frame that cannot be parsed; `ref` is what the error frame echoes."""

    def __init__(self, error: MessagingError, ref: str | None):
        super().__init__(error.message)
        self.code = error.code
        self.ref = ref


class UnknownType(MessagingError):
    code, default_message = "unknown_type", "Unknown frame type."


# ---------------------------------------------------------------- formatting


def format_time(value: datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds and a Z, as every time on the wire."""
    if value is None:
        return None
    return _format_time(value)


@functools.lru_cache(maxsize=256)
def _format_time(value: datetime) -> str:
    # Cached: a batch of messages (a writer's, a sync page's) shares a few instants, and
    # strftime was the largest single cost of building a message's frame.
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def format_id(value) -> str | None:
    return None if value is None else str(value)


def encode(frame: dict) -> str:
    return orjson.dumps(frame).decode()


# ---------------------------------------------------------------- incoming


@dataclass(frozen=True)
class SendMessage:
    type_name: ClassVar[str] = "message"
    chat_id: int
    text: str
    client_message_id: str | None
    sender_id: str | None
    reply_to: int | None = None  # 0 stands for an id that names no message


@dataclass(frozen=True)
class Edit:
    type_name: ClassVar[str] = "edit"
    chat_id: int
    message_id: int  # 0 stands for an id that names no message
    text: str


@dataclass(frozen=True)
class Delete:
    type_name: ClassVar[str] = "delete"
    chat_id: int
    message_id: int


@dataclass(frozen=True)
class React:
    type_name: ClassVar[str] = "react"
    chat_id: int
    message_id: int
    emoji: str
    on: bool


@dataclass(frozen=True)
class Delivered:
    type_name: ClassVar[str] = "delivered"
    chat_id: int
    seq: int


@dataclass(frozen=True)
class Typing:
    type_name: ClassVar[str] = "typing"
    chat_id: int
    is_typing: bool
    sender_id: str | None


@dataclass(frozen=True)
class Read:
    type_name: ClassVar[str] = "read"
    chat_id: int
    message_id: int | None
    user_id: str | None


@dataclass(frozen=True)
class SyncFrom:
    """What a client holds of a chat: the last seq, and (version 2) the last rev."""

    seq: int
    rev: int | None = None  # None: the version 1 form, a string


@dataclass(frozen=True)
class Sync:
    type_name: ClassVar[str] = "sync"
    chats: dict  # chat id (the raw key when it names no chat) -> SyncFrom


@dataclass(frozen=True)
class Auth:
    type_name: ClassVar[str] = "auth"
    token: str


@dataclass(frozen=True)
class Ping:
    type_name: ClassVar[str] = "ping"


@dataclass(frozen=True)
class Disconnect:
    type_name: ClassVar[str] = "disconnect"


ClientFrame = (
    SendMessage
    | Edit
    | Delete
    | React
    | Delivered
    | Typing
    | Read
    | Sync
    | Auth
    | Ping
    | Disconnect
)


def frame_ref(frame: ClientFrame) -> str:
    """What an error about this frame echoes as `ref`: its clientMessageId, else its type."""
    return getattr(frame, "client_message_id", None) or frame.type_name


def parse_id(value, field: str, *, allow_unknown: bool = False) -> int | None:
    """An id given as a string of digits (or a plain integer, for lenient clients).

    A well-typed string that cannot name a row gives None when `allow_unknown`
    (the caller then answers "no such chat"), else `bad_request`.
    """
    if isinstance(value, bool) or value is None:
        raise BadRequest(f"'{field}' must be an id string.")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
    elif isinstance(value, str) and allow_unknown and 0 < len(value) <= 200:
        return None
    else:
        raise BadRequest(f"'{field}' must be an id string.")
    if not 0 < number <= _ID_MAX:
        if allow_unknown and number >= 0:
            return None
        raise BadRequest(f"'{field}' is not a valid id.")
    return number


def parse_seq(value, field: str) -> int:
    if isinstance(value, bool):
        raise BadRequest(f"'{field}' must be a seq string.")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
    else:
        raise BadRequest(f"'{field}' must be a seq string.")
    if not 0 <= number <= _ID_MAX:
        raise BadRequest(f"'{field}' is out of range.")
    return number


def parse_text(value) -> str:
    if not isinstance(value, str):
        raise BadRequest("'text' must be a string.")
    if not value.strip():
        raise BadRequest("'text' must not be empty.")
    if len(value) > settings.MESSAGE_MAX_LENGTH:
        raise TooLarge(f"Text is longer than {settings.MESSAGE_MAX_LENGTH} characters.")
    if "\x00" in value:
        # PostgreSQL cannot store NUL; let through, it would fail the writer's whole batch.
        raise BadRequest("'text' must not contain NUL characters.")
    return value


def parse_client_message_id(value) -> str | None:
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not value
        or len(value) > CLIENT_MESSAGE_ID_MAX
        or "\x00" in value
    ):
        raise BadRequest(
            f"'clientMessageId' must be a non-empty string of at most {CLIENT_MESSAGE_ID_MAX} characters, without NUL."
        )
    return value


def parse_emoji(value) -> str:
    """An emoji as the protocol allows it: 1-64 bytes of UTF-8, no separator (Z*), control (Cc)
    or format character (Cf) but the zero-width joiner; variation selectors (Mn) pass."""
    if not isinstance(value, str) or not value:
        raise BadRequest("'emoji' must be a non-empty string.")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadRequest("'emoji' must be valid UTF-8.") from None
    if size > EMOJI_MAX_BYTES:
        raise BadRequest(f"'emoji' must be at most {EMOJI_MAX_BYTES} bytes of UTF-8.")
    for character in value:
        category = unicodedata.category(character)
        if (
            category[0] == "Z"
            or category == "Cc"
            or (category == "Cf" and character != ZERO_WIDTH_JOINER)
        ):
            raise BadRequest("'emoji' must not contain separators, control or format characters.")
    return value


def parse_message_id(value, field: str = "messageId") -> int:
    """A message id; 0 when it is well typed but cannot name a message (answered `not_found`)."""
    return parse_id(value, field, allow_unknown=True) or 0


def _optional_id_string(data: dict, field: str) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"'{field}' must be an id string.")
    return str(value)


def _parse_message(data: dict) -> SendMessage:
    reply_to = data.get("replyTo")
    return SendMessage(
        chat_id=parse_id(data.get("chatId"), "chatId", allow_unknown=True),
        text=parse_text(data.get("text")),
        client_message_id=parse_client_message_id(data.get("clientMessageId")),
        sender_id=_optional_id_string(data, "senderId"),
        reply_to=None if reply_to is None else parse_message_id(reply_to, "replyTo"),
    )


def _parse_edit(data: dict) -> Edit:
    return Edit(
        chat_id=parse_id(data.get("chatId"), "chatId", allow_unknown=True),
        message_id=parse_message_id(data.get("messageId")),
        text=parse_text(data.get("text")),
    )


def _parse_delete(data: dict) -> Delete:
    return Delete(
        chat_id=parse_id(data.get("chatId"), "chatId", allow_unknown=True),
        message_id=parse_message_id(data.get("messageId")),
    )


def _parse_react(data: dict) -> React:
    on = data.get("on", True)
    if not isinstance(on, bool):
        raise BadRequest("'on' must be true or false.")
    return React(
        chat_id=parse_id(data.get("chatId"), "chatId", allow_unknown=True),
        message_id=parse_message_id(data.get("messageId")),
        emoji=parse_emoji(data.get("emoji")),
        on=on,
    )


def _parse_delivered(data: dict) -> Delivered:
    return Delivered(
        chat_id=parse_id(data.get("chatId"), "chatId", allow_unknown=True),
        seq=parse_seq(data.get("seq"), "seq"),
    )


def _parse_typing(data: dict) -> Typing:
    is_typing = data.get("isTyping", True)
    if not isinstance(is_typing, bool):
        raise BadRequest("'isTyping' must be true or false.")
    return Typing(
        chat_id=parse_id(data.get("chatId"), "chatId", allow_unknown=True),
        is_typing=is_typing,
        sender_id=_optional_id_string(data, "senderId"),
    )


def _parse_read(data: dict) -> Read:
    message_id = data.get("messageId")
    return Read(
        chat_id=parse_id(data.get("chatId"), "chatId", allow_unknown=True),
        message_id=None
        if message_id is None
        else parse_id(message_id, "messageId", allow_unknown=True) or 0,
        user_id=_optional_id_string(data, "userId"),
    )


def _parse_sync(data: dict) -> Sync:
    chats = data.get("chats")
    if not isinstance(chats, dict):
        raise BadRequest("'chats' must be an object mapping chatId to what is held of it.")
    if len(chats) > SYNC_MAX_CHATS:
        raise BadRequest(f"At most {SYNC_MAX_CHATS} chats per sync.")
    parsed: dict = {}
    for chat_id, held in chats.items():
        if isinstance(held, dict):
            if "seq" not in held or "rev" not in held:
                raise BadRequest("A chat's position in 'chats' is a seq, or {seq, rev}.")
            position = SyncFrom(parse_seq(held["seq"], "seq"), parse_seq(held["rev"], "rev"))
        else:
            position = SyncFrom(parse_seq(held, "chats"))
        parsed[parse_id(chat_id, "chats", allow_unknown=True) or chat_id] = position
    return Sync(chats=parsed)


def _parse_auth(data: dict) -> Auth:
    token = data.get("token")
    if not isinstance(token, str) or not token:
        raise BadRequest("'token' must be a string.")
    return Auth(token=token)


_PARSERS = {
    "message": _parse_message,
    "edit": _parse_edit,
    "delete": _parse_delete,
    "react": _parse_react,
    "delivered": _parse_delivered,
    "typing": _parse_typing,
    "read": _parse_read,
    "sync": _parse_sync,
    "auth": _parse_auth,
    "ping": lambda data: Ping(),
    "disconnect": lambda data: Disconnect(),
}
_DATA_OPTIONAL = {"ping", "disconnect"}


def parse_frame(text: str) -> ClientFrame:
    """Parse one text frame; raises FrameError with the code and `ref` to answer."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError(BadRequest("Frame is not valid JSON."), None) from None
    if not isinstance(frame, dict):
        raise FrameError(BadRequest("Frame must be a JSON object."), None)
    frame_type = frame.get("type")
    if not isinstance(frame_type, str):
        raise FrameError(BadRequest("Frame needs a string 'type'."), None)
    data = frame.get("data")
    ref = frame_type[:64]
    parser = _PARSERS.get(frame_type)
    if parser is None:
        raise FrameError(UnknownType(f"Unknown frame type '{ref}'."), ref)
    # Only a `message` has a clientMessageId; elsewhere it is an unknown field, ignored.
    client_message_id = data.get("clientMessageId") if isinstance(data, dict) else None
    if frame_type == "message" and isinstance(client_message_id, str) and client_message_id:
        ref = client_message_id[:CLIENT_MESSAGE_ID_MAX]
    if data is None and frame_type in _DATA_OPTIONAL:
        data = {}
    if not isinstance(data, dict):
        raise FrameError(BadRequest("Frame needs a 'data' object."), ref)
    try:
        return parser(data)
    except MessagingError as error:
        raise FrameError(error, ref) from None


# ---------------------------------------------------------------- outgoing


def frame(frame_type: str, data: dict) -> dict:
    return {"type": frame_type, "data": data}


def reactions_data(rows) -> list[dict]:
    """`[{emoji, userIds}]` from a message's reactions in the order they were made (by id):
    emoji in order of first use, users in order of reacting."""
    by_emoji: dict[str, list[str]] = {}
    for row in rows:
        by_emoji.setdefault(row.emoji, []).append(str(row.user_id))
    return [{"emoji": emoji, "userIds": users} for emoji, users in by_emoji.items()]


def message_data(message) -> dict:
    """The message object, the same in socket frames and in the REST API.

    `message` comes from `Message.objects.framed(chat_id)` or the services, which give it
    `reaction_rows` and `reply_to_seq`.
    """
    deleted = message.deleted_at is not None
    reply_to = message.reply_to_id
    return {
        "id": str(message.pk),
        "chatId": str(message.chat_id),
        "seq": str(message.seq),
        "rev": str(message.rev),
        "senderId": format_id(message.sender_id),
        "text": None if deleted else message.text,
        "clientMessageId": message.client_message_id,
        "createdAt": format_time(message.created_at),
        "deleted": deleted,
        "editedAt": format_time(message.edited_at),
        "replyTo": None
        if reply_to is None
        else {"id": str(reply_to), "seq": str(message.reply_to_seq)},
        "reactions": [] if deleted else reactions_data(message.reaction_rows),
    }


def message_frame(message) -> dict:
    data = message_data(message)
    return frame(
        "message",
        {
            "chatId": data["chatId"],
            "senderId": data["senderId"],
            "text": data["text"],
            "message": data,
        },
    )


def typing_frame(*, chat_id, user_id, is_typing: bool) -> dict:
    return frame(
        "typing",
        {
            "chatId": str(chat_id),
            "senderId": str(user_id),
            "userId": str(user_id),
            "isTyping": is_typing,
            "expiresInMs": settings.TYPING_TIMEOUT_MS,
        },
    )


def read_position_data(receipt) -> dict:
    """A read position: the REST answer of `read`, and the body of the `read` frame."""
    return {
        "messageId": format_id(receipt.message_id),
        "seq": str(receipt.seq),
        "readAt": format_time(receipt.read_at),
    }


def read_frame(receipt) -> dict:
    return frame(
        "read",
        {
            "chatId": str(receipt.chat_id),
            "userId": str(receipt.user_id),
            **read_position_data(receipt),
        },
    )


def presence_frame(*, user_id, online: bool) -> dict:
    return frame("connect" if online else "disconnect", {"userId": str(user_id)})


def connect_frame(*, user_id, connection_id, chats, online, token_expires_at) -> dict:
    return frame(
        "connect",
        {
            "userId": str(user_id),
            "connectionId": connection_id,
            "chats": [str(chat_id) for chat_id in chats],
            "online": [str(other) for other in online],
            "serverTime": format_time(datetime.now(UTC)),
            "tokenExpiresAt": format_time(token_expires_at),
        },
    )


def closing_frame(*, user_id, reason: str) -> dict:
    """`disconnect` about oneself, sent just before the server closes the socket."""
    return frame("disconnect", {"userId": str(user_id), "reason": reason})


def update_frame(message) -> dict:
    """An existing message edited, restored, or its reactions changed: its current state."""
    return frame("update", {"chatId": str(message.chat_id), "message": message_data(message)})


def delete_frame(message) -> dict:
    return frame(
        "delete",
        {
            "chatId": str(message.chat_id),
            "messageId": str(message.pk),
            "seq": str(message.seq),
            "rev": str(message.rev),
        },
    )


def change_frame(message) -> dict:
    """What a change of an existing message is announced as: `delete` once deleted, else `update`."""
    return delete_frame(message) if message.deleted_at is not None else update_frame(message)


def delivered_frame(*, chat_id, user_id, seq) -> dict:
    return frame("delivered", {"chatId": str(chat_id), "userId": str(user_id), "seq": str(seq)})


def edit_data(text: str, edited_at) -> dict:
    """One text of a message's edit history (REST)."""
    return {"text": text, "editedAt": format_time(edited_at)}


def chat_data(chat, *, viewer_id, last_message, unread_count: int, read_seq: int) -> dict:
    """The chat object as `viewer_id` sees it (REST, and the `chat` `updated` frame).

    `chat` comes with its memberships (and their users) and read receipts prefetched.
    """
    receipts = {receipt.user_id: receipt for receipt in chat.read_receipts.all()}
    memberships = list(chat.memberships.all())
    return {
        "id": str(chat.pk),
        "title": chat.title,
        "isDirect": chat.is_direct,
        "createdAt": format_time(chat.created_at),
        "members": [
            {
                "id": str(m.user_id),
                "username": m.user.username,
                "lastReadSeq": str(receipts[m.user_id].seq if m.user_id in receipts else 0),
                "lastDeliveredSeq": str(
                    receipts[m.user_id].delivered_seq if m.user_id in receipts else 0
                ),
            }
            for m in memberships
        ],
        "lastMessage": message_data(last_message) if last_message else None,
        "unreadCount": unread_count,
        "lastReadSeq": str(read_seq),
        "rev": str(chat.last_rev),
        "notificationsMuted": any(
            m.notifications_muted for m in memberships if m.user_id == viewer_id
        ),
    }


def chat_frame(*, chat_id, event: str, chat: dict | None = None) -> dict:
    """`added` / `removed` for the member concerned; `updated`, with the chat object, for the others."""
    data = {"chatId": str(chat_id), "event": event}
    if chat is not None:
        data["chat"] = chat
    return frame("chat", data)


def sync_frame(summary: dict) -> dict:
    """`summary` maps chat id to (last seq, rev, has more)."""
    return frame(
        "sync",
        {
            "chats": {
                str(chat_id): {"lastSeq": str(last_seq), "rev": str(rev), "hasMore": has_more}
                for chat_id, (last_seq, rev, has_more) in summary.items()
            }
        },
    )


def auth_frame(*, token_expires_at) -> dict:
    return frame("auth", {"tokenExpiresAt": format_time(token_expires_at)})


def pong_frame() -> dict:
    return frame("pong", {"serverTime": format_time(datetime.now(UTC))})


def error_frame(*, code: str, message: str, ref: str | None, **extra) -> dict:
    return frame("error", {"code": code, "message": message, "ref": ref, **extra})
