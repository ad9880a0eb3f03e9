"""Group names and the broadcasts that leave after a commit, through the channel layer."""

import logging
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from biogram.batching import runner_loop
from messaging import protocol

logger = logging.getLogger(__name__)


def chat_group(chat_id) -> str:
    """Every connection of every member of the chat."""
    return f"chat.{chat_id}"


def user_group(user_id) -> str:
    """Every connection of one user."""
    return f"user.{user_id}"


def publish(group: str, event: dict) -> bool:
    """Send one event to a group from synchronous code; False (and logged) when the layer fails.

    A failure never undoes what was stored: clients resume through `sync`.
    """
    try:
        layer = get_channel_layer()
        loop = getattr(runner_loop, "loop", None)
        send_now = getattr(layer, "group_send_nowait", None)
        if loop is not None and send_now is not None and not loop.is_closed():
            # A socket's worker thread: hand it to the server's loop, in order, without waiting.
            loop.call_soon_threadsafe(send_now, group, event)
        else:
            async_to_sync(layer.group_send)(group, event)
    except Exception:
        logger.exception("channel layer send to %s failed", group)
        from messaging import metrics

        metrics.LAYER_SEND_FAILURES.inc()
        return False
    return True


def chat_frame_event(chat_id, frame: dict, *, sender_id=None, seq=None) -> dict:
    """The group event that carries an encoded frame to a chat's members (encoded once)."""
    return {
        "type": "chat.frame",
        "chat_id": str(chat_id),
        "sender_id": None if sender_id is None else str(sender_id),
        "seq": seq,
        "text": protocol.encode(frame),
    }


def user_frame_event(frame: dict) -> dict:
    return {"type": "user.frame", "text": protocol.encode(frame)}


def message_event(message) -> dict:
    event = chat_frame_event(
        message.chat_id,
        protocol.message_frame(message),
        sender_id=message.sender_id,
        seq=message.seq,
    )
    event["stored_at"] = time.time()  # for the fan-out latency histogram (messaging.layers)
    return event


def broadcast_message(message) -> None:
    publish(chat_group(message.chat_id), message_event(message))


def broadcast_read(receipt) -> None:
    publish(
        chat_group(receipt.chat_id), chat_frame_event(receipt.chat_id, protocol.read_frame(receipt))
    )


def broadcast_delete(message) -> None:
    frame = protocol.delete_frame(chat_id=message.chat_id, message_id=message.pk)
    publish(chat_group(message.chat_id), chat_frame_event(message.chat_id, frame))


def notify_membership(user_id, chat_id, event: str) -> None:
    """Tell a user's connections they joined or left a chat; they start or stop receiving it."""
    publish(user_group(user_id), {"type": "user.chat", "chat_id": str(chat_id), "event": event})


def notify_banned(user_id) -> None:
    publish(user_group(user_id), {"type": "user.banned"})


def on_commit(function, *args) -> None:
    """Run `function(*args)` once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: function(*args), robust=True)
