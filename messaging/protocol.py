"""The wire protocol (docs/protocol.md): incoming frames parsed into typed values, and the one builder of each outgoing frame."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

import orjson
from django.conf import settings

from messaging.errors import BadRequest, MessagingError, TooLarge

CLIENT_MESSAGE_ID_MAX = 64
SYNC_MAX_CHATS = 1000
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
class Sync:
    type_name: ClassVar[str] = "sync"
    chats: dict[int | None, int]  # None stands for a chat id that names no chat


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


ClientFrame = SendMessage | Typing | Read | Sync | Auth | Ping | Disconnect


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


def _optional_id_string(data: dict, field: str) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRequest(f"'{field}' must be an id string.")
    return str(value)


def _parse_message(data: dict) -> SendMessage:
    return SendMessage(
        chat_id=parse_id(data.get("chatId"), "chatId", allow_unknown=True),
        text=parse_text(data.get("text")),
        client_message_id=parse_client_message_id(data.get("clientMessageId")),
        sender_id=_optional_id_string(data, "senderId"),
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
        raise BadRequest("'chats' must be an object mapping chatId to the last seq held.")
    if len(chats) > SYNC_MAX_CHATS:
        raise BadRequest(f"At most {SYNC_MAX_CHATS} chats per sync.")
    parsed: dict = {}
    for chat_id, seq in chats.items():
        parsed[parse_id(chat_id, "chats", allow_unknown=True) or chat_id] = parse_seq(seq, "chats")
    return Sync(chats=parsed)


def _parse_auth(data: dict) -> Auth:
    token = data.get("token")
    if not isinstance(token, str) or not token:
        raise BadRequest("'token' must be a string.")
    return Auth(token=token)


_PARSERS = {
    "message": _parse_message,
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


def message_data(message) -> dict:
    """The message object, the same in socket frames and in the REST API."""
    deleted = message.deleted_at is not None
    return {
        "id": str(message.pk),
        "chatId": str(message.chat_id),
        "seq": str(message.seq),
        "senderId": format_id(message.sender_id),
        "text": None if deleted else message.text,
        "clientMessageId": message.client_message_id,
        "createdAt": format_time(message.created_at),
        "deleted": deleted,
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


def delete_frame(*, chat_id, message_id) -> dict:
    return frame("delete", {"chatId": str(chat_id), "messageId": str(message_id)})


def chat_frame(*, chat_id, event: str) -> dict:
    return frame("chat", {"chatId": str(chat_id), "event": event})


def sync_frame(summary: dict) -> dict:
    """`summary` maps chat id to (last seq, has more)."""
    return frame(
        "sync",
        {
            "chats": {
                str(chat_id): {"lastSeq": str(last_seq), "hasMore": has_more}
                for chat_id, (last_seq, has_more) in summary.items()
            }
        },
    )


def auth_frame(*, token_expires_at) -> dict:
    return frame("auth", {"tokenExpiresAt": format_time(token_expires_at)})


def pong_frame() -> dict:
    return frame("pong", {"serverTime": format_time(datetime.now(UTC))})


def error_frame(*, code: str, message: str, ref: str | None, **extra) -> dict:
    return frame("error", {"code": code, "message": message, "ref": ref, **extra})
