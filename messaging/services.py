"""Every write of messaging: chats, members, messages, read positions, moderation.

Socket consumer, REST views and admin all call these; each validates, writes in
one transaction and announces the result to live connections after commit.
"""

import threading

from django.contrib.auth import get_user_model
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from messaging import events, protocol
from messaging.errors import BadRequest, Forbidden, NotFound, NotMember, Unavailable
from messaging.models import Chat, Membership, Message, ReadReceipt

# Held from a message's seq allocation until its broadcast has been handed to the
# channel layer, so one process publishes a chat's messages in seq order.
_publish_order = threading.Lock()


def _unavailable_on_database_error(function):
    """A database that is down or unreachable becomes `unavailable`: nothing was stored."""

    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (IntegrityError, NotImplementedError):
            raise
        except DatabaseError as exc:
            raise Unavailable() from exc

    wrapper.__name__ = function.__name__
    wrapper.__doc__ = function.__doc__
    return wrapper


def access_chat(*, user, chat_id) -> Chat:
    """The chat if `user` is a member; `NotMember` whether it is missing or forbidden."""
    if chat_id is None:
        raise NotMember()
    chat = Chat.objects.for_user(user).filter(pk=chat_id).first()
    if chat is None:
        raise NotMember()
    return chat


def membership_of(*, user, chat_id) -> Membership:
    membership = (
        Membership.objects.filter(chat_id=chat_id, user=user).select_related("chat").first()
    )
    if membership is None:
        raise NotMember()
    return membership


def _active_users(user_ids) -> list:
    users = list(get_user_model().objects.filter(pk__in=user_ids, is_active=True))
    if len(users) != len(set(user_ids)):
        raise BadRequest("Unknown user id.")
    return users


def _join(chat: Chat, user, role=Membership.Role.MEMBER) -> bool:
    """Make `user` a member; False if already one."""
    _, created = Membership.objects.get_or_create(chat=chat, user=user, defaults={"role": role})
    if created:
        ReadReceipt.objects.get_or_create(chat=chat, user=user)
        events.on_commit(events.notify_membership, user.pk, chat.pk, "added")
    return created


@_unavailable_on_database_error
def create_chat(*, creator, member_ids, title: str = "") -> tuple[Chat, bool]:
    """Create a chat of `creator` and `member_ids`; one other member and no title is their direct chat.

    Returns (chat, created). The direct chat of a pair is unique in the database,
    so two racing requests get the same chat.
    """
    title = (title or "").strip()
    others = _active_users(set(member_ids) - {creator.pk})
    if len(others) == 1 and not title:
        return _direct_chat(creator, others[0])
    if not others and not title:
        raise BadRequest("A chat needs another member or a title.")
    with transaction.atomic():
        chat = Chat.objects.create(title=title, created_by=creator)
        _join(chat, creator, Membership.Role.OWNER)
        for user in others:
            _join(chat, user)
    return chat, True


def _direct_chat(creator, other) -> tuple[Chat, bool]:
    low, high = sorted([creator.pk, other.pk])
    key = f"{low}:{high}"
    existing = Chat.objects.filter(direct_key=key).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            chat = Chat.objects.create(is_direct=True, direct_key=key, created_by=creator)
            _join(chat, creator, Membership.Role.OWNER)
            _join(chat, other)
    except IntegrityError:
        return Chat.objects.get(direct_key=key), False
    return chat, True


@_unavailable_on_database_error
def add_member(*, actor, chat_id, user_id) -> tuple[Chat, bool]:
    """Any member adds a user to a group chat. Returns (chat, created)."""
    chat = access_chat(user=actor, chat_id=chat_id)
    if chat.is_direct:
        raise BadRequest("A direct chat cannot take more members.")
    (user,) = _active_users([user_id])
    with transaction.atomic():
        created = _join(chat, user)
    return chat, created


@_unavailable_on_database_error
def remove_member(*, actor, chat_id, user_id, by_moderator: bool = False) -> None:
    """A member leaves, or the owner (or a moderator) removes one.

    When the owner leaves, the longest-standing member becomes the owner.
    """
    if by_moderator:
        chat = Chat.objects.filter(pk=chat_id).first()
        if chat is None:
            raise NotMember()
    else:
        actor_membership = membership_of(user=actor, chat_id=chat_id)
        chat = actor_membership.chat
        if str(user_id) != str(actor.pk) and actor_membership.role != Membership.Role.OWNER:
            raise Forbidden("Only the chat's owner can remove other members.")
    if chat.is_direct and not by_moderator:
        raise BadRequest("Nobody can leave a direct chat.")
    with transaction.atomic():
        membership = (
            Membership.objects.select_for_update().filter(chat=chat, user_id=user_id).first()
        )
        if membership is None:
            raise NotFound("That user is not a member of this chat.")
        membership.delete()
        if membership.role == Membership.Role.OWNER:
            heir = Membership.objects.filter(chat=chat).order_by("joined_at", "id").first()
            if heir is not None:
                heir.role = Membership.Role.OWNER
                heir.save(update_fields=["role"])
        events.on_commit(events.notify_membership, membership.user_id, chat.pk, "removed")


@_unavailable_on_database_error
def send_message(
    *, sender, chat_id, text, client_message_id: str | None = None
) -> tuple[Message, bool]:
    """Store a message under the chat's next seq, then broadcast it. Returns (message, created).

    The seq is taken by incrementing `Chat.last_seq` in the transaction that
    stores the message: the row lock makes concurrent senders queue, so seqs are
    gap-free and in commit order. A repeated `client_message_id` returns the
    stored message and creates nothing.
    """
    text = protocol.parse_text(text)
    client_message_id = protocol.parse_client_message_id(client_message_id)
    if chat_id is None:
        raise NotMember()
    if client_message_id is not None:
        stored = _stored_retry(sender, chat_id, client_message_id)
        if stored is not None:
            return stored, False
    try:
        with _publish_order, transaction.atomic():
            now = timezone.now()
            if not Chat.objects.filter(pk=chat_id).update(
                last_seq=F("last_seq") + 1, last_message_at=now
            ):
                raise NotMember()
            membership = Membership.objects.filter(chat_id=chat_id, user=sender).first()
            if membership is None:
                raise NotMember()
            if membership.muted:
                raise Forbidden("You are muted in this chat.")
            seq = Chat.objects.filter(pk=chat_id).values_list("last_seq", flat=True).get()
            message = Message.objects.create(
                chat_id=chat_id,
                seq=seq,
                sender=sender,
                text=text,
                client_message_id=client_message_id,
                created_at=now,
            )
            events.on_commit(events.broadcast_message, message)
    except IntegrityError:
        # A concurrent retry with the same client_message_id won the race.
        stored = _stored_retry(sender, chat_id, client_message_id) if client_message_id else None
        if stored is None:
            raise
        return stored, False
    return message, True


def _stored_retry(sender, chat_id, client_message_id) -> Message | None:
    stored = Message.objects.filter(sender=sender, client_message_id=client_message_id).first()
    if stored is None:
        return None
    if str(stored.chat_id) != str(chat_id):
        raise BadRequest("This clientMessageId was already used in another chat.")
    membership_of(user=sender, chat_id=chat_id)
    return stored


@_unavailable_on_database_error
def mark_read(*, user, chat_id, message_id=None) -> tuple[ReadReceipt, bool]:
    """Move the user's read position forward to a message (default: the latest).

    Returns (receipt, moved). A position never moves backwards: such a call
    changes nothing and announces nothing.
    """
    chat = access_chat(user=user, chat_id=chat_id)
    messages = Message.objects.filter(chat=chat)
    if message_id is None:
        message = messages.order_by("-seq").first()
    else:
        message = messages.filter(pk=message_id).first()
        if message is None:
            raise NotFound("No such message in this chat.")
    receipt, _ = ReadReceipt.objects.get_or_create(chat=chat, user=user)
    if message is None:
        return receipt, False
    now = timezone.now()
    with transaction.atomic():
        moved = ReadReceipt.objects.filter(pk=receipt.pk, seq__lt=message.seq).update(
            message=message, seq=message.seq, read_at=now
        )
        receipt.refresh_from_db()
        if moved:
            events.on_commit(events.broadcast_read, receipt)
    return receipt, bool(moved)


@_unavailable_on_database_error
def delete_message(*, message: Message, moderator) -> bool:
    """Hide a message's text from everybody; members' sockets receive `delete`."""
    if message.deleted_at is not None:
        return False
    with transaction.atomic():
        message.deleted_at = timezone.now()
        message.deleted_by = moderator
        message.save(update_fields=["deleted_at", "deleted_by"])
        events.on_commit(events.broadcast_delete, message)
    return True


@_unavailable_on_database_error
def restore_message(*, message: Message) -> bool:
    """Undo a deletion; the text reappears in history and sync."""
    if message.deleted_at is None:
        return False
    message.deleted_at = None
    message.deleted_by = None
    message.save(update_fields=["deleted_at", "deleted_by"])
    return True


@_unavailable_on_database_error
def set_muted(*, chat_id, user_id, muted: bool) -> bool:
    """Mute or unmute a member: a muted member's sends are refused with `forbidden`."""
    return bool(Membership.objects.filter(chat_id=chat_id, user_id=user_id).update(muted=muted))


@_unavailable_on_database_error
def ban_user(*, user) -> None:
    """Deactivate a user: their tokens stop working and every socket of theirs closes."""
    with transaction.atomic():
        user.is_active = False
        user.save(update_fields=["is_active"])
        events.on_commit(events.notify_banned, user.pk)
