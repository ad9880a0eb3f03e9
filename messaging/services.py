"""Every write of messaging: chats, members, messages and their changes, read and delivered positions, moderation.

Socket consumer, REST views and admin all call these; each validates, writes in
one transaction and announces the result to live connections after commit.
"""

import threading
from dataclasses import dataclass
from enum import StrEnum

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError, DataError, IntegrityError, connection, transaction
from django.db.models import Value
from django.db.models.functions import Greatest
from django.utils import timezone

from messaging import delivered, events, metrics, protocol, storage, webpush
from messaging.errors import (
    BadRequest,
    Banned,
    Forbidden,
    MessagingError,
    NotFound,
    NotMember,
    TooLarge,
    Unavailable,
)
from messaging.models import (
    AccessChange,
    Chat,
    Exclusion,
    Membership,
    Message,
    MessageEdit,
    PushSubscription,
    Reaction,
    ReadReceipt,
)

REMOVED_BY_MODERATOR = "A moderator removed this member from the chat."

# Held from a message's seq (or a change's rev) allocation until its broadcast has been
# handed to the channel layer (which never waits on Redis), so one process publishes a
# chat's log in rev order and the receivers' sequencers rarely have to hold one back.
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
        # A newcomer is notified of what is sent from now on, not of the chat's history.
        receipt, new = ReadReceipt.objects.get_or_create(
            chat=chat, user=user, defaults={"notified_seq": chat.last_seq}
        )
        if not new and receipt.notified_seq < chat.last_seq:
            ReadReceipt.objects.filter(pk=receipt.pk).update(
                notified_seq=Greatest("notified_seq", Value(chat.last_seq))
            )
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
        if Exclusion.objects.filter(chat=existing).exists():
            raise Forbidden(REMOVED_BY_MODERATOR)
        if Membership.objects.filter(chat=existing).count() < 2:
            # One of the pair left: asking again brings both back, so the answer is
            # always a chat the caller is a member of.
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
    if Exclusion.objects.filter(chat=chat, user=user).exists():
        raise Forbidden(REMOVED_BY_MODERATOR)
    with transaction.atomic():
        created = _join(chat, user)
        if created:
            events.on_commit(_announce_updated, chat.pk, user.pk)
    return chat, created


def _announce_updated(chat_id, skip_user=None) -> None:
    events.announce_chat_updated(chat_id, skip_user=skip_user)


@_unavailable_on_database_error
def rename_chat(*, actor, chat_id, title: str) -> Chat:
    """Any member renames a group chat; the members hear `chat` `updated`."""
    title = (title or "").strip()
    if not title:
        raise BadRequest("A chat's title cannot be blank.")
    chat = access_chat(user=actor, chat_id=chat_id)
    if chat.is_direct:
        raise BadRequest("A direct chat has no title to change.")
    if chat.title != title:
        with transaction.atomic():
            Chat.objects.filter(pk=chat.pk).update(title=title)
            events.on_commit(_announce_updated, chat.pk)
        chat.title = title
    return chat


@_unavailable_on_database_error
def set_notifications_muted(*, user, chat_id, muted: bool) -> bool:
    """The member's own choice to be notified of a chat or not (not the moderation mute).

    Their other devices hear `chat` `updated`. Returns the setting now."""
    membership = membership_of(user=user, chat_id=chat_id)
    if membership.notifications_muted != muted:
        with transaction.atomic():
            Membership.objects.filter(pk=membership.pk).update(notifications_muted=muted)
            events.on_commit(
                lambda: events.announce_chat_updated(membership.chat_id, only_user=user.pk)
            )
    return muted


@_unavailable_on_database_error
def subscribe_push(*, user, endpoint: str, p256dh: str, auth: str) -> tuple[PushSubscription, bool]:
    """Keep a browser's push subscription for `user`. Returns (subscription, created).

    The endpoint must pass `webpush.check_endpoint` (https, public addresses). An endpoint
    already known is the same browser: it now belongs to `user`, with these keys. Past
    WEBPUSH_MAX_SUBSCRIPTIONS a user's oldest subscription goes.
    """
    webpush.check_endpoint(endpoint)
    webpush.check_keys(p256dh, auth)
    with transaction.atomic():
        subscription, created = PushSubscription.objects.update_or_create(
            endpoint=endpoint,
            defaults={"user": user, "p256dh": p256dh, "auth": auth},
            create_defaults={
                "user": user,
                "p256dh": p256dh,
                "auth": auth,
                "created_at": timezone.now(),
            },
        )
        extra = PushSubscription.objects.filter(user=user).order_by("-id")[
            settings.WEBPUSH_MAX_SUBSCRIPTIONS :
        ]
        PushSubscription.objects.filter(pk__in=list(extra.values_list("pk", flat=True))).delete()
    return subscription, created


@_unavailable_on_database_error
def unsubscribe_push(*, user, endpoint: str) -> bool:
    """Forget `user`'s subscription of that endpoint; False when there was none."""
    deleted, _ = PushSubscription.objects.filter(user=user, endpoint=endpoint).delete()
    return bool(deleted)


@_unavailable_on_database_error
def remove_member(*, actor, chat_id, user_id, by_moderator: bool = False, reason: str = "") -> None:
    """A member leaves, or the owner (or a moderator) removes one.

    When the owner leaves, the longest-standing member becomes the owner. A member a
    moderator removed cannot come back until a moderator lets them back (`readmit_member`).
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
        if by_moderator:
            Exclusion.objects.update_or_create(
                chat=chat, user_id=user_id, defaults={"moderator": actor, "reason": reason}
            )
        record_access_change(membership.user_id, AccessChange.Kind.REMOVED, chat_id=chat.pk)
        events.on_commit(events.notify_membership, membership.user_id, chat.pk, "removed")
        if not chat.is_direct:
            events.on_commit(_announce_updated, chat.pk)


@dataclass(frozen=True)
class Outgoing:
    """A message to store: what `send_message` and the batching writer take."""

    sender: object
    chat_id: int | None
    text: str
    client_message_id: str | None = None
    reply_to: int | None = None  # the id of the message it answers; 0 names none


@_unavailable_on_database_error
def send_message(
    *, sender, chat_id, text, client_message_id: str | None = None, reply_to: int | None = None
) -> tuple[Message, bool]:
    """Store a message under the chat's next seq, then broadcast it. Returns (message, created).

    A repeated `client_message_id` returns the stored message and creates
    nothing. The socket path stores through `messaging.realtime.writer` instead, which
    batches many senders into one transaction with the same function.
    """
    text = protocol.parse_text(text)
    client_message_id = protocol.parse_client_message_id(client_message_id)
    with publish_order:
        (result,) = store_messages([Outgoing(sender, chat_id, text, client_message_id, reply_to)])
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
    chat's `last_seq` and `last_rev` grow by its number of new messages
    (gap-free seqs and revs, in commit order), and the messages are inserted.
    Nothing is broadcast here: the caller does it after this returns (after the
    commit).
    """
    results: list = [None] * len(batch)
    try:
        with transaction.atomic():
            fresh, replied, locked = _admit(batch, results)
            if fresh:
                _insert(batch, fresh, results, replied, locked)
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


def _admit(batch: list[Outgoing], results: list) -> tuple[list[int], dict, dict]:
    """Decide each request (inside the storing transaction): the indexes to store, what the
    replies among them answer, and the chats' (last seq, last rev) as locked; the others'
    results are set (a refusal, a stored retry, or the index of the same retry in this
    batch)."""
    chat_ids = {r.chat_id for r in batch if r.chat_id is not None}
    # One round trip on PostgreSQL: the chats locked first, then what is read under the lock.
    with storage.together():
        locked = storage.lock_chats(chat_ids)
        standing = storage.senders_standing(
            {(r.chat_id, r.sender.pk) for r in batch if r.chat_id is not None}
        )
        stored = storage.stored_client_ids(
            {
                (r.chat_id, r.sender.pk, r.client_message_id)
                for r in batch
                if r.client_message_id is not None and r.chat_id is not None
            }
        )
        # Only a batch with replies pays for reading what they answer, in their own chats.
        replied = storage.reply_targets(
            {(r.chat_id, r.reply_to) for r in batch if r.reply_to and r.chat_id is not None}
        )
    locked = locked.result()
    standing, stored, replied = standing.result(), stored.result(), replied.result()
    fresh: list[int] = []
    claimed: dict[tuple, int] = {}
    for index, request in enumerate(batch):
        # Idempotency is per chat (the unique key includes it): the same clientMessageId in
        # another chat is another message.
        key = (request.chat_id, request.sender.pk, request.client_message_id)
        muted, active = standing.get((request.chat_id, request.sender.pk), (None, True))
        if not active:
            results[index] = Banned()
        elif muted is None:
            results[index] = NotMember()
        elif request.client_message_id is not None and key in stored:
            results[index] = (stored[key], False)
        elif muted:
            results[index] = Forbidden("You are muted in this chat.")
        elif request.reply_to is not None and (request.chat_id, request.reply_to) not in replied:
            results[index] = NotFound("The message replied to is not in this chat.")
        elif request.client_message_id is not None and key in claimed:
            results[index] = claimed[key]  # the same retry twice in one batch: resolved below
        else:
            if request.client_message_id is not None:
                claimed[key] = index
            fresh.append(index)
    return fresh, replied, locked


def _store_one(request: Outgoing):
    for _attempt in range(2):  # a client id stored elsewhere meanwhile is found the second time
        try:
            return store_messages([request], retry_singly=False)[0]
        except IntegrityError:
            continue
        except DataError:
            return BadRequest("The database cannot store this message.")
    return NotMember()  # still refused: the chat went away under the message


def _insert(
    batch: list[Outgoing], fresh: list[int], results: list, replied: dict, locked: dict
) -> None:
    per_chat: dict[int, list[int]] = {}
    for index in fresh:
        per_chat.setdefault(batch[index].chat_id, []).append(index)
    now = timezone.now()
    rows, order = [], []
    for chat_id in sorted(per_chat):
        for index in per_chat[chat_id]:
            request = batch[index]
            rows.append(
                (
                    chat_id,
                    request.sender.pk,
                    request.text,
                    request.client_message_id,
                    request.reply_to,
                )
            )
            order.append(index)
    stored = storage.insert_new_messages(rows, now, locked)
    for index, row, (seq, rev, message_id) in zip(order, rows, stored, strict=True):
        chat_id, sender_id, text, client_message_id, reply_to = row
        message = storage.message_instance(
            id=message_id,
            chat_id=chat_id,
            seq=seq,
            rev=rev,
            sender_id=sender_id,
            text=text,
            client_message_id=client_message_id,
            created_at=now,
            deleted_at=None,
            deleted_by_id=None,
            deleted_by_author=False,
            edited_at=None,
            reply_to_id=reply_to,
        )
        message.reply_to_seq = None if reply_to is None else replied[(chat_id, reply_to)]
        message.reaction_rows = []
        results[index] = (message, True)
    metrics.MESSAGES_STORED.inc(len(rows))


# ---------------------------------------------------------------- changes of existing messages


class Action(StrEnum):
    EDIT = "edit"  # the author: new text
    DELETE = "delete"  # the author: final
    REACT = "react"  # a member adds an emoji
    UNREACT = "unreact"  # and takes it back
    MODERATOR_DELETE = "moderator_delete"  # a moderator: restorable
    RESTORE = "restore"  # a moderator undoes a moderator's deletion


MEMBER_ACTIONS = {Action.EDIT, Action.DELETE, Action.REACT, Action.UNREACT}


@dataclass(frozen=True)
class Change:
    """A change of an existing message: what the change services and the socket's change
    writer take. `actor` is the member, or the moderator of the moderator's actions."""

    actor: object
    chat_id: int | None
    message_id: int
    action: Action
    text: str | None = None
    emoji: str | None = None


@dataclass
class Outcome:
    """A change applied (`changed`, under the chat's next rev, to be announced) or found to
    change nothing (no rev taken; `frame` answers the one who asked, and nobody else).

    `frame` is the message's `update` or `delete` frame as of this change, `rev` its rev
    then; `message` is the message object after the whole batch.
    """

    message: Message
    frame: dict
    rev: int
    changed: bool


ReactionRow = storage.ReactionRow


def apply_changes(batch: list[Change]) -> list:
    """Apply a batch of changes in one transaction, each under its chat's next rev.

    Returns, for each change in order, an `Outcome` or the MessagingError refusing
    it. The chats are locked in id order first, so the revs are gap-free, in commit
    order, and in batch order within the batch; every check (author, mute, deleted,
    edit window, reaction limit) reads the state under that lock. Nothing is
    announced here: the caller broadcasts the changed outcomes after this returns,
    in order (`events.broadcast_changes`).
    """
    try:
        return _apply_changes(batch)
    except (IntegrityError, DataError):
        if len(batch) == 1:
            return [BadRequest("The database cannot store this change.")]
        # One bad change never fails the others.
        return [apply_changes([change])[0] for change in batch]


def _apply_changes(batch: list[Change]) -> list:
    results: list = [None] * len(batch)
    chat_ids = {c.chat_id for c in batch if c.chat_id is not None}
    now = timezone.now()
    log = _ChangeLog(now)
    with transaction.atomic():
        # One round trip on PostgreSQL: the chats locked first, then the memberships under it.
        with storage.together():
            locked = storage.lock_chats_for_changes(chat_ids)
            standing = storage.senders_standing(
                {
                    (c.chat_id, c.actor.pk)
                    for c in batch
                    if c.action in MEMBER_ACTIONS and c.chat_id is not None
                }
            )
        last_revs, memberships = locked.result(), standing.result()
        # The messages the batch changes, with their reactions, read under the chats' lock.
        messages = storage.framed_messages_by_key(
            {(c.chat_id, c.message_id) for c in batch if c.message_id and c.chat_id is not None}
        )
        revs = dict(last_revs)
        for index, change in enumerate(batch):
            message = messages.get(change.message_id)
            if message is not None and message.chat_id != change.chat_id:
                message = None
            try:
                changed = _apply(change, message, memberships, now, log)
            except MessagingError as error:
                results[index] = error
                continue
            if changed:
                revs[message.chat_id] += 1
                message.rev = revs[message.chat_id]
                log.dirty[message.pk] = message
            results[index] = Outcome(message, protocol.change_frame(message), message.rev, changed)
        counts = {c: revs[c] - last_revs[c] for c in revs if revs[c] != last_revs[c]}
        if counts:
            allocated = storage.allocate_revs(counts)
            if allocated != {c: revs[c] for c in counts}:
                raise RuntimeError(f"revs moved under the chat lock: {allocated} != {revs}")
            log.write()
    return results


class _ChangeLog:
    """The rows a batch of changes writes, net of changes that undo each other."""

    def __init__(self, now):
        self.now = now
        self.dirty: dict[int, Message] = {}
        self.edits: list[tuple] = []  # (message id, chat id, earlier text, when it was set)
        self.added: dict[tuple, int] = {}  # (message, user, emoji) to insert -> its chat
        self.removed: set[tuple] = set()  # (message, user, emoji) stored, to delete
        self.cleared: set[int] = set()  # messages whose every stored reaction goes

    def add_edit(self, message: Message) -> None:
        self.edits.append(
            (message.pk, message.chat_id, message.text, message.edited_at or message.created_at)
        )

    def add_reaction(self, message: Message, user_id: int, emoji: str) -> None:
        message.reaction_rows.append(ReactionRow(emoji, user_id))
        self.added[(message.pk, user_id, emoji)] = message.chat_id

    def remove_reaction(self, message: Message, user_id: int, emoji: str) -> None:
        message.reaction_rows.remove(ReactionRow(emoji, user_id))
        key = (message.pk, user_id, emoji)
        if self.added.pop(key, None) is None:
            self.removed.add(key)

    def clear_reactions(self, message: Message) -> None:
        message.reaction_rows = []
        self.cleared.add(message.pk)
        for key in [k for k in self.added if k[0] == message.pk]:
            del self.added[key]

    def write(self) -> None:
        # Every statement names the chats: on PostgreSQL, their partitions alone.
        chat_ids = {message.chat_id for message in self.dirty.values()}
        storage.update_messages(
            self.dirty.values(),
            ("rev", "text", "edited_at", "deleted_at", "deleted_by", "deleted_by_author"),
        )
        stamp = connection.ops.adapt_datetimefield_value
        storage.insert_rows(
            MessageEdit,
            ("message_id", "chat_id", "text", "edited_at"),
            [(m, c, text, stamp(when)) for m, c, text, when in self.edits],
        )
        storage.delete_reactions(chat_ids, self.cleared, self.removed)
        now = stamp(self.now)
        storage.insert_rows(
            Reaction,
            ("message_id", "chat_id", "user_id", "emoji", "created_at"),
            [(m, chat, user, emoji, now) for (m, user, emoji), chat in self.added.items()],
        )


def _apply(change: Change, message: Message | None, memberships: dict, now, log) -> bool:
    """Check `change` against the message's state and apply it to `message` in memory (and
    `log`); False when it changes nothing. Refusals come before no-ops: who, then what."""
    actor_id = getattr(change.actor, "pk", None)
    muted = False
    if change.action in MEMBER_ACTIONS:
        muted, active = memberships.get((change.chat_id, actor_id), (None, True))
        if not active:
            raise Banned()
        if muted is None:
            raise NotMember()
    if message is None:
        raise NotFound("No such message in this chat.")
    deleted = message.deleted_at is not None
    if change.action == Action.EDIT:
        if message.sender_id != actor_id:
            raise Forbidden("Only its author can edit a message.")
        if muted:
            raise Forbidden("You are muted in this chat.")
        if deleted:
            raise NotFound("This message was deleted.")
        window = settings.MESSAGE_EDIT_WINDOW_SECONDS
        if window and (now - message.created_at).total_seconds() > window:
            raise Forbidden("This message can no longer be edited.")
        if change.text == message.text:
            return False
        log.add_edit(message)
        message.text, message.edited_at = change.text, now
        return True
    if change.action in (Action.DELETE, Action.MODERATOR_DELETE):
        if change.action == Action.DELETE and message.sender_id != actor_id:
            raise Forbidden("Only its author can delete a message.")
        if deleted:
            return False
        message.deleted_at, message.deleted_by_id = now, actor_id
        message.deleted_by_author = change.action == Action.DELETE
        log.clear_reactions(message)
        return True
    if change.action == Action.RESTORE:
        if deleted and message.deleted_by_author:
            raise Forbidden("Its author deleted this message; that is final.")
        if not deleted:
            return False
        message.deleted_at, message.deleted_by_id = None, None
        return True
    # REACT / UNREACT
    if muted:
        raise Forbidden("You are muted in this chat.")
    if deleted:
        raise NotFound("This message was deleted.")
    present = ReactionRow(change.emoji, actor_id) in message.reaction_rows
    if change.action == Action.UNREACT:
        if not present:
            return False
        log.remove_reaction(message, actor_id, change.emoji)
        return True
    if present:
        return False
    emoji = {row.emoji for row in message.reaction_rows}
    if change.emoji not in emoji and len(emoji) >= protocol.EMOJI_MAX_PER_MESSAGE:
        raise TooLarge(f"A message takes at most {protocol.EMOJI_MAX_PER_MESSAGE} different emoji.")
    log.add_reaction(message, actor_id, change.emoji)
    return True


@_unavailable_on_database_error
def change_message(change: Change) -> Outcome:
    """Apply one change (REST, the admin) and announce it; the outcome, or raises the refusal.

    The socket path goes through `messaging.realtime.writer` instead, which batches
    many changes into one transaction with the same function.
    """
    with publish_order:
        (result,) = apply_changes([change])
        if isinstance(result, MessagingError):
            raise result
        if result.changed:
            # At once outside a transaction, so under publish_order: revs leave in order.
            events.on_commit(events.broadcast_changes, [result])
    return result


def edit_message(*, user, chat_id, message_id, text) -> Outcome:
    text = protocol.parse_text(text)
    return change_message(Change(user, chat_id, message_id, Action.EDIT, text=text))


def delete_own_message(*, user, chat_id, message_id) -> Outcome:
    return change_message(Change(user, chat_id, message_id, Action.DELETE))


def react(*, user, chat_id, message_id, emoji, on: bool = True) -> Outcome:
    emoji = protocol.parse_emoji(emoji)
    action = Action.REACT if on else Action.UNREACT
    return change_message(Change(user, chat_id, message_id, action, emoji=emoji))


def delete_message(*, message: Message, moderator) -> bool:
    """A moderator hides a message's text from everybody; members receive `delete`.

    False when it was deleted already.
    """
    change = Change(moderator, message.chat_id, message.pk, Action.MODERATOR_DELETE)
    return _moderate(message, change)


def restore_message(*, message: Message, moderator=None) -> bool:
    """A moderator undoes a moderator's deletion; members receive `update` with the text.

    False when it was not deleted; `Forbidden` when its author deleted it (final).
    """
    change = Change(moderator, message.chat_id, message.pk, Action.RESTORE)
    return _moderate(message, change)


def _moderate(message: Message, change: Change) -> bool:
    outcome = change_message(change)
    changed = outcome.message
    for field in ("rev", "deleted_at", "deleted_by_id", "deleted_by_author"):
        setattr(message, field, getattr(changed, field))
    return outcome.changed


# ---------------------------------------------------------------- read and delivered positions


def access_message(*, user, chat_id, message_id) -> Message:
    """A message of a chat `user` is a member of, ready for its protocol object."""
    chat = access_chat(user=user, chat_id=chat_id)
    message = Message.objects.framed(chat.pk).filter(pk=message_id).first()
    if message is None:
        raise NotFound("No such message in this chat.")
    return message


@_unavailable_on_database_error
def mark_read(*, user, chat_id, message_id=None) -> tuple[ReadReceipt, bool]:
    """Move the user's read position forward to a message (default: the latest).

    Returns (receipt, moved). A position never moves backwards: such a call
    changes nothing and announces nothing. The delivered position follows it,
    unannounced (a `read` implies it).
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
            message=message,
            seq=message.seq,
            read_at=now,
            delivered_seq=Greatest("delivered_seq", Value(message.seq)),
        )
        receipt.refresh_from_db()
        if moved:
            events.on_commit(events.broadcast_read, receipt)
    return receipt, bool(moved)


@_unavailable_on_database_error
def mark_delivered(*, user, chat_id, seq: int) -> tuple[int, bool]:
    """Move the user's delivered position forward to `seq` (past the chat's last: the last).

    Returns (position, moved). Stored at once; announced at most once a second per
    member and chat, the latest position winning (`messaging.delivered`).
    """
    chat = access_chat(user=user, chat_id=chat_id)
    target = min(seq, chat.last_seq)
    receipts = ReadReceipt.objects.filter(chat=chat, user=user)
    if receipts.filter(delivered_seq__lt=target).update(delivered_seq=target):
        events.on_commit(delivered.announce, chat.pk, user.pk, target)
        return target, True
    position = receipts.values_list("delivered_seq", flat=True).first()
    if position is None:  # a member without a receipt row (joined before receipts existed)
        ReadReceipt.objects.get_or_create(chat=chat, user=user)
        return mark_delivered(user=user, chat_id=chat_id, seq=seq)
    return position, False


@_unavailable_on_database_error
def set_muted(*, chat_id, user_id, muted: bool, until=None) -> bool:
    """Mute or unmute a member: a muted member's sends are refused with `forbidden`.

    `until`: a mute that ends by itself then (None: until unmuted). Returns False when
    nothing changed (not a member, or already in that state).
    """
    until = until if muted else None
    members = Membership.objects.filter(chat_id=chat_id, user_id=user_id)
    unchanged = (
        members.filter(muted=muted, muted_until=until)
        if until
        else members.filter(muted=muted, muted_until__isnull=True)
    )
    if unchanged.exists():
        return False
    return bool(members.update(muted=muted, muted_until=until))


@_unavailable_on_database_error
def readmit_member(*, chat_id, user_id) -> bool:
    """A moderator lets back a member they removed: the removal no longer holds and the user is
    a member again. False when there was no such removal."""
    with transaction.atomic():
        exclusion = Exclusion.objects.filter(chat_id=chat_id, user_id=user_id).first()
        if exclusion is None:
            return False
        exclusion.delete()
        user = get_user_model().objects.get(pk=user_id)
        _join(exclusion.chat, user)
    return True


@_unavailable_on_database_error
def unban_user(*, user) -> bool:
    """Activate a banned user again; they sign in anew (their old logins stay ended)."""
    if user.is_active:
        return False
    user.is_active = True
    user.save(update_fields=["is_active"])
    return True


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
