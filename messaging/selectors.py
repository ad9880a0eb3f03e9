"""Reads of messaging: chat lists, history pages, the chat log since a rev, sync replays, co-members."""

from dataclasses import dataclass
from functools import cached_property

from django.db.models import Count, OuterRef, Prefetch, Q, Subquery
from django.db.models.functions import Coalesce

from messaging import metrics, protocol, storage
from messaging.errors import NotFound, NotMember
from messaging.models import Chat, Membership, Message, MessageEdit, ReadReceipt

HISTORY_DEFAULT_LIMIT = 50
HISTORY_MAX_LIMIT = 200


def member_ids(chat_id) -> list[int]:
    return list(Membership.objects.filter(chat_id=chat_id).values_list("user_id", flat=True))


@dataclass(frozen=True)
class Page:
    messages: list
    has_more: bool


@dataclass(frozen=True)
class SyncPage:
    """What `sync` replays of one chat, and its summary (docs/protocol.md, Resume)."""

    new: list  # the messages with a seq above the client's, by seq
    changed: list  # older messages changed since the client's rev, by rev
    last_seq: int
    rev: int
    has_more: bool

    @cached_property
    def replay(self) -> list[str]:
        """The page's frames, encoded once however many sockets it is replayed to."""
        return [
            *(protocol.encode(protocol.message_frame(message)) for message in self.new),
            *(protocol.encode(protocol.change_frame(message)) for message in self.changed),
        ]


@dataclass(frozen=True)
class SyncRequest:
    """One chat of one `sync` frame: what `user_id` holds of `chat_id`."""

    user_id: int
    chat_id: object  # an int, or whatever the client sent (never a member of it)
    held: protocol.SyncFrom
    limit: int


def sync_page(*, user, chat_id, held: protocol.SyncFrom, limit: int) -> SyncPage:
    """What `user` missed of a chat since `held`, at most `limit` messages in all.

    `NotMember` unless `user` is a member of the chat now (`sync_pages`, for one request).
    """
    (page,) = sync_pages([SyncRequest(user.pk, chat_id, held, limit)])
    if isinstance(page, NotMember):
        raise page
    return page


def sync_pages(requests: list[SyncRequest]) -> list:
    """A `SyncPage`, or `NotMember`, for each request, read in one snapshot of the database.

    Identical reads are made once: requests for the same chat from the same position
    (a reconnect storm: every member of a chat missed the same messages) share one
    page, and its frames are encoded once (`SyncPage.replay`). Membership is read for
    every request in one query, in the same snapshot: the database decides, not what
    the socket last heard.

    The summary's rev is the highest R such that the client then holds every change up
    to R: the chat's rev when nothing is left; with more left, the client's own rev when
    new messages filled the page, else the last change sent; for a client that gave no
    rev (the version 1 form), the chat's rev when nothing is left, else 0. The frames
    and the summary come from the same snapshot, so the rev never claims a change that
    was not sent.
    """
    asked = [r for r in requests if isinstance(r.chat_id, int)]  # protocol.parse_id: else no row
    pages: dict[tuple, SyncPage] = {}
    with storage.snapshot():
        members = set(
            Membership.objects.filter(
                chat_id__in={r.chat_id for r in asked}, user_id__in={r.user_id for r in asked}
            ).values_list("chat_id", "user_id")
        )
        admitted = [r for r in asked if (r.chat_id, r.user_id) in members]
        wanted = {_page_key(r) for r in admitted}
        chat_revs = dict(
            Chat.objects.filter(pk__in={key[0] for key in wanted}).values_list("pk", "last_rev")
        )
        for key in wanted:
            pages[key] = _read_sync_page(*key, chat_rev=chat_revs.get(key[0]) or 0)
    metrics.SYNC_REQUESTS.inc(len(requests))
    metrics.SYNC_PAGES_READ.inc(len(pages))
    admitted_ids = {id(r) for r in admitted}
    return [pages[_page_key(r)] if id(r) in admitted_ids else NotMember() for r in requests]


def _page_key(request: SyncRequest) -> tuple:
    return (request.chat_id, request.held.seq, request.held.rev, request.limit)


def _read_sync_page(chat_id: int, seq: int, rev: int | None, limit: int, *, chat_rev: int):
    new = storage.framed_messages(chat_id, "m.seq > %s", [seq], "seq", limit + 1)
    has_more = len(new) > limit
    new = new[:limit]
    changed = []
    if rev is not None and not has_more:
        room = limit - len(new)
        changed = storage.framed_messages(
            chat_id, "m.seq <= %s AND m.rev > %s", [seq, rev], "rev", room + 1
        )
        has_more = len(changed) > room
        changed = changed[:room]
    if not has_more:
        summary_rev = chat_rev
    elif rev is None:
        summary_rev = 0
    else:
        summary_rev = changed[-1].rev if changed else rev
    last_seq = new[-1].seq if new else seq
    return SyncPage(new=new, changed=changed, last_seq=last_seq, rev=summary_rev, has_more=has_more)


def changes(*, chat, since: int, limit: int) -> Page:
    """The chat's messages whose latest change is after rev `since`, ascending by rev."""
    rows = list(Message.objects.framed(chat.pk).filter(rev__gt=since).order_by("rev")[: limit + 1])
    return Page(messages=rows[:limit], has_more=len(rows) > limit)


def changed_between(*, chat_id, after_rev: int, upto_rev: int, limit: int) -> list:
    """The messages whose current rev lies in (after_rev, upto_rev], by rev: what fills a
    hole in the live log (a rev in it that no message carries was superseded)."""
    messages = Message.objects.framed(chat_id).filter(rev__gt=after_rev, rev__lte=upto_rev)
    return list(messages.order_by("rev")[:limit])


def edit_history(message) -> list[dict]:
    """A message's texts, oldest first, the current one last; `NotFound` once deleted."""
    if message.deleted_at is not None:
        raise NotFound("This message was deleted.")
    earlier = MessageEdit.objects.filter(chat_id=message.chat_id, message=message).order_by("id")
    return [
        *(protocol.edit_data(edit.text, edit.edited_at) for edit in earlier),
        protocol.edit_data(message.text, message.edited_at or message.created_at),
    ]


def history(*, chat, after: int | None, before: int | None, limit: int) -> Page:
    """A page of a chat's messages, ascending by seq.

    No cursor: the latest page. `after`: upward from it (up to `before` if given),
    `has_more` meaning newer ones exist. `before` alone: the page just older than
    it, `has_more` meaning older ones exist.
    """
    messages = Message.objects.framed(chat.pk)
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
    Every member's read and delivered positions come along, for "Seen" and "Delivered".
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
            Prefetch(
                "read_receipts",
                queryset=ReadReceipt.objects.only("chat", "user", "seq", "delivered_seq"),
            ),
        )
        .order_by("-activity", "-id")
    )


def chat_objects(user, chats) -> list[dict]:
    """The chat objects of `chats` (from `chats_for_list(user)`) as `user` sees them."""
    last = last_messages(chats)
    return [
        protocol.chat_data(
            chat,
            viewer_id=user.pk,
            last_message=last.get(chat.pk),
            unread_count=chat.unread_count,
            read_seq=chat.read_seq,
        )
        for chat in chats
    ]


def chat_object(user, chat_id) -> dict:
    """One chat of the user's, as a chat object; `NotMember` if they are not a member."""
    chat = chats_for_list(user).filter(pk=chat_id).first()
    if chat is None:
        raise NotMember()
    return chat_objects(user, [chat])[0]


def chat_objects_by_member(chat_id, user_ids) -> dict[int, dict]:
    """The chat object as each of `user_ids` (members) sees it, in a fixed number of queries."""
    chat = (
        Chat.objects.filter(pk=chat_id)
        .prefetch_related(
            Prefetch("memberships", queryset=Membership.objects.select_related("user")),
            Prefetch(
                "read_receipts",
                queryset=ReadReceipt.objects.only("chat", "user", "seq", "delivered_seq"),
            ),
        )
        .first()
    )
    if chat is None or not user_ids:
        return {}
    read_seqs = {r.user_id: r.seq for r in chat.read_receipts.all()}
    unread = (
        Message.objects.filter(
            chat_id=chat_id, seq__gt=OuterRef("read_seq"), deleted_at__isnull=True
        )
        .exclude(sender_id=OuterRef("user_id"))
        .order_by()
        .values("chat")
        .annotate(count=Count("id"))
        .values("count")
    )
    receipts = ReadReceipt.objects.filter(chat_id=chat_id, user_id=OuterRef("user_id"))
    counts = dict(
        Membership.objects.filter(chat_id=chat_id, user_id__in=user_ids)
        .annotate(read_seq=Coalesce(Subquery(receipts.values("seq")[:1]), 0))
        .annotate(unread=Coalesce(Subquery(unread), 0))
        .values_list("user_id", "unread")
    )
    last = last_messages([chat]).get(chat.pk)
    return {
        user_id: protocol.chat_data(
            chat,
            viewer_id=user_id,
            last_message=last,
            unread_count=unread_count,
            read_seq=read_seqs.get(user_id, 0),
        )
        for user_id, unread_count in counts.items()
    }


def last_messages(chats) -> dict[int, Message]:
    if not chats:
        return {}
    condition = Q()
    for chat in chats:
        if chat.last_seq:
            condition |= Q(chat_id=chat.pk, seq=chat.last_seq)
    if not condition:
        return {}
    framed = Message.objects.framed(*(chat.pk for chat in chats)).filter(condition)
    return {message.chat_id: message for message in framed}
