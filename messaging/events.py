"""Chat events: group names, the event shapes, and `publish`, the one entry that sends them.

Every live announcement of the project (a stored message, a change of one, a
read or delivered position, a membership change, a ban, typing, presence) leaves through
`publish` or `publish_many`, from whatever thread: a socket's event loop, the
batching writer's thread, a REST request, the admin, a management command.
Writes announce only after their commit (`on_commit`). Nothing here waits on
Redis: the channel layer (`messaging.realtime.layer.ChatChannelLayer`, the
only layer the project runs on) delivers to this process's members at once
and publishes to the other processes in the background.
"""

import logging
import time

from channels.layers import get_channel_layer
from django.db import transaction

from messaging import metrics, protocol, selectors

logger = logging.getLogger(__name__)


def chat_group(chat_id) -> str:
    """Every connection of every member of the chat."""
    return f"chat.{chat_id}"


def user_group(user_id) -> str:
    """Every connection of one user."""
    return f"user.{user_id}"


def publish(group: str, event: dict) -> bool:
    """Send one event to a group; False (and logged) when the layer refuses it.

    A failure never undoes what was stored: clients resume through `sync`.
    """
    return publish_many([(group, event)])


def publish_many(pairs: list[tuple[str, dict]]) -> bool:
    """Send several events, in order; see `publish`."""
    try:
        get_channel_layer().publish_many(pairs)
    except Exception:
        logger.exception("channel layer publish of %d events failed", len(pairs))
        metrics.LAYER_SEND_FAILURES.inc(len(pairs))
        return False
    return True


def on_commit(function, *args) -> None:
    """Run `function(*args)` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: function(*args), robust=True)


# ---------------------------------------------------------------- event shapes


def chat_frame_event(
    chat_id, frame: dict, *, sender_id=None, seq=None, rev=None, skip_user=None
) -> dict:
    """The group event that carries an encoded frame to a chat's members (encoded once).

    `rev`: the chat log's revision the frame announces (a new message, an update, a
    deletion); members receive these in rev order (`realtime/sequencer.py`). `seq`: a new
    message's. `skip_user`: a user whose connections do not get it (the typist of a
    typing frame).
    """
    event = {
        "type": "chat.frame",
        "chat_id": str(chat_id),
        "sender_id": None if sender_id is None else str(sender_id),
        "seq": seq,
        "rev": rev,
        "text": protocol.encode(frame),
    }
    if skip_user is not None:
        event["skip_user"] = skip_user
    return event


def user_frame_event(frame: dict) -> dict:
    """The group event that carries an encoded frame to one user's connections."""
    return {"type": "user.frame", "text": protocol.encode(frame)}


def message_event(message) -> dict:
    event = chat_frame_event(
        message.chat_id,
        protocol.message_frame(message),
        sender_id=message.sender_id,
        seq=message.seq,
        rev=message.rev,
    )
    event["stored_at"] = time.time()  # for the fan-out latency histogram
    return event


def change_event(message) -> dict:
    """An existing message's current state as its change (`update` or `delete`), under its rev."""
    return chat_frame_event(message.chat_id, protocol.change_frame(message), rev=message.rev)


# ---------------------------------------------------------------- announcements


def broadcast_messages(messages) -> None:
    """New messages, to their chats' members, in the order given (seq order per chat)."""
    publish_many([(chat_group(m.chat_id), message_event(m)) for m in messages])


def broadcast_read(receipt) -> None:
    publish(
        chat_group(receipt.chat_id), chat_frame_event(receipt.chat_id, protocol.read_frame(receipt))
    )


def broadcast_changes(outcomes) -> None:
    """Changes of existing messages (`services.Outcome`), in the order given (rev order per
    chat), each as its frame was when it was made."""
    publish_many(
        [
            (chat_group(o.message.chat_id), chat_frame_event(o.message.chat_id, o.frame, rev=o.rev))
            for o in outcomes
        ]
    )


def broadcast_presence(user_id, co_member_ids, *, online: bool) -> None:
    """`connect` / `disconnect` of `user_id` to everyone sharing a chat with them."""
    event = user_frame_event(protocol.presence_frame(user_id=str(user_id), online=online))
    publish_many([(user_group(other), event) for other in co_member_ids])


def notify_membership(user_id, chat_id, event: str) -> None:
    """Tell a user's connections they joined or left a chat; they start or stop receiving it."""
    publish(user_group(user_id), {"type": "user.chat", "chat_id": str(chat_id), "event": event})


def announce_chat_updated(chat_id, *, skip_user=None, only_user=None) -> None:
    """`chat` `updated` with the chat object as each member sees it (a rename, a member added or
    gone, a member's own notification setting): to every member but `skip_user`, or to
    `only_user` alone. Reads the database: call it after the commit (`on_commit`)."""
    if only_user is not None:
        user_ids = [only_user]
    else:
        user_ids = [u for u in selectors.member_ids(chat_id) if u != skip_user]
    chats = selectors.chat_objects_by_member(chat_id, user_ids)
    publish_many(
        [
            (
                user_group(user_id),
                user_frame_event(protocol.chat_frame(chat_id=chat_id, event="updated", chat=chat)),
            )
            for user_id, chat in chats.items()
        ]
    )


def notify_banned(user_id) -> None:
    publish(user_group(user_id), {"type": "user.banned"})


def notify_logged_out(user_id) -> None:
    """A login of the user ended: their sockets re-check theirs (those of an ended login close)."""
    publish(user_group(user_id), {"type": "user.standing"})
