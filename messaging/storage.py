"""The SQL of the message hot path: a batch of messages in a constant number of statements.

`services.store_messages` runs once per batch of the socket path, hundreds of
times a second; the ORM's per-query and per-object costs were most of its
time (docs/benchmarks.md). These few statements are plain SQL that SQLite
(3.35+) and PostgreSQL both run; everything else stays in the ORM.
"""

from django.db import connection
from django.db.models.base import ModelState

from messaging.models import Chat, Membership, Message

_quote = connection.ops.quote_name
CHAT = _quote(Chat._meta.db_table)
MEMBERSHIP = _quote(Membership._meta.db_table)
MESSAGE = _quote(Message._meta.db_table)


def _marks(values) -> str:
    return ", ".join(["%s"] * len(values))


def memberships(chat_ids: set, user_ids: set) -> dict[tuple[int, int], bool]:
    """(chat id, user id) -> muted, for the memberships among those chats and users."""
    if not chat_ids or not user_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT chat_id, user_id, muted FROM {MEMBERSHIP}"
            f" WHERE chat_id IN ({_marks(chat_ids)}) AND user_id IN ({_marks(user_ids)})",
            [*chat_ids, *user_ids],
        )
        return {(chat_id, user_id): bool(muted) for chat_id, user_id, muted in cursor.fetchall()}


def stored_client_ids(sender_ids: set, client_ids: set) -> dict[tuple[int, str], Message]:
    """Messages already stored under these (sender, clientMessageId) pairs (usually none)."""
    if not client_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {MESSAGE} WHERE sender_id IN ({_marks(sender_ids)})"
            f" AND client_message_id IN ({_marks(client_ids)})",
            [*sender_ids, *client_ids],
        )
        ids = [row[0] for row in cursor.fetchall()]
    if not ids:
        return {}
    return {(m.sender_id, m.client_message_id): m for m in Message.objects.filter(pk__in=ids)}


def allocate_seqs(counts: dict[int, int], now) -> dict[int, int]:
    """Add `counts[chat]` to each chat's `last_seq`; the new values. Inside a transaction.

    The rows are locked in id order first where the database can (PostgreSQL), so
    two processes storing into the same chats cannot deadlock; SQLite locks the
    whole database for the write transaction anyway.
    """
    chat_ids = sorted(counts)
    with connection.cursor() as cursor:
        if connection.features.has_select_for_update:
            cursor.execute(
                f"SELECT id FROM {CHAT} WHERE id IN ({_marks(chat_ids)}) ORDER BY id FOR UPDATE",
                chat_ids,
            )
        cases = " ".join(["WHEN %s THEN %s"] * len(chat_ids))
        params = [value for chat_id in chat_ids for value in (chat_id, counts[chat_id])]
        cursor.execute(
            f"UPDATE {CHAT} SET last_seq = last_seq + CASE id {cases} END, last_message_at = %s"
            f" WHERE id IN ({_marks(chat_ids)}) RETURNING id, last_seq",
            [*params, connection.ops.adapt_datetimefield_value(now), *chat_ids],
        )
        return dict(cursor.fetchall())


def insert_messages(rows: list[tuple], now) -> list[int]:
    """Insert (chat id, seq, sender id, text, client id) rows created at `now`; their ids."""
    stamp = connection.ops.adapt_datetimefield_value(now)
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(rows))
    params = [value for row in rows for value in (*row, stamp)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {MESSAGE} (chat_id, seq, sender_id, text, client_message_id, created_at)"
            f" VALUES {values} RETURNING id",
            params,
        )
        return [row[0] for row in cursor.fetchall()]


def message_instance(**fields) -> Message:
    """A Message for a row just inserted, without the cost of `Model.__init__`."""
    message = Message.__new__(Message)
    message._state = ModelState()
    message._state.adding = False
    message._state.db = connection.alias
    message.__dict__.update(fields, deleted_at=None, deleted_by_id=None)
    return message
