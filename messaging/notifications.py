"""Who is due a notification of new messages, the claim that decides it once, and the outbox.

The rule: a member is notified of a chat NOTIFY_DELAY_MS after the first message,
from someone else, past their position in it: the furthest of what they were
last notified of (`ReadReceipt.notified_seq`), what one of their devices holds
(`delivered_seq`) and what they read (`seq`). A device that marks it delivered
or read by then moves the position past it: nothing goes out. Every message up
to the chat's latest at that moment is folded into the one notification. Never
of a chat the member muted (`notifications_muted`), never to a banned user.

A claim moves the members' `notified_seq` and writes the outbox rows
(`Notification`, `NotificationDispatch`) in one transaction, under the receipts'
row locks (taken with SKIP LOCKED on PostgreSQL; SQLite has one writer at a
time), reading each position again under the lock: however many processes
claim at once, each notification is decided once. Members notified of the same
messages share one notification, so the webhook is called once for them all.
Sending happens after the commit (`messaging/notifier.py`); a dispatch is taken
with a lease, so no two processes send the same one. Nothing here runs in, or
locks anything of, the transaction that stores messages.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, Max, OuterRef
from django.db.models.functions import Greatest

from messaging.models import (
    Chat,
    Membership,
    Message,
    Notification,
    NotificationDispatch,
    PushSubscription,
    ReadReceipt,
)

PREVIEW_CHARS = 120
LEASE = timedelta(seconds=60)  # a taken dispatch is someone's for this long (> a request's timeout)
# Seconds before the next attempt after the 1st, 2nd… failed one; then it is given up.
RETRY_DELAYS = (1, 5, 30, 120, 600, 1800, 3600)
KEEP = timedelta(hours=1)  # finished notifications are deleted after this
WEBHOOK_FIELDS = (
    "type",
    "chatId",
    "messageId",
    "seq",
    "senderId",
    "senderName",
    "preview",
    "count",
    "userIds",
)

# What became of a dispatch.
SENT = "sent"
RETRY = "retry"  # a network error, 429 or 5xx: another attempt after a backoff
GONE = "gone"  # 404 or 410 from the push service: the subscription ended
REJECTED = "rejected"  # another answer: trying again would not change it
REFUSED = "refused"  # the push endpoint no longer passes the address check
DROPPED = "dropped"  # nothing to say any more (deleted messages, a member who left or muted)
FAILED = "failed"  # still failing after the last retry


def notify_delay() -> timedelta:
    return timedelta(milliseconds=settings.NOTIFY_DELAY_MS)


# ---------------------------------------------------------------- which chats to look at


def latest_message_id() -> int:
    return Message.objects.order_by("-id").values_list("id", flat=True).first() or 0


def chats_with_messages_after(message_id: int) -> dict[int, int]:
    """chat id -> its latest message id, for the chats with messages past `message_id`
    (a range of the primary key: cheap whatever the size of the table)."""
    rows = (
        Message.objects.filter(id__gt=message_id)
        .order_by()
        .values("chat_id")
        .annotate(top=Max("id"))
        .values_list("chat_id", "top")
    )
    return dict(rows)


def chats_active_since(moment) -> list[int]:
    """Chats with a message since `moment`: what a notifier that was away may have missed
    (a scan of the chats: once, at start)."""
    return list(Chat.objects.filter(last_message_at__gte=moment).values_list("id", flat=True))


# ---------------------------------------------------------------- who is due


@dataclass(frozen=True)
class Due:
    """A member due a notification of a chat, as read before the claim."""

    receipt_id: int
    chat_id: int
    user_id: int
    last_seq: int


def due_members(chat_ids, *, now, limit: int = 5000) -> list[Due]:
    """The members of these chats due a notification now (the rule above, in one query).

    Without a webhook, only members with a push subscription: nobody else could be told.
    """
    if not chat_ids:
        return []
    position = Greatest("notified_seq", "delivered_seq", "seq")
    receipts = (
        ReadReceipt.objects.filter(chat_id__in=chat_ids, user__is_active=True)
        .annotate(position=position, last_seq=F("chat__last_seq"))
        .filter(last_seq__gt=F("position"))
        .filter(
            Exists(
                Membership.objects.filter(
                    chat_id=OuterRef("chat_id"),
                    user_id=OuterRef("user_id"),
                    notifications_muted=False,
                )
            ),
            Exists(
                Message.objects.filter(
                    chat_id=OuterRef("chat_id"),
                    seq__gt=OuterRef("position"),
                    created_at__lte=now - notify_delay(),
                    deleted_at__isnull=True,
                ).exclude(sender_id=OuterRef("user_id"))
            ),
        )
    )
    if not settings.NOTIFY_WEBHOOK_URL:
        receipts = receipts.filter(
            Exists(PushSubscription.objects.filter(user_id=OuterRef("user_id")))
        )
    rows = receipts.order_by().values_list("id", "chat_id", "user_id", "last_seq")[:limit]
    return [Due(*row) for row in rows]


# ---------------------------------------------------------------- the claim


def claim(due: list[Due], *, now) -> list[Notification]:
    """Decide the notifications of these members, once: chat by chat, a transaction each."""
    by_chat: dict[int, list[Due]] = defaultdict(list)
    for member in due:
        by_chat[member.chat_id].append(member)
    made = []
    for chat_id, members in sorted(by_chat.items()):
        made += claim_chat(chat_id, members, now=now)
    return made


def claim_chat(chat_id: int, members: list[Due], *, now) -> list[Notification]:
    """Under the receipts' locks, read each member's position again (a device may have moved
    it, another process may have claimed it), fold what is due and move `notified_seq` to the
    chat's last seq as the candidates saw it; later messages wait for their own turn."""
    last_seq = max(member.last_seq for member in members)
    cutoff = now - notify_delay()
    with transaction.atomic():
        rows = list(
            ReadReceipt.objects.select_for_update(skip_locked=True)
            .filter(id__in=[m.receipt_id for m in members], notified_seq__lt=last_seq)
            .values_list("id", "user_id", "notified_seq", "delivered_seq", "seq")
        )
        if not rows:
            return []
        positions = {row[0]: (row[1], max(row[2:])) for row in rows}
        low = min(position for _, position in positions.values())
        messages = list(
            Message.objects.filter(
                chat_id=chat_id, seq__gt=low, seq__lte=last_seq, deleted_at__isnull=True
            )
            .order_by("seq")
            .values_list("id", "seq", "sender_id", "created_at")
        )
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        claimed = []
        for receipt_id, (user_id, position) in positions.items():
            folded = [m for m in messages if m[1] > position and m[2] != user_id]
            if not folded or folded[0][3] > cutoff:
                continue  # delivered meanwhile, or the first message left is not due yet
            claimed.append(receipt_id)
            groups[tuple(m[0] for m in folded)].append(user_id)
        if not claimed:
            return []
        ReadReceipt.objects.filter(id__in=claimed).update(notified_seq=last_seq)
        return _write_outbox(chat_id, groups, now)


def _write_outbox(chat_id: int, groups: dict, now) -> list[Notification]:
    notifications = Notification.objects.bulk_create(
        [
            Notification(
                chat_id=chat_id,
                message_ids=list(message_ids),
                user_ids=sorted(user_ids),
                created_at=now,
            )
            for message_ids, user_ids in groups.items()
        ]
    )
    if settings.NOTIFY_WEBHOOK_URL:
        NotificationDispatch.objects.bulk_create(
            NotificationDispatch(
                notification=notification,
                kind=NotificationDispatch.Kind.WEBHOOK,
                next_attempt_at=now,
            )
            for notification in notifications
        )
    # One push per subscription of each member, written by the database in one statement per
    # notification: on SQLite this transaction holds the only write lock, which the storing of
    # messages waits for, so it must be short even for a thousand members.
    dispatch, subscription = NotificationDispatch._meta.db_table, PushSubscription._meta.db_table
    moment = connection.ops.adapt_datetimefield_value(now)
    with connection.cursor() as cursor:
        for notification in notifications:
            for chunk in _chunks(notification.user_ids, 2000):
                cursor.execute(
                    f"INSERT INTO {dispatch}"
                    " (notification_id, kind, subscription_id, user_id, attempts,"
                    " next_attempt_at, outcome)"
                    f" SELECT %s, %s, s.id, s.user_id, 0, %s, '' FROM {subscription} s"
                    f" WHERE s.user_id IN ({', '.join(['%s'] * len(chunk))})",
                    [notification.pk, NotificationDispatch.Kind.PUSH, moment, *chunk],
                )
    return notifications


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------- the outbox


def take_due_dispatches(*, now, limit: int) -> list[NotificationDispatch]:
    """Up to `limit` dispatches due now, taken for a lease (no other process sends them
    meanwhile), with their notification and subscription. A push waits while an older one to
    the same subscription is not done (in flight, or waiting for its retry): a device gets its
    notifications in the order they were decided, whichever processes send them."""
    older_unsent = NotificationDispatch.objects.filter(
        subscription_id=OuterRef("subscription_id"), done_at__isnull=True, id__lt=OuterRef("id")
    )
    ids = list(
        NotificationDispatch.objects.filter(done_at__isnull=True, next_attempt_at__lte=now)
        .exclude(Exists(older_unsent))
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )
    if not ids:
        return []
    with transaction.atomic():
        taken = list(
            NotificationDispatch.objects.select_for_update(skip_locked=True)
            .filter(id__in=ids, done_at__isnull=True, next_attempt_at__lte=now)
            .values_list("id", flat=True)
        )
        NotificationDispatch.objects.filter(id__in=taken).update(
            next_attempt_at=now + LEASE, attempts=F("attempts") + 1
        )
    dispatches = list(
        NotificationDispatch.objects.filter(id__in=taken).select_related("subscription")
    )
    # Each notification once (its `user_ids` may name a thousand members), not once per dispatch.
    notifications = Notification.objects.in_bulk({d.notification_id for d in dispatches})
    for dispatch in dispatches:
        dispatch.notification = notifications[dispatch.notification_id]
    return dispatches


def payload_of(notification: Notification) -> dict:
    """What the notification says ({} when nothing goes out), fixed at its first attempt."""
    if notification.payload is None:
        payload = _payload(notification)
        fixed = Notification.objects.filter(pk=notification.pk, payload__isnull=True).update(
            payload=payload
        )
        if fixed:
            notification.payload = payload
        else:  # another process fixed it first: theirs it is
            notification.refresh_from_db(fields=["payload"])
    return notification.payload


def _payload(notification: Notification) -> dict:
    """Leaves out the messages deleted since the claim and the members who since left, muted
    the chat or were banned; {} when nothing or nobody is left."""
    messages = list(
        Message.objects.filter(
            chat_id=notification.chat_id, id__in=notification.message_ids, deleted_at__isnull=True
        )
        .select_related("sender", "chat")
        .order_by("seq")
    )
    still = set(
        Membership.objects.filter(
            chat_id=notification.chat_id,
            user_id__in=notification.user_ids,
            notifications_muted=False,
            user__is_active=True,
        ).values_list("user_id", flat=True)
    )
    user_ids = [user_id for user_id in notification.user_ids if user_id in still]
    if not messages or not user_ids:
        return {}
    latest, count = messages[-1], len(messages)
    chat = latest.chat
    name = latest.sender.username if latest.sender else "someone"
    preview = (
        latest.text if len(latest.text) <= PREVIEW_CHARS else latest.text[:PREVIEW_CHARS] + "…"
    )
    if count == 1:
        body = preview if chat.is_direct else f"{name}: {preview}"
    elif len({m.sender_id for m in messages}) == 1:
        body = f"{count} new messages from {name}"
    else:
        body = f"{count} new messages, the latest from {name}"
    return {
        "type": "message",
        "chatId": str(chat.pk),
        "messageId": str(latest.pk),
        "seq": str(latest.seq),
        "senderId": None if latest.sender_id is None else str(latest.sender_id),
        "senderName": name,
        "preview": preview,
        "count": count,
        "userIds": [str(user_id) for user_id in user_ids],
        "title": name if chat.is_direct else (chat.title or f"Chat {chat.pk}"),
        "body": body,
        "url": f"/#chat-{chat.pk}",
    }


def webhook_fields(payload: dict) -> dict:
    return {key: payload[key] for key in WEBHOOK_FIELDS}


def record(outcomes: dict[int, str], *, now) -> None:
    """Write what became of dispatches: done (sent, dropped, rejected, refused), the
    subscription deleted (gone: 404 or 410 at the push service, taking its pushes along), or
    another attempt after a backoff (retry), given up after the last."""
    by_outcome: dict[str, list[int]] = defaultdict(list)
    for dispatch_id, outcome in outcomes.items():
        by_outcome[outcome].append(dispatch_id)
    dispatches = NotificationDispatch.objects.filter(done_at__isnull=True)
    for outcome in (SENT, DROPPED, REJECTED, REFUSED):
        if by_outcome[outcome]:
            dispatches.filter(id__in=by_outcome[outcome]).update(done_at=now, outcome=outcome)
    if by_outcome[GONE]:
        PushSubscription.objects.filter(
            id__in=NotificationDispatch.objects.filter(id__in=by_outcome[GONE]).values(
                "subscription_id"
            )
        ).delete()
    retries = by_outcome[RETRY]
    if retries:
        attempts = dispatches.filter(id__in=retries).values_list("id", "attempts")
        later: dict[int, list[int]] = defaultdict(list)
        for dispatch_id, attempt in attempts:
            later[attempt].append(dispatch_id)
        for attempt, ids in later.items():
            if attempt > len(RETRY_DELAYS):
                dispatches.filter(id__in=ids).update(done_at=now, outcome=FAILED)
            else:
                delay = timedelta(seconds=RETRY_DELAYS[attempt - 1])
                dispatches.filter(id__in=ids).update(next_attempt_at=now + delay)


def prune(*, now) -> None:
    """Delete notifications older than KEEP with nothing left to send."""
    pending = NotificationDispatch.objects.filter(notification=OuterRef("pk"), done_at__isnull=True)
    Notification.objects.filter(created_at__lt=now - KEEP).exclude(Exists(pending)).delete()
