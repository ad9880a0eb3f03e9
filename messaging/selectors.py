"""Reads of messaging: chat lists, history pages, sync replays, co-members."""

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count, OuterRef, Prefetch, Q, Subquery
from django.db.models.functions import Coalesce

from messaging.errors import NotMember
from messaging.models import Chat, Membership, Message, ReadReceipt

HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 200


def member_ids(chat_id) -> list[int]:
    return list(Membership.objects.filter(chat_id=chat_id).values_list("user_id", flat=True))


@dataclass(frozen=True)
class Page:
    messages: list
    has_more: bool


def missed_messages(*, user, chat_id, after_seq: int, limit: int) -> Page:
    """The messages after `after_seq` in seq order, at most `limit`, for `sync`.

    `NotMember` unless `user` is a member of the chat now, in the same transaction as the read:
    the database decides, not what the socket last heard.
    """
    if not isinstance(chat_id, int):  # an id no row can have (protocol.parse_id)
        raise NotMember()
    with transaction.atomic():
        if not Membership.objects.filter(chat_id=chat_id, user=user).exists():
            raise NotMember()
        return messages_after(chat_id=chat_id, after_seq=after_seq, limit=limit)


def messages_after(*, chat_id, after_seq: int, limit: int) -> Page:
    """A chat's messages after `after_seq`, for delivery to its members' sockets (the sequencer
    fills a hole with these; the sockets deliver only chats their user is in)."""
    rows = list(
        Message.objects.filter(chat_id=chat_id, seq__gt=after_seq).order_by("seq")[: limit + 1]
    )
    return Page(messages=rows[:limit], has_more=len(rows) > limit)


def history(*, chat, after: int | None, before: int | None, limit: int) -> Page:
    """A page of a chat's messages, ascending by seq.

    No cursor: the latest page. `after`: upward from it (up to `before` if given),
    `has_more` meaning newer ones exist. `before` alone: the page just older than
    it, `has_more` meaning older ones exist.
    """
    messages = Message.objects.filter(chat=chat)
    if before is not None:
        messages = messages.filter(seq__lt=before)
    if after is not None:
        rows = list(messages.filter(seq__gt=after).order_by("seq")[: limit + 1])
        return Page(messages=rows[:limit], has_more=len(rows) > limit)
    rows = list(messages.order_by("-seq")[: limit + 1])
    return Page(messages=rows[:limit][::-1], has_more=len(rows) > limit)


def chats_for_list(user):
    """The user's chats, most recent activity first, annotated with `read_seq` and `unread_count`.

    `unread_count` counts messages after the read position sent by others and not deleted.
    Every member's read position comes along, for "Seen" receipts.
    """
    receipts = ReadReceipt.objects.filter(chat=OuterRef("pk"), user=user).values("seq")[:1]
    unread = (
        Message.objects.filter(
            chat=OuterRef("pk"), seq__gt=OuterRef("read_seq"), deleted_at__isnull=True
        )
        .exclude(sender=user)
        .order_by()
        .values("chat")
        .annotate(count=Count("id"))
        .values("count")
    )
    return (
        Chat.objects.for_user(user)
        .annotate(read_seq=Coalesce(Subquery(receipts), 0))
        .annotate(unread_count=Coalesce(Subquery(unread), 0))
        .annotate(activity=Coalesce("last_message_at", "created_at"))
        .prefetch_related(
            Prefetch("memberships", queryset=Membership.objects.select_related("user")),
            Prefetch("read_receipts", queryset=ReadReceipt.objects.only("chat", "user", "seq")),
        )
        .order_by("-activity", "-id")
    )


def last_messages(chats) -> dict[int, Message]:
    if not chats:
        return {}
    condition = Q()
    for chat in chats:
        if chat.last_seq:
            condition |= Q(chat_id=chat.pk, seq=chat.last_seq)
    if not condition:
        return {}
    return {message.chat_id: message for message in Message.objects.filter(condition)}
