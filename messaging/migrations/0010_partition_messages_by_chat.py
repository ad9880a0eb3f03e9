"""Messages, their edits and their reactions partitioned by chat on PostgreSQL (docs/architecture.md,
"Storage partitioned by chat").

On PostgreSQL the three tables are rebuilt as `PARTITION BY HASH (chat_id)` with
`PARTITIONS` partitions each; existing rows are copied. Every unique key includes
`chat_id` (the database's primary keys are `(chat_id, id)`; Django keeps `id` as its
pk, since a ForeignKey cannot target Django 5.2's CompositePrimaryKey), and every
reference to a message is a composite foreign key `(chat_id, message_id)` created
here in SQL: Django's model state declares those fields `db_constraint=False` so
that it never creates a single-column one. Ids still come from one sequence per
table (owned by the column: identity columns on a partitioned table need
PostgreSQL 17), so they stay unique and increasing across partitions.

Elsewhere (SQLite) the tables stay plain: only the unique keys change to include
the chat, and the references to a message lose their database constraint
(Django's on_delete emulation keeps cascading and nulling).

`PARTITIONS` is read once, when this migration first runs: to use another count,
change it before the first `migrate` of a database (a power of two lets a later
split halve each partition's remainder). Changing it afterwards changes nothing.
"""

from django.db import migrations, models
from django.db.migrations.operations.base import Operation
from django.db.models import Q

PARTITIONS = 16

# Each table rebuilt, with the columns its primary key and unique keys are made of.
MESSAGE = "messaging_message"
EDIT = "messaging_messageedit"
REACTION = "messaging_reaction"
RECEIPT = "messaging_readreceipt"
CHAT = "messaging_chat"
USER = "accounts_user"

# Like Django's own foreign keys: checked at commit, so rows may be written in any order.
DEFERRED = "DEFERRABLE INITIALLY DEFERRED"


def _partitioned_copy(table: str) -> list[str]:
    """Rename `table` away and create it again, partitioned, with the same columns, and copy
    its rows (the keys and indexes come after the copy: cheaper than maintaining them)."""
    old = f"{table}_unpartitioned"
    statements = [
        f"ALTER TABLE {table} RENAME TO {old}",
        f"CREATE TABLE {table} (LIKE {old}) PARTITION BY HASH (chat_id)",
    ]
    statements += [
        f"CREATE TABLE {table}_p{remainder} PARTITION OF {table}"
        f" FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {remainder})"
        for remainder in range(PARTITIONS)
    ]
    statements.append(f"INSERT INTO {table} SELECT * FROM {old}")
    return statements


def _id_sequence(table: str) -> list[str]:
    """`id` from a sequence owned by the column, continuing after the highest id copied."""
    sequence = f"{table}_id_seq"
    return [
        f"CREATE SEQUENCE {sequence} AS bigint OWNED BY {table}.id",
        f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('{sequence}')",
        f"SELECT setval('{sequence}', COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)",
    ]


def partition(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    statements = []
    for table in (MESSAGE, EDIT, REACTION):
        statements += _partitioned_copy(table)
    # The old tables go with every constraint that referred to them (the receipts' too)
    # and with their identity sequences, whose names the new sequences take.
    statements.append(
        f"DROP TABLE {MESSAGE}_unpartitioned, {EDIT}_unpartitioned,"
        f" {REACTION}_unpartitioned CASCADE"
    )
    for table in (MESSAGE, EDIT, REACTION):
        statements += _id_sequence(table)
    statements += [
        # Messages: every unique key leads with the chat.
        f"ALTER TABLE {MESSAGE} ADD CONSTRAINT {MESSAGE}_pkey PRIMARY KEY (chat_id, id)",
        f"ALTER TABLE {MESSAGE} ADD CONSTRAINT message_unique_chat_seq UNIQUE (chat_id, seq)",
        f"CREATE UNIQUE INDEX message_unique_chat_sender_client_id"
        f" ON {MESSAGE} (chat_id, sender_id, client_message_id)"
        f" WHERE client_message_id IS NOT NULL",
        f"CREATE INDEX message_chat_rev ON {MESSAGE} (chat_id, rev)",
        # Scans by id alone (the notifier's range of new messages, the admin): one index
        # scan per partition instead of a full scan of each.
        f"CREATE INDEX message_id ON {MESSAGE} (id)",
        # What the ON DELETE actions of the references below look up.
        f"CREATE INDEX message_chat_reply_to ON {MESSAGE} (chat_id, reply_to_id)",
        f"CREATE INDEX message_sender ON {MESSAGE} (sender_id)",
        f"CREATE INDEX message_deleted_by ON {MESSAGE} (deleted_by_id)",
        f"ALTER TABLE {MESSAGE} ADD CONSTRAINT message_chat_fk"
        f" FOREIGN KEY (chat_id) REFERENCES {CHAT} (id) {DEFERRED}",
        f"ALTER TABLE {MESSAGE} ADD CONSTRAINT message_sender_fk"
        f" FOREIGN KEY (sender_id) REFERENCES {USER} (id) {DEFERRED}",
        f"ALTER TABLE {MESSAGE} ADD CONSTRAINT message_deleted_by_fk"
        f" FOREIGN KEY (deleted_by_id) REFERENCES {USER} (id) {DEFERRED}",
        # A reply answers a message of its own chat; the original deleted, the reply stays.
        f"ALTER TABLE {MESSAGE} ADD CONSTRAINT message_reply_to_fk"
        f" FOREIGN KEY (chat_id, reply_to_id) REFERENCES {MESSAGE} (chat_id, id)"
        f" ON DELETE SET NULL (reply_to_id) {DEFERRED}",
        # Edit history.
        f"ALTER TABLE {EDIT} ADD CONSTRAINT {EDIT}_pkey PRIMARY KEY (chat_id, id)",
        f"CREATE INDEX messageedit_chat_message ON {EDIT} (chat_id, message_id)",
        f"ALTER TABLE {EDIT} ADD CONSTRAINT messageedit_chat_fk"
        f" FOREIGN KEY (chat_id) REFERENCES {CHAT} (id) {DEFERRED}",
        f"ALTER TABLE {EDIT} ADD CONSTRAINT messageedit_message_fk"
        f" FOREIGN KEY (chat_id, message_id) REFERENCES {MESSAGE} (chat_id, id)"
        f" ON DELETE CASCADE {DEFERRED}",
        # Reactions: the unique key is also the index the message's reactions are read by.
        f"ALTER TABLE {REACTION} ADD CONSTRAINT {REACTION}_pkey PRIMARY KEY (chat_id, id)",
        f"ALTER TABLE {REACTION} ADD CONSTRAINT reaction_unique_chat_message_user_emoji"
        f" UNIQUE (chat_id, message_id, user_id, emoji)",
        f"CREATE INDEX reaction_user ON {REACTION} (user_id)",
        f"ALTER TABLE {REACTION} ADD CONSTRAINT reaction_chat_fk"
        f" FOREIGN KEY (chat_id) REFERENCES {CHAT} (id) {DEFERRED}",
        f"ALTER TABLE {REACTION} ADD CONSTRAINT reaction_user_fk"
        f" FOREIGN KEY (user_id) REFERENCES {USER} (id) {DEFERRED}",
        f"ALTER TABLE {REACTION} ADD CONSTRAINT reaction_message_fk"
        f" FOREIGN KEY (chat_id, message_id) REFERENCES {MESSAGE} (chat_id, id)"
        f" ON DELETE CASCADE {DEFERRED}",
        # A read position names a message of its chat; the message deleted, the seq stays.
        f"CREATE INDEX readreceipt_chat_message ON {RECEIPT} (chat_id, message_id)",
        f"ALTER TABLE {RECEIPT} ADD CONSTRAINT readreceipt_message_fk"
        f" FOREIGN KEY (chat_id, message_id) REFERENCES {MESSAGE} (chat_id, id)"
        f" ON DELETE SET NULL (message_id) {DEFERRED}",
    ]
    # The receipts' single-column index on message_id is left to Django (it is its state's).
    for statement in statements:
        schema_editor.execute(statement)
    for table in (MESSAGE, EDIT, REACTION):
        schema_editor.execute(f"ANALYZE {table}")


def unpartition(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        raise NotImplementedError(
            "Going back from partitioned messages is not automated: restore a dump taken"
            " before 0010, or copy the rows into plain tables by hand."
        )


class UnlessPostgreSQL(Operation):
    """`operation` in Django's state everywhere, in the database except on PostgreSQL
    (where `partition` has done its work in SQL)."""

    reduces_to_sql = False

    def __init__(self, operation):
        self.operation = operation

    def deconstruct(self):
        return (self.__class__.__name__, [self.operation], {})

    def state_forwards(self, app_label, state):
        self.operation.state_forwards(app_label, state)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            self.operation.database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor != "postgresql":
            self.operation.database_backwards(app_label, schema_editor, from_state, to_state)

    def describe(self):
        return f"{self.operation.describe()} (except on PostgreSQL)"


STATE = [
    migrations.RemoveConstraint(model_name="message", name="message_unique_sender_client_id"),
    migrations.AddConstraint(
        model_name="message",
        constraint=models.UniqueConstraint(
            condition=Q(client_message_id__isnull=False),
            fields=("chat", "sender", "client_message_id"),
            name="message_unique_chat_sender_client_id",
        ),
    ),
    migrations.RemoveConstraint(model_name="reaction", name="reaction_unique_message_user_emoji"),
    migrations.AddConstraint(
        model_name="reaction",
        constraint=models.UniqueConstraint(
            fields=("chat", "message", "user", "emoji"),
            name="reaction_unique_chat_message_user_emoji",
        ),
    ),
    migrations.AlterField(
        model_name="message",
        name="reply_to",
        field=models.ForeignKey(
            blank=True,
            db_constraint=False,
            null=True,
            on_delete=models.deletion.SET_NULL,
            related_name="+",
            to="messaging.message",
        ),
    ),
    migrations.AlterField(
        model_name="messageedit",
        name="message",
        field=models.ForeignKey(
            db_constraint=False,
            on_delete=models.deletion.CASCADE,
            related_name="edits",
            to="messaging.message",
        ),
    ),
    migrations.AlterField(
        model_name="reaction",
        name="message",
        field=models.ForeignKey(
            db_constraint=False,
            on_delete=models.deletion.CASCADE,
            related_name="reactions",
            to="messaging.message",
        ),
    ),
    migrations.AlterField(
        model_name="readreceipt",
        name="message",
        field=models.ForeignKey(
            db_constraint=False,
            null=True,
            on_delete=models.deletion.SET_NULL,
            related_name="+",
            to="messaging.message",
        ),
    ),
]


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0009_notifications"),
        ("accounts", "0004_unban_permission"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=STATE,
            database_operations=[
                migrations.RunPython(partition, unpartition),
                *(UnlessPostgreSQL(operation) for operation in STATE),
            ],
        )
    ]
