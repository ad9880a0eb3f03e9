"""Every write of messaging: chats, members, messages, read positions, moderation.

Socket consumer, REST views and admin all call these; each validates, writes in
one transaction and announces the result to live connections after commit.
"""

import threading
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import DatabaseError, DataError, IntegrityError, transaction
from django.utils import timezone

from messaging import events, metrics, protocol, storage
from messaging.errors import (
    BadRequest,
    Banned,
    Forbidden,
    MessagingError,
    NotFound,
    NotMember,
    Unavailable,
)
from messaging.models import AccessChange, Chat, Membership, Message, ReadReceipt

# Held from a message's seq allocation until its broadcast has been handed to the
# channel layer (which never waits on Redis), so one process publishes a chat's
# messages in seq order and the receivers' sequencers rarely have to hold one back.
publish_order = threading.Lock()


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
        record_access_change(user.pk, AccessChange.Kind.ADDED, chat_id=chat.pk)
        events.on_commit(events.notify_membership, user.pk, chat.pk, "added")
    return created


def record_access_change(user_id, kind: str, *, chat_id=None) -> None:
    """Note, in the current transaction, that the user's access changed: every process's sockets
    of that user re-check it within a second, even if the live event is lost."""
    AccessChange.objects.create(
        user_id=user_id, kind=kind, chat_id=chat_id, created_at=timezone.now()
    )


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
        if Membership.objects.filter(chat=existing).count() < 2:
            # A moderator removed one of the pair: asking again brings both back,
            # so the answer is always a chat the caller is a member of.
            with transaction.atomic():
                _join(existing, creator)
                _join(existing, other)
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
    if chat.is_direct and not by_moderator and str(user_id) != str(actor.pk):
        # Either may leave; asking for the pair's chat again brings both back.
        raise BadRequest("Nobody can be removed from a direct chat; they can leave it.")
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
        record_access_change(membership.user_id, AccessChange.Kind.REMOVED, chat_id=chat.pk)
        events.on_commit(events.notify_membership, membership.user_id, chat.pk, "removed")


@dataclass(frozen=True)
class Outgoing:
    """A message to store: what `send_message` and the batching writer take."""

    sender: object
    chat_id: int | None
    text: str
    client_message_id: str | None = None


@_unavailable_on_database_error
def send_message(
    *, sender, chat_id, text, client_message_id: str | None = None
) -> tuple[Message, bool]:
    """Store a message under the chat's next seq, then broadcast it. Returns (message, created).

    A repeated `client_message_id` returns the stored message and creates
    nothing. The socket path stores through `messaging.realtime.writer` instead, which
    batches many senders into one transaction with the same function.
    """
    text = protocol.parse_text(text)
    client_message_id = protocol.parse_client_message_id(client_message_id)
    with publish_order:
        (result,) = store_messages([Outgoing(sender, chat_id, text, client_message_id)])
        if isinstance(result, MessagingError):
            raise result
        message, created = result
        if created:
            events.broadcast_messages([message])
    return message, created


def store_messages(batch: list[Outgoing], *, retry_singly: bool = True) -> list:
    """Store a batch of validated messages in one transaction ("group commit").

    Returns, for each request in order, (message, created) or the
    MessagingError that refuses it. In one transaction, in a constant number of
    statements: the chats are locked (in id order, so two writers cannot
    deadlock), the senders' membership, mute and ban are read, repeated
    `client_message_id`s are found (they return the stored message), each
    chat's `last_seq` grows by its number of new messages (gap-free seqs, in
    commit order), and the messages are inserted. Nothing is broadcast here:
    the caller does it after this returns (after the commit).
    """
    results: list = [None] * len(batch)
    try:
        with transaction.atomic():
            fresh = _admit(batch, results)
            if fresh:
                _insert(batch, fresh, results)
    except (IntegrityError, DataError):
        if not retry_singly:
            raise
        # Another process stored one of these client ids meanwhile, or the database
        # refuses one row: one at a time, so one bad message never fails the others.
        results = [_store_one(request) for request in batch]
    for index, result in enumerate(results):
        if isinstance(result, int):
            first = results[result]
            results[index] = (first[0], False) if isinstance(first, tuple) else first
    return results


def _admit(batch: list[Outgoing], results: list) -> list[int]:
    """Decide each request (inside the storing transaction): the indexes to store; the others'
    results are set (a refusal, a stored retry, or the index of the same retry in this batch)."""
    chat_ids = {r.chat_id for r in batch if r.chat_id is not None}
    sender_ids = {r.sender.pk for r in batch}
    storage.lock_chats(chat_ids)
    standing = storage.senders_standing(chat_ids, sender_ids)
    stored = storage.stored_client_ids(
        sender_ids, {r.client_message_id for r in batch if r.client_message_id is not None}
    )
    fresh: list[int] = []
    claimed: dict[tuple, int] = {}
    for index, request in enumerate(batch):
        key = (request.sender.pk, request.client_message_id)
        muted, active = standing.get((request.chat_id, request.sender.pk), (None, True))
        if not active:
            results[index] = Banned()
        elif muted is None:
            results[index] = NotMember()
        elif request.client_message_id is not None and key in stored:
            message = stored[key]
            results[index] = (
                (message, False)
                if message.chat_id == request.chat_id
                else BadRequest("This clientMessageId was already used in another chat.")
            )
        elif muted:
            results[index] = Forbidden("You are muted in this chat.")
        elif request.client_message_id is not None and key in claimed:
            results[index] = claimed[key]  # the same retry twice in one batch: resolved below
        else:
            if request.client_message_id is not None:
                claimed[key] = index
            fresh.append(index)
    return fresh


def _store_one(request: Outgoing):
    for _attempt in range(2):  # a client id stored elsewhere meanwhile is found the second time
        try:
            return store_messages([request], retry_singly=False)[0]
        except IntegrityError:
            continue
        except DataError:
            return BadRequest("The database cannot store this message.")
    return NotMember()  # still refused: the chat went away under the message


def _insert(batch: list[Outgoing], fresh: list[int], results: list) -> None:
    per_chat: dict[int, list[int]] = {}
    for index in fresh:
        per_chat.setdefault(batch[index].chat_id, []).append(index)
    now = timezone.now()
    rows, order = [], []
    last_seqs = storage.allocate_seqs({c: len(i) for c, i in per_chat.items()}, now)
    for chat_id in sorted(per_chat):
        indexes = per_chat[chat_id]
        first = last_seqs[chat_id] - len(indexes) + 1
        for offset, index in enumerate(indexes):
            request = batch[index]
            rows.append(
                (
                    chat_id,
                    first + offset,
                    request.sender.pk,
                    request.text,
                    request.client_message_id,
                )
            )
            order.append(index)
    ids = storage.insert_messages(rows, now)
    for index, row, message_id in zip(order, rows, ids, strict=True):
        chat_id, seq, sender_id, text, client_message_id = row
        message = storage.message_instance(
            id=message_id,
            chat_id=chat_id,
            seq=seq,
            sender_id=sender_id,
            text=text,
            client_message_id=client_message_id,
            created_at=now,
            deleted_at=None,
            deleted_by_id=None,
        )
        results[index] = (message, True)
    metrics.MESSAGES_STORED.inc(len(rows))


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
    """Mute or unmute a member: a muted member's sends are refused with `forbidden`.

    Returns False when nothing changed (not a member, or already in that state).
    """
    members = Membership.objects.filter(chat_id=chat_id, user_id=user_id, muted=not muted)
    return bool(members.update(muted=muted))


@_unavailable_on_database_error
def ban_user(*, user, moderator=None) -> None:
    """Deactivate a user: their tokens stop working and every socket of theirs closes.

    A `moderator` cannot ban themselves, and only a superuser can ban staff, so
    that no moderator can lock out the others or the admins. Banning a user
    already inactive closes any socket left open.
    """
    if moderator is not None:
        if user.pk == moderator.pk:
            raise Forbidden("You cannot ban yourself.")
        if (user.is_staff or user.is_superuser) and not moderator.is_superuser:
            raise Forbidden("Only a superuser can ban staff.")
    with transaction.atomic():
        user.is_active = False
        user.save(update_fields=["is_active"])
        record_access_change(user.pk, AccessChange.Kind.BANNED)
        events.on_commit(events.notify_banned, user.pk)
