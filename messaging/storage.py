"""The SQL of the hot paths: a batch of messages or changes, or of new sockets, in a constant number of statements.

`services.store_messages` runs once per batch of the socket path, hundreds of
times a second, and `chats_and_co_members` once per batch of new sockets; the
ORM's per-query and per-object costs were most of their time
(docs/benchmarks.md). These few statements are plain SQL that SQLite (3.35+)
and PostgreSQL both run; everything else stays in the ORM.
"""

import contextlib
import threading
from typing import NamedTuple

import orjson
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models.base import ModelState
from django.utils import timezone

from messaging.models import Chat, Membership, Message, Reaction

_quote = connection.ops.quote_name
CHAT = _quote(Chat._meta.db_table)
MEMBERSHIP = _quote(Membership._meta.db_table)
MESSAGE = _quote(Message._meta.db_table)
USER = _quote(get_user_model()._meta.db_table)
REACTION = _quote(Reaction._meta.db_table)


def placeholders(values) -> str:
    """`%s, %s, …`, one per value: the body of an `IN (…)` list."""
    return ", ".join(["%s"] * len(values))


def fetch_all(cursor, sql: str, params, width: int) -> list[tuple]:
    """`cursor.execute(sql, params)` and its rows (tuples of `width` values, in no promised order).

    On SQLite the rows come back as one row of JSON: Python's sqlite3 releases and retakes
    the GIL at every row it steps to, and a writer thread retaking the GIL waits for the
    event loop's callback of the moment to end, once per row (a batch of 120 messages read
    and wrote 350 rows: most of the writer's time was that wait; docs/benchmarks.md,
    2026-12-04f). `sql` is a SELECT of plain values (no blobs)."""
    if connection.vendor != "sqlite":
        cursor.execute(sql, params)
        return cursor.fetchall()
    cursor.execute(_as_json(sql, width), params)
    (rows,) = cursor.fetchone()
    return _json_rows(rows)


def _as_json(sql: str, width: int) -> str:
    """SQLite: the rows of `sql` (a SELECT of `width` columns) as one JSON array."""
    names = ", ".join(f"c{i}" for i in range(width))
    return f"WITH t({names}) AS ({sql}) SELECT json_group_array(json_array({names})) FROM t"


def _json_rows(rows: str) -> list[tuple]:
    return [tuple(row) for row in orjson.loads(rows)]


OR_KEYS = 300


class Keyed(NamedTuple):
    """The rows of a table whose columns equal one of some keys: `source` for after FROM and
    `where` (possibly empty) for after the JOINs, with their parameters in that order."""

    source: str
    where: str
    params: list


def _keyed(table: str, columns: tuple[str, ...], keys: set[tuple]) -> Keyed:
    """The rows of `table` (with its alias: `"messaging_membership" m`) whose `columns` (named
    by that alias) equal one of `keys`.

    PostgreSQL: each column `IN` its values (the cross product of the lists, a superset the
    caller's lookups by key ignore), which its planner turns into index scans and, on the chat
    column, into the chat's partitions. SQLite would probe the index once per combination of
    those lists (30 keys: 27,000 probes, about 1 ms; 300 keys: 27 million); there the keys go
    as one JSON array (`json_each`), each key one lookup in the table's index, and the
    statement's text is the same whatever the number of keys, so sqlite3 prepares it once
    and reuses it. One OR'ed equality per key, as this was, made a new text for nearly every
    batch, and preparing it cost more than running it (150 keys: 2.1 ms to prepare and run
    the membership read, 0.3 ms through `json_each`; docs/benchmarks.md, 2026-12-05)."""
    if connection.vendor == "postgresql":
        lists = [sorted({key[i] for key in keys}) for i in range(len(columns))]
        clause = " AND ".join(
            f"{column} IN ({placeholders(values)})"
            for column, values in zip(columns, lists, strict=True)
        )
        return Keyed(table, f" WHERE {clause}", [value for values in lists for value in values])
    on = " AND ".join(
        f"{column} = json_extract(k.value, '$[{index}]')" for index, column in enumerate(columns)
    )
    # CROSS JOIN: SQLite keeps this order, the keys outside, a lookup in the table per key.
    source = f"json_each(%s) AS k CROSS JOIN {table} ON {on}"
    return Keyed(source, "", [orjson.dumps(sorted(keys)).decode()])


def _ids(column: str, ids) -> tuple[str, list]:
    """`column IN (…)` with its parameters: on SQLite one JSON array, so that the statement's
    text is the same whatever the number of ids (see `_keyed`)."""
    if connection.vendor == "sqlite":
        return f"{column} IN (SELECT value FROM json_each(%s))", [orjson.dumps(list(ids)).decode()]
    return f"{column} IN ({placeholders(ids)})", list(ids)


def _each_key(columns: tuple[str, ...], keys: set[tuple]) -> list[tuple[str, list]]:
    """WHERE clauses that together match exactly the rows whose `columns` equal one of `keys`:
    one OR'ed equality per key, at most OR_KEYS keys a clause (SQLite's expression depth)."""
    one = "(" + " AND ".join(f"{column} = %s" for column in columns) + ")"
    ordered = list(keys)
    chunks = []
    for start in range(0, len(ordered), OR_KEYS):
        chunk = ordered[start : start + OR_KEYS]
        chunks.append((" OR ".join([one] * len(chunk)), [value for key in chunk for value in key]))
    return chunks


class Pending:
    """Statements sent whose rows are read later, by `result()`: inside `together()` the
    statements of several reads go to the database at once, and their rows are there once
    the block ends."""

    __slots__ = ("cursors", "finish", "rows")

    def __init__(self, finish):
        self.cursors = []
        self.rows = []  # read already (SQLite: `fetch_all` where the statement runs)
        self.finish = finish

    def execute(self, sql: str, params: list, width: int) -> None:
        """Run a SELECT of `width` columns (its rows are read by `result()`)."""
        if connection.vendor == "sqlite":
            reads = getattr(_together, "reads", None)
            if reads is not None:
                reads.append((self, sql, params, width))
                return
            with connection.cursor() as cursor:
                self.rows += fetch_all(cursor, sql, params, width)
            return
        cursor = connection.cursor()
        self.cursors.append(cursor)
        cursor.execute(sql, params)

    def result(self):
        try:
            rows = self.rows + [row for cursor in self.cursors for row in cursor.fetchall()]
        finally:
            for cursor in self.cursors:
                cursor.close()
        return self.finish(rows)


_together = threading.local()  # SQLite: the reads of this thread's `together` block


@contextlib.contextmanager
def together():
    """Reads started inside (the functions returning `Pending`) go to the database at once;
    their `result()`s are read after the block, in which nothing waits for their rows.

    PostgreSQL: one pipeline (psycopg's pipeline mode), one round trip, and one wait for the
    GIL after it in a writer thread, instead of one each; the statements run in the order
    they were started. SQLite: one statement, the reads its scalar subqueries (each read's
    rows one JSON array, `fetch_all`): sqlite3 releases the GIL around each call into
    SQLite, and a writer thread waits for it again after each, so the statements of a
    writer's batch, not the rows they touch, were most of its time (docs/benchmarks.md,
    2026-12-05)."""
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        with connection.wrap_database_errors, connection.connection.pipeline():
            yield
        return
    if getattr(_together, "reads", None) is not None:  # within another block: read with it
        yield
        return
    _together.reads = reads = []
    try:
        yield
    finally:
        _together.reads = None
    if len(reads) == 1:
        pending, sql, params, width = reads[0]
        with connection.cursor() as cursor:
            pending.rows += fetch_all(cursor, sql, params, width)
    elif reads:
        columns = ", ".join(f"({_as_json(sql, width)})" for _, sql, _, width in reads)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {columns}", [value for _, _, params, _ in reads for value in params]
            )
            row = cursor.fetchone()
        for (pending, *_), rows in zip(reads, row, strict=True):
            pending.rows += _json_rows(rows)


def senders_standing(pairs: set[tuple[int, int]]) -> Pending:
    """(chat id, user id) -> (muted now, user active), for those memberships that exist (a mute
    past its `muted_until` has ended). Inside the storing transaction; on PostgreSQL the rows
    are share-locked, so a removal or a ban committing meanwhile is either seen here or waits
    for this commit. A `Pending` read (see `together`)."""
    pending = Pending(
        lambda rows: {
            (chat_id, user_id): (bool(muted), bool(active))
            for chat_id, user_id, muted, active in rows
        }
    )
    if pairs:
        lock = " FOR SHARE OF m, u" if connection.vendor == "postgresql" else ""
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        members = _keyed(f"{MEMBERSHIP} m", ("m.chat_id", "m.user_id"), pairs)
        pending.execute(
            f"SELECT m.chat_id, m.user_id,"
            f" (m.muted AND (m.muted_until IS NULL OR m.muted_until > %s)), u.is_active"
            f" FROM {members.source} JOIN {USER} u ON u.id = m.user_id{members.where}{lock}",
            [now, *members.params],
            width=4,
        )
    return pending


def stored_client_ids(keys: set[tuple[int, int, str]]) -> Pending:
    """Messages already stored under these (chat, sender, clientMessageId) keys (usually none).

    By chat first, like the unique key it reads: one partition per chat on PostgreSQL. A
    `Pending` read (see `together`); the stored messages themselves are read by `result()`,
    when there are any."""

    def finish(rows):
        if not rows:
            return {}
        stored = framed_messages_by_key(set(rows)).values()
        return {(m.chat_id, m.sender_id, m.client_message_id): m for m in stored}

    pending = Pending(finish)
    if keys:
        stored = _keyed(f"{MESSAGE} s", ("s.chat_id", "s.sender_id", "s.client_message_id"), keys)
        pending.execute(
            f"SELECT s.chat_id, s.id FROM {stored.source}{stored.where}", stored.params, width=2
        )
    return pending


def reply_targets(targets: set[tuple[int, int]]) -> Pending:
    """(chat id, message id) -> seq, for the messages that new ones answer (`replyTo`) in
    their own chat (a message of another chat is not found). A `Pending` read (see
    `together`)."""
    pending = Pending(
        lambda rows: {(chat_id, message_id): seq for chat_id, message_id, seq in rows}
    )
    if targets:
        chat_ids = {chat_id for chat_id, _ in targets}
        message_ids = {message_id for _, message_id in targets}
        pending.execute(
            f"SELECT chat_id, id, seq FROM {MESSAGE} WHERE chat_id IN ({placeholders(chat_ids)})"
            f" AND id IN ({placeholders(message_ids)})",
            [*chat_ids, *message_ids],
            width=3,
        )
    return pending


def lock_chats(chat_ids) -> Pending:
    """Lock the chats' rows in id order, where the database can (PostgreSQL), so that two
    processes writing into the same chats cannot deadlock; SQLite's storing transaction holds
    the database's write lock from its BEGIN (IMMEDIATE). Inside a transaction, before reading
    who may write (started first in `together`: PostgreSQL runs a pipeline's statements in
    order). A `Pending` read of each existing chat's (last seq, last rev) as locked."""
    pending = Pending(lambda rows: {chat_id: (seq, rev) for chat_id, seq, rev in rows})
    if chat_ids:
        lock = " ORDER BY id FOR UPDATE" if connection.features.has_select_for_update else ""
        where, params = _ids("id", sorted(chat_ids))
        pending.execute(
            f"SELECT id, last_seq, last_rev FROM {CHAT} WHERE {where}{lock}", params, width=3
        )
    return pending


def insert_new_messages(
    rows: list[tuple], now, locked: dict[int, tuple[int, int]]
) -> list[tuple[int, int, int]]:
    """Store new messages: (chat id, sender id, text, client id, reply-to id) rows created at
    `now`, grouped by chat in the order of their seqs (a chat's rows in a row, as they are to be
    numbered). Each chat's `last_seq` and `last_rev` grow by its number of rows (a new message
    is a change of the chat's log too) and the rows take the numbers in between, counted from
    `locked`, what `lock_chats` read under the lock this transaction holds; the (seq, rev, id)
    of each row, in the order of `rows`. The counters move by as much as the rows take rather
    than to values read earlier: were they moved meanwhile, the unique (chat, seq) would refuse
    the rows rather than number two messages alike. An `IntegrityError` if a chat is no longer
    there.

    PostgreSQL moves the counters and inserts in one statement (the chats' update a
    data-modifying `WITH`): one round trip fewer while the chats' locks are held, for which
    the other process's writer waits when both write into the same chats (docs/benchmarks.md,
    2026-12-05)."""
    if not rows:
        return []
    counts: dict[int, int] = {}
    numbered = []
    for chat_id, *rest in rows:
        if chat_id not in locked:
            raise IntegrityError("A chat of these messages is no longer there.")
        offset = counts.get(chat_id, 0)
        counts[chat_id] = offset + 1
        last_seq, last_rev = locked[chat_id]
        numbered.append((chat_id, last_seq + 1 + offset, last_rev + 1 + offset, *rest))
    if connection.vendor == "postgresql":
        ids = _insert_postgresql(numbered, counts, now)
    else:
        _advance_chats(counts, now)
        ids = _insert_sqlite(numbered, now)
    return [(row[1], row[2], message_id) for row, message_id in zip(numbered, ids, strict=True)]


def _insert_postgresql(rows: list[tuple], counts: dict[int, int], now) -> list[int]:
    """PostgreSQL: move the chats' counters by `counts` and insert (chat id, seq, rev, sender
    id, text, client id, reply-to id) rows, in one statement; their ids, in the order of `rows`
    (matched by (chat, seq), which is unique).

    One array per column (`unnest`): the statement's text is the same whatever the batch
    size, so psycopg converts it once instead of splitting a query of thousands of
    placeholders for every batch (most of the writer thread's Python on PostgreSQL + Redis).
    The `WITH`'s update runs whether or not the insert reads it."""
    stamp = connection.ops.adapt_datetimefield_value(now)
    chat_ids = sorted(counts)
    sql = (
        f"WITH moved AS (UPDATE {CHAT} SET last_seq = last_seq + k.n, last_rev = last_rev + k.n,"
        " last_message_at = %s FROM unnest(%s::bigint[], %s::bigint[]) AS k(id, n)"
        f" WHERE {CHAT}.id = k.id)"
        f" INSERT INTO {MESSAGE} (chat_id, seq, rev, sender_id, text, client_message_id,"
        " reply_to_id, created_at, deleted_by_author)"
        " SELECT *, %s::timestamptz, false FROM unnest(%s::bigint[], %s::bigint[],"
        " %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::bigint[])"
        " RETURNING chat_id, seq, id"
    )
    arrays = [list(column) for column in zip(*rows, strict=True)]
    params = [stamp, chat_ids, [counts[c] for c in chat_ids], stamp, *arrays]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = {(chat_id, seq): message_id for chat_id, seq, message_id in cursor.fetchall()}
    return [ids[row[0], row[1]] for row in rows]


def _advance_chats(counts: dict[int, int], now) -> None:
    """SQLite: add `counts[chat]` to each chat's `last_seq` and `last_rev`, in a statement
    whose text is the same whatever the number of chats (see `_keyed`)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {CHAT} SET last_seq = last_seq + k.n, last_rev = last_rev + k.n,"
            " last_message_at = %s FROM (SELECT json_extract(value, '$[0]') AS id,"
            " json_extract(value, '$[1]') AS n FROM json_each(%s)) AS k"
            f" WHERE {CHAT}.id = k.id",
            [
                connection.ops.adapt_datetimefield_value(now),
                orjson.dumps(sorted(counts.items())).decode(),
            ],
        )


def _updated(cursor, update: str, params: list, columns: tuple[str, ...], chat_ids) -> list:
    """Run `update` (of chat rows) and read `columns` of the chats `chat_ids` as it left them:
    `RETURNING` on PostgreSQL; on SQLite a SELECT after it, in the same transaction (whose
    write lock it holds), as one row (`fetch_all`: one GIL wait instead of one per chat)."""
    if connection.vendor != "sqlite":
        cursor.execute(f"{update} RETURNING {', '.join(columns)}", params)
        return cursor.fetchall()
    cursor.execute(update, params)
    where, ids = _ids("id", chat_ids)
    return fetch_all(
        cursor, f"SELECT {', '.join(columns)} FROM {CHAT} WHERE {where}", ids, len(columns)
    )


def lock_chats_for_changes(chat_ids: set[int]) -> Pending:
    """Lock the chats (in id order) for a batch of changes; each existing chat's `last_rev`.
    Inside a transaction: the lock is what orders revs in commit order. A `Pending` read (see
    `together`)."""
    pending = Pending(dict)
    if chat_ids:
        lock = " ORDER BY id FOR UPDATE" if connection.features.has_select_for_update else ""
        where, params = _ids("id", sorted(chat_ids))
        pending.execute(f"SELECT id, last_rev FROM {CHAT} WHERE {where}{lock}", params, width=2)
    return pending


def allocate_revs(counts: dict[int, int]) -> dict[int, int]:
    """Add `counts[chat]` to each chat's `last_rev`; the new values. Inside the transaction
    that locked the chats (`lock_chats_for_changes`)."""
    chat_ids = sorted(counts)
    cases = " ".join(["WHEN %s THEN %s"] * len(chat_ids))
    params = [value for chat_id in chat_ids for value in (chat_id, counts[chat_id])]
    with connection.cursor() as cursor:
        return dict(
            _updated(
                cursor,
                f"UPDATE {CHAT} SET last_rev = last_rev + CASE id {cases} END"
                f" WHERE id IN ({placeholders(chat_ids)})",
                [*params, *chat_ids],
                ("id", "last_rev"),
                chat_ids,
            )
        )


def update_messages(messages, fields: tuple[str, ...]) -> None:
    """Write these fields of these messages in one UPDATE naming their chats (one partition
    each on PostgreSQL), as `bulk_update` would without the ORM's cost per object and field
    (most of a batch of changes' time; docs/benchmarks.md).

    SQLite takes the new values as a `VALUES` list joined by id (`UPDATE … FROM`): a `CASE`
    per field evaluates every `WHEN` for every row, which for 300 messages cost five times as
    much per message as for 20. PostgreSQL keeps the typed `CASE` (its `VALUES` would need a
    cast per column and value)."""
    messages = list(messages)
    if not messages:
        return
    columns = [Message._meta.get_field(name) for name in fields]
    chat_ids = sorted({message.chat_id for message in messages})
    if connection.vendor == "sqlite":
        params = []
        for message in messages:
            params.append(message.pk)
            for field in columns:
                params.append(field.get_db_prep_save(getattr(message, field.attname), connection))
        row = f"(%s, {placeholders(columns)})"  # id, then the fields
        assignments = ", ".join(
            f"{_quote(field.column)} = v.column{index}" for index, field in enumerate(columns, 2)
        )
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {MESSAGE} SET {assignments} FROM (VALUES {', '.join([row] * len(messages))}) v"
                f" WHERE {MESSAGE}.id = v.column1 AND {MESSAGE}.chat_id IN ({placeholders(chat_ids)})",
                [*params, *chat_ids],
            )
        return
    assignments, params = [], []
    for field in columns:
        case = "CASE id " + " ".join(["WHEN %s THEN %s"] * len(messages)) + " END"
        if connection.features.requires_casted_case_in_updates:  # PostgreSQL: typed CASE
            case = f"CAST({case} AS {field.db_type(connection)})"
        assignments.append(f"{_quote(field.column)} = {case}")
        for message in messages:
            value = getattr(message, field.attname)
            params += [message.pk, field.get_db_prep_save(value, connection)]
    ids = [message.pk for message in messages]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {MESSAGE} SET {', '.join(assignments)}"
            f" WHERE chat_id IN ({placeholders(chat_ids)}) AND id IN ({placeholders(ids)})",
            [*params, *chat_ids, *ids],
        )


def insert_rows(model, columns: tuple[str, ...], rows: list[tuple]) -> None:
    """INSERT `rows` (values of `columns`, ready for the database) into `model`'s table in
    statements of at most 1,000 rows: `bulk_create` without the ORM's cost per object (a
    model instance each, its fields prepared one by one)."""
    if not rows:
        return
    table = _quote(model._meta.db_table)
    row = f"({placeholders(columns)})"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 1000):
            chunk = rows[start : start + 1000]
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(map(_quote, columns))})"
                f" VALUES {', '.join([row] * len(chunk))}",
                [value for values in chunk for value in values],
            )


def delete_reactions(chat_ids: set[int], cleared: set[int], removed: set[tuple]) -> None:
    """Delete in these chats the reactions of the `cleared` messages and the `removed`
    (message id, user id, emoji) ones, each key matched exactly."""
    if not chat_ids or not (cleared or removed):
        return
    chats = sorted(chat_ids)
    where = [(f"message_id IN ({placeholders(cleared)})", sorted(cleared))] if cleared else []
    where += _each_key(("message_id", "user_id", "emoji"), removed)
    with connection.cursor() as cursor:
        for clause, params in where:
            cursor.execute(
                f"DELETE FROM {REACTION} WHERE chat_id IN ({placeholders(chats)}) AND ({clause})",
                [*chats, *params],
            )


def _insert_sqlite(rows: list[tuple], now) -> list[int]:
    """SQLite: insert (chat id, seq, rev, sender id, text, client id, reply-to id) rows created
    at `now`; their ids, in the order of `rows`.

    The rows go as one JSON array (orjson, in C), read back by `json_each`: the same short
    statement for every batch, where a `VALUES` list had nine placeholders per message for
    Django to rewrite (`%s` to `?`, a regular expression over the whole text) and sqlite3 to
    bind one by one. The ids need no read: inside the storing transaction, which holds
    SQLite's write lock from its BEGIN (IMMEDIATE), one INSERT gives its rows consecutive ids
    (AUTOINCREMENT: each the highest yet plus one), in the order of the SELECT, and
    `lastrowid` is the last. Every statement is one wait for the GIL in the writer thread
    (sqlite3 releases it around each call into SQLite): the two reads this took before (the
    highest id, then the rows above it) were two of nine per batch."""
    columns = "chat_id, seq, rev, sender_id, text, client_message_id, reply_to_id"
    values = ", ".join(f"json_extract(value, '$[{index}]')" for index in range(7))
    insert = (
        f"INSERT INTO {MESSAGE} ({columns}, created_at, deleted_by_author)"
        f" SELECT {values}, %s, 0 FROM json_each(%s) ORDER BY key"
    )
    params = [connection.ops.adapt_datetimefield_value(now), orjson.dumps(rows).decode()]
    with connection.cursor() as cursor:
        cursor.execute(insert, params)
        last, inserted = cursor.lastrowid, cursor.rowcount
    if inserted != len(rows):
        raise IntegrityError(f"{inserted} of {len(rows)} messages inserted.")
    return list(range(last - len(rows) + 1, last + 1))


@contextlib.contextmanager
def snapshot():
    """A transaction whose reads all see one state of the database: REPEATABLE READ on
    PostgreSQL (its default, READ COMMITTED, gives each statement its own); SQLite's
    transaction is a snapshot already."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


# Every column of a Message: `message_instance` must be given each one.
MESSAGE_FIELDS = frozenset(field.attname for field in Message._meta.concrete_fields)


def message_instance(**fields) -> Message:
    """A Message for a row just inserted, without the cost of `Model.__init__`.

    Takes a value for every concrete field of the model, and only those: a field
    added to the model and not given here raises instead of being silently missing.
    """
    if fields.keys() != MESSAGE_FIELDS:
        raise TypeError(
            f"message_instance needs exactly the fields of Message: missing"
            f" {sorted(MESSAGE_FIELDS - fields.keys())}, unknown {sorted(fields.keys() - MESSAGE_FIELDS)}"
        )
    message = Message.__new__(Message)
    message._state = ModelState()
    message._state.adding = False
    message._state.db = connection.alias
    message.__dict__.update(fields)
    return message


def chats_and_co_members(user_ids: set[int]) -> tuple[dict, dict, dict]:
    """For each user: their chats' ids, the users who share one; and each chat's
    (last seq, last rev)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT mine.user_id, mine.chat_id, other.user_id, c.last_seq, c.last_rev"
            f" FROM {MEMBERSHIP} mine"
            f" JOIN {MEMBERSHIP} other ON other.chat_id = mine.chat_id"
            f" JOIN {CHAT} c ON c.id = mine.chat_id"
            f" WHERE mine.user_id IN ({placeholders(user_ids)})",
            list(user_ids),
        )
        rows = cursor.fetchall()
    chats: dict[int, list[int]] = {}
    co_members: dict[int, set[int]] = {}
    last_seqs: dict[int, tuple[int, int]] = {}
    for user_id, chat_id, other_id, last_seq, last_rev in rows:
        last_seqs[chat_id] = (last_seq, last_rev)
        if other_id == user_id:
            chats.setdefault(user_id, []).append(chat_id)
        else:
            co_members.setdefault(user_id, set()).add(other_id)
    return chats, co_members, last_seqs


class ReactionRow(NamedTuple):
    """One reaction of a message, as `protocol.reactions_data` reads it."""

    emoji: str
    user_id: int


# Every column of a message row, in the order `framed_messages` selects them.
MESSAGE_COLUMNS = tuple(field.attname for field in Message._meta.concrete_fields)
_DATETIMES = {
    field.attname
    for field in Message._meta.concrete_fields
    if field.get_internal_type() == "DateTimeField"
}


def framed_messages(chat_id: int, condition: str, params: list, order: str, limit: int) -> list:
    """Up to `limit` messages of one chat meeting `condition` (SQL on the alias `m`), by
    `order`, as `Message.objects.framed(chat_id)` gives them: each with `reply_to_seq` (read
    in the same chat) and `reaction_rows`. Two plain queries, both naming the chat (one
    partition on PostgreSQL): the ORM's cost per query and per object was most of a `sync`'s
    (docs/benchmarks.md)."""
    return _framed([chat_id], condition, params, f"ORDER BY m.{order} LIMIT %s", [limit])


def framed_messages_by_key(keys: set[tuple[int, int]]) -> dict[int, Message]:
    """The messages of these (chat id, message id) keys, by id, framed as above (a message of
    another chat than its key's is not found)."""
    if not keys:
        return {}
    chat_ids = sorted({chat_id for chat_id, _ in keys})
    ids = sorted({message_id for _, message_id in keys})
    found = _framed(chat_ids, f"m.id IN ({placeholders(ids)})", ids, "", [])
    return {m.id: m for m in found if (m.chat_id, m.id) in keys}


def _framed(chat_ids: list[int], condition: str, params: list, tail: str, tail_params: list):
    columns = ", ".join(f"m.{_quote(column)}" for column in MESSAGE_COLUMNS)
    chats = placeholders(chat_ids)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns}, (SELECT r.seq FROM {MESSAGE} r WHERE r.chat_id IN ({chats})"
            f" AND r.chat_id = m.chat_id AND r.id = m.reply_to_id) FROM {MESSAGE} m"
            f" WHERE m.chat_id IN ({chats}) AND {condition} {tail}",
            [*chat_ids, *chat_ids, *params, *tail_params],
        )
        rows = cursor.fetchall()
        to_datetime = getattr(connection.ops, "convert_datetimefield_value", None)
        messages = {}
        for row in rows:
            fields = dict(zip(MESSAGE_COLUMNS, row, strict=False))
            if to_datetime is not None:  # SQLite: text or naive values, as the ORM converts
                for name in _DATETIMES:
                    fields[name] = to_datetime(fields[name], None, connection)
            fields["deleted_by_author"] = bool(fields["deleted_by_author"])
            message = message_instance(**fields)
            message.reply_to_seq = row[-1]
            message.reaction_rows = []
            messages[message.id] = message
        if messages:
            cursor.execute(
                f"SELECT message_id, emoji, user_id FROM {REACTION} WHERE chat_id IN ({chats})"
                f" AND message_id IN ({placeholders(messages)}) ORDER BY id",
                [*chat_ids, *messages],
            )
            for message_id, emoji, user_id in cursor.fetchall():
                messages[message_id].reaction_rows.append(ReactionRow(emoji, user_id))
    return list(messages.values())
