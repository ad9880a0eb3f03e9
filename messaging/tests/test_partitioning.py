"""Messages stored partitioned by chat on PostgreSQL: the schema, its composite keys, single-partition
reads and writes per chat, and the migration that moves existing rows (docs/architecture.md,
"Storage partitioned by chat"). Idempotency per chat holds on both databases."""

import importlib
import re
import uuid

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, connections, transaction
from django.db.backends.postgresql.base import DatabaseWrapper
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messaging import protocol, selectors, services, storage
from messaging.errors import NotFound
from messaging.models import Message, MessageEdit, Reaction, ReadReceipt

PARTITIONS = importlib.import_module(
    "messaging.migrations.0010_partition_messages_by_chat"
).PARTITIONS
PARTITIONED = ["messaging_message", "messaging_messageedit", "messaging_reaction"]

on_postgresql = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="partitioning is PostgreSQL's; SQLite keeps plain tables (run with DATABASE_URL)",
)


def rows(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def execute(sql, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def send(chat, sender, text="hi", **extra) -> Message:
    message, _ = services.send_message(sender=sender, chat_id=chat.pk, text=text, **extra)
    return message


# ---------------------------------------------------------------- idempotency per chat (both)


def test_the_same_client_message_id_in_two_chats_stores_two_messages(user, chat, group_chat):
    here = send(chat, user, "here", client_message_id="same")

    there = send(group_chat, user, "there", client_message_id="same")

    assert here.pk != there.pk
    assert sorted(Message.objects.values_list("chat_id", "text")) == sorted(
        [(chat.pk, "here"), (group_chat.pk, "there")]
    )


def test_the_same_client_message_id_twice_in_one_chat_stores_one_message(user, chat):
    first, first_created = services.send_message(
        sender=user, chat_id=chat.pk, text="once", client_message_id="same"
    )

    retry, retry_created = services.send_message(
        sender=user, chat_id=chat.pk, text="once", client_message_id="same"
    )

    assert (first_created, retry_created) == (True, False)
    assert retry.pk == first.pk
    assert Message.objects.filter(chat=chat).count() == 1


def test_a_batch_retrying_in_two_chats_stores_one_message_per_chat(user, chat, group_chat):
    batch = [
        services.Outgoing(user, chat.pk, "a", "k"),
        services.Outgoing(user, group_chat.pk, "b", "k"),
        services.Outgoing(user, chat.pk, "a", "k"),
    ]

    with services.publish_order:
        results = services.store_messages(batch)

    (first, created_1), (second, created_2), (again, created_3) = results
    assert (created_1, created_2, created_3) == (True, True, False)
    assert again.pk == first.pk != second.pk
    assert Message.objects.count() == 2


def test_the_database_keeps_client_message_ids_unique_per_chat_and_sender(user, chat, group_chat):
    now = timezone.now()
    fields = {"sender": user, "text": "x", "client_message_id": "k", "created_at": now}
    Message.objects.create(chat=chat, seq=1, rev=1, **fields)
    Message.objects.create(chat=group_chat, seq=1, rev=1, **fields)  # another chat: fine

    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(chat=chat, seq=2, rev=2, **fields)


# ---------------------------------------------------------------- integrity held in the transaction


def test_a_reply_to_a_message_of_another_chat_is_not_found_and_stores_nothing(
    user, chat, group_chat
):
    elsewhere = send(group_chat, user, "in the group")

    with pytest.raises(NotFound):
        send(chat, user, "answer", reply_to=elsewhere.pk)

    assert not Message.objects.filter(chat=chat).exists()


@pytest.mark.parametrize(
    "change",
    [
        {"action": services.Action.REACT, "emoji": "👍"},
        {"action": services.Action.EDIT, "text": "changed"},
        {"action": services.Action.DELETE},
    ],
    ids=["react", "edit", "delete"],
)
def test_a_change_naming_a_message_of_another_chat_is_not_found_and_writes_nothing(
    change, user, chat, group_chat
):
    elsewhere = send(group_chat, user, "in the group")

    with pytest.raises(NotFound):
        services.change_message(services.Change(user, chat.pk, elsewhere.pk, **change))

    elsewhere.refresh_from_db()
    assert (elsewhere.text, elsewhere.deleted_at, elsewhere.rev) == ("in the group", None, 1)
    assert not Reaction.objects.exists() and not MessageEdit.objects.exists()


# ---------------------------------------------------------------- the schema (PostgreSQL)


@on_postgresql
@pytest.mark.django_db
@pytest.mark.parametrize("table", PARTITIONED)
def test_the_table_is_hash_partitioned_by_chat_in_the_configured_count(table):
    strategy, key = rows(
        "SELECT p.partstrat, a.attname FROM pg_partitioned_table p"
        " JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]"
        " WHERE p.partrelid = %s::regclass",
        [table],
    )[0]
    (count,) = rows("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", [table])[0]

    assert (strategy, key) == ("h", "chat_id")
    assert count == PARTITIONS == 16


def _unique_keys(table) -> dict[str, list[str]]:
    """Name -> columns of every unique index (primary key included) of `table`."""
    found = rows(
        "SELECT i.indexrelid::regclass::text,"
        " array_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum))"
        " FROM pg_index i JOIN pg_attribute a"
        " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])"
        " WHERE i.indrelid = %s::regclass AND i.indisunique GROUP BY 1",
        [table],
    )
    return dict(found)


@on_postgresql
@pytest.mark.django_db
def test_every_unique_key_includes_the_chat_and_the_primary_keys_are_chat_and_id():
    message = _unique_keys("messaging_message")
    reaction = _unique_keys("messaging_reaction")
    edit = _unique_keys("messaging_messageedit")

    assert message == {
        "messaging_message_pkey": ["chat_id", "id"],
        "message_unique_chat_seq": ["chat_id", "seq"],
        "message_unique_chat_sender_client_id": ["chat_id", "sender_id", "client_message_id"],
    }
    assert reaction == {
        "messaging_reaction_pkey": ["chat_id", "id"],
        "reaction_unique_chat_message_user_emoji": ["chat_id", "message_id", "user_id", "emoji"],
    }
    assert edit == {"messaging_messageedit_pkey": ["chat_id", "id"]}
    (partial,) = rows(
        "SELECT pg_get_expr(indpred, indrelid) FROM pg_index"
        " WHERE indexrelid = 'message_unique_chat_sender_client_id'::regclass"
    )[0]
    assert partial == "(client_message_id IS NOT NULL)"


@on_postgresql
@pytest.mark.django_db
def test_every_reference_to_a_message_is_a_composite_foreign_key_with_its_action():
    found = rows(
        "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE contype = 'f' AND confrelid = 'messaging_message'::regclass"
        " AND conparentid = 0 ORDER BY 1"
    )

    assert found == [
        (
            "messaging_message",
            "FOREIGN KEY (chat_id, reply_to_id) REFERENCES messaging_message(chat_id, id)"
            " ON DELETE SET NULL (reply_to_id) DEFERRABLE INITIALLY DEFERRED",
        ),
        (
            "messaging_messageedit",
            "FOREIGN KEY (chat_id, message_id) REFERENCES messaging_message(chat_id, id)"
            " ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED",
        ),
        (
            "messaging_reaction",
            "FOREIGN KEY (chat_id, message_id) REFERENCES messaging_message(chat_id, id)"
            " ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED",
        ),
        (
            "messaging_readreceipt",
            "FOREIGN KEY (chat_id, message_id) REFERENCES messaging_message(chat_id, id)"
            " ON DELETE SET NULL (message_id) DEFERRABLE INITIALLY DEFERRED",
        ),
    ]


@on_postgresql
@pytest.mark.parametrize(
    "make",
    [
        lambda m, other, user: Reaction(
            message=m, chat=other, user=user, emoji="👍", created_at=timezone.now()
        ),
        lambda m, other, user: MessageEdit(
            message=m, chat=other, text="old", edited_at=timezone.now()
        ),
        lambda m, other, user: Message(
            chat=other, seq=99, rev=99, sender=user, text="re", reply_to=m, created_at=m.created_at
        ),
    ],
    ids=["reaction", "edit", "reply"],
)
def test_a_row_naming_a_message_of_another_chat_is_refused_by_the_database(
    make, user, chat, group_chat
):
    message = send(chat, user, "in the direct chat")

    with pytest.raises(IntegrityError), transaction.atomic():
        execute("SET CONSTRAINTS ALL IMMEDIATE")
        make(message, group_chat, user).save()


@on_postgresql
def test_deleting_a_message_in_sql_cascades_to_its_edits_and_reactions_and_nulls_references(
    user, other_user, chat
):
    original = send(chat, user, "first")
    reply = send(chat, other_user, "answer", reply_to=original.pk)
    services.edit_message(user=user, chat_id=chat.pk, message_id=original.pk, text="first!")
    services.react(user=other_user, chat_id=chat.pk, message_id=original.pk, emoji="👍")
    services.mark_read(user=other_user, chat_id=chat.pk, message_id=original.pk)

    # The database alone, not Django's on_delete emulation.
    execute("DELETE FROM messaging_message WHERE chat_id = %s AND id = %s", [chat.pk, original.pk])

    assert not MessageEdit.objects.filter(chat=chat).exists()
    assert not Reaction.objects.filter(chat=chat).exists()
    reply.refresh_from_db()
    assert reply.reply_to_id is None
    receipt = ReadReceipt.objects.get(chat=chat, user=other_user)
    assert (receipt.message_id, receipt.seq) == (None, 1)


@on_postgresql
def test_deleting_a_chat_through_django_takes_its_messages_edits_and_reactions(
    user, other_user, chat
):
    message = send(chat, user, "first")
    send(chat, other_user, "answer", reply_to=message.pk)
    services.react(user=other_user, chat_id=chat.pk, message_id=message.pk, emoji="👍")
    services.edit_message(user=user, chat_id=chat.pk, message_id=message.pk, text="first!")

    chat.delete()

    assert (Message.objects.count(), Reaction.objects.count(), MessageEdit.objects.count()) == (
        0,
        0,
        0,
    )


# ---------------------------------------------------------------- one partition per chat


def partitions_touched(sql: str, table: str) -> set[str]:
    """The partitions of `table` the plan of `sql` reads (plan-time pruning)."""
    plan = "\n".join(row[0] for row in rows(f"EXPLAIN {sql}"))
    return set(re.findall(rf"\b{table}_p\d+\b", plan))


def statements_on(queries, table: str) -> list[str]:
    return [q["sql"] for q in queries if f'"{table}"' in q["sql"] or f" {table} " in q["sql"]]


def assert_one_partition_each(queries, table: str, *, at_least: int = 1) -> None:
    statements = statements_on(queries, table)
    assert len(statements) >= at_least, statements
    for sql in statements:
        assert len(partitions_touched(sql, table)) == 1, sql


@pytest.fixture
def busy_chats(user, other_user, chat, group_chat):
    """Two chats with messages, replies and reactions, in different partitions."""
    for chat_ in (chat, group_chat):
        first = send(chat_, user, "first", client_message_id=f"c-{chat_.pk}")
        for n in range(5):
            send(chat_, other_user, f"answer {n}", reply_to=first.pk)
        services.react(user=other_user, chat_id=chat_.pk, message_id=first.pk, emoji="👍")
    execute("ANALYZE messaging_message")
    return chat, group_chat


@on_postgresql
def test_history_reads_one_partition_of_messages_and_one_of_reactions(busy_chats):
    chat, _ = busy_chats

    with CaptureQueriesContext(connection) as queries:
        page = selectors.history(chat=chat, after=None, before=None, limit=50)

    assert len(page.messages) == 6
    assert_one_partition_each(queries, "messaging_message")
    assert_one_partition_each(queries, "messaging_reaction")


@on_postgresql
def test_sync_reads_one_partition(busy_chats, user):
    chat, _ = busy_chats

    with CaptureQueriesContext(connection) as queries:
        page = selectors.sync_page(
            user=user, chat_id=chat.pk, held=protocol.SyncFrom(seq=3, rev=1), limit=50
        )

    assert [m.seq for m in page.new] == [4, 5, 6]
    assert_one_partition_each(queries, "messaging_message", at_least=2)
    assert_one_partition_each(queries, "messaging_reaction")


@on_postgresql
def test_changed_between_reads_one_partition(busy_chats):
    chat, _ = busy_chats

    with CaptureQueriesContext(connection) as queries:
        selectors.changed_between(chat_id=chat.pk, after_rev=0, upto_rev=100, limit=50)

    assert_one_partition_each(queries, "messaging_message")


@on_postgresql
def test_the_idempotency_lookup_and_reply_targets_read_one_partition(busy_chats, user):
    chat, _ = busy_chats
    first = Message.objects.get(chat=chat, seq=1)

    with CaptureQueriesContext(connection) as queries:
        with storage.together():  # as the writer reads them: in one pipeline
            stored = storage.stored_client_ids({(chat.pk, user.pk, f"c-{chat.pk}")})
            targets = storage.reply_targets({(chat.pk, first.pk)})
        stored, targets = stored.result(), targets.result()

    assert [m.pk for m in stored.values()] == [first.pk]
    assert targets == {(chat.pk, first.pk): 1}
    assert_one_partition_each(queries, "messaging_message", at_least=3)


@on_postgresql
def test_the_batched_insert_lands_in_one_partition_and_its_plan_scans_none(busy_chats, user):
    chat, _ = busy_chats
    batch = [services.Outgoing(user, chat.pk, f"m{n}", f"new-{n}") for n in range(10)]

    with CaptureQueriesContext(connection) as queries, services.publish_order:
        results = services.store_messages(batch)

    (insert,) = [q["sql"] for q in queries if 'INSERT INTO "messaging_message"' in q["sql"]]
    assert partitions_touched(insert, "messaging_message") == set()  # routed, not scanned
    ids = [message.pk for message, _ in results]
    landed = rows(
        "SELECT DISTINCT tableoid::regclass::text FROM messaging_message WHERE chat_id = %s"
        " AND id = ANY(%s)",
        [chat.pk, ids],
    )
    assert len(landed) == 1
    assert_one_partition_each([q for q in queries if "INSERT" not in q["sql"]], "messaging_message")


@on_postgresql
def test_a_batch_of_changes_reads_and_writes_one_partition(busy_chats, user, other_user):
    chat, _ = busy_chats
    first = Message.objects.get(chat=chat, seq=1)
    second = Message.objects.get(chat=chat, seq=2)
    batch = [
        services.Change(other_user, chat.pk, first.pk, services.Action.UNREACT, emoji="👍"),
        services.Change(user, chat.pk, first.pk, services.Action.REACT, emoji="🎉"),
        services.Change(other_user, chat.pk, second.pk, services.Action.EDIT, text="edited"),
        services.Change(user, chat.pk, first.pk, services.Action.EDIT, text="first, edited"),
    ]

    with CaptureQueriesContext(connection) as queries, services.publish_order:
        results = services.apply_changes(batch)

    assert all(isinstance(r, services.Outcome) and r.changed for r in results), results
    reads_and_updates = [q for q in queries if not q["sql"].startswith("INSERT")]
    assert_one_partition_each(reads_and_updates, "messaging_message", at_least=2)
    assert_one_partition_each(reads_and_updates, "messaging_reaction", at_least=2)


# ---------------------------------------------------------------- the migration


@on_postgresql
@pytest.mark.django_db
def test_the_migration_copies_existing_rows_into_the_partitions_and_keeps_ids_going():
    alias = "partition_migration"
    name = f"test_partition_migration_{uuid.uuid4().hex[:8]}"
    with connection._nodb_cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    # A connection of its own, unknown to the test case (which refuses any alias it was not
    # told of) but reachable by the historical models' `.using(alias)`.
    target = DatabaseWrapper({**connections.settings["default"], "NAME": name}, alias)
    connections[alias] = target
    try:
        before = ("messaging", "0009_notifications")
        executor = MigrationExecutor(target)
        executor.migrate([before])
        apps = executor.loader.project_state(before).apps
        objects = lambda model: apps.get_model(*model.split(".")).objects.using(alias)  # noqa: E731
        alice = objects("accounts.User").create(username="alice", password="!")
        bob = objects("accounts.User").create(username="bob", password="!")
        now = timezone.now()
        chats = [objects("messaging.Chat").create(title=f"c{n}", last_seq=2) for n in range(3)]
        messages = []
        for chat in chats:
            first = objects("messaging.Message").create(
                chat=chat, seq=1, rev=1, sender=alice, text="hi", client_message_id=f"k{chat.pk}",
                created_at=now,
            )  # fmt: skip
            reply = objects("messaging.Message").create(
                chat=chat, seq=2, rev=3, sender=bob, text="yo", reply_to=first, created_at=now
            )
            objects("messaging.MessageEdit").create(
                message=reply, chat=chat, text="y", edited_at=now
            )
            objects("messaging.Reaction").create(
                message=first, chat=chat, user=bob, emoji="👍", created_at=now
            )
            objects("messaging.ReadReceipt").create(chat=chat, user=bob, message=reply, seq=2)
            messages += [first, reply]

        MigrationExecutor(target).migrate([("messaging", "0010_partition_messages_by_chat")])

        with target.cursor() as cursor:
            cursor.execute(
                "SELECT id, chat_id, seq, reply_to_id, client_message_id FROM messaging_message"
                " ORDER BY id"
            )
            copied = cursor.fetchall()
            cursor.execute(
                "SELECT (SELECT count(*) FROM messaging_messageedit),"
                " (SELECT count(*) FROM messaging_reaction),"
                " (SELECT count(*) FROM messaging_readreceipt WHERE message_id IS NOT NULL),"
                " (SELECT count(*) FROM pg_inherits"
                "  WHERE inhparent = 'messaging_message'::regclass)"
            )
            counts = cursor.fetchone()
            cursor.execute(
                "INSERT INTO messaging_message (chat_id, seq, rev, text, created_at,"
                " deleted_by_author) VALUES (%s, 3, 4, 'new', now(), false) RETURNING id",
                [chats[0].pk],
            )
            (new_id,) = cursor.fetchone()
            cursor.execute(
                "SELECT count(DISTINCT tableoid) FROM messaging_message WHERE chat_id = %s",
                [chats[0].pk],
            )
            (partitions_of_one_chat,) = cursor.fetchone()
    finally:
        target.close()
        del connections[alias]
        with connection._nodb_cursor() as cursor:
            cursor.execute(f'DROP DATABASE "{name}"')

    assert copied == [
        (m.pk, m.chat_id, m.seq, m.reply_to_id, m.client_message_id) for m in messages
    ]
    assert counts == (3, 3, 3, PARTITIONS)
    assert new_id == max(m.pk for m in messages) + 1
    assert partitions_of_one_chat == 1
