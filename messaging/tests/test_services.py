"""The writes of messaging under contention: seq and rev allocation, idempotent sends, changes, direct chats, read and delivered positions, the hot path's statements."""

import functools
import re
import threading

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext

from messaging import protocol, selectors, services
from messaging.errors import BadRequest, Forbidden, MessagingError, NotFound, NotMember, TooLarge
from messaging.models import Chat, Membership, Message, Reaction, ReadReceipt


def in_threads(count: int, work) -> list:
    """Run `work(index)` in `count` threads released at once; their results in index order.

    Each thread closes its own database connection, so none outlives the test.
    """
    start = threading.Barrier(count)
    results: list = [None] * count
    failures: list = []

    def run(index):
        try:
            start.wait()
            results[index] = work(index)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    if failures:
        raise failures[0]
    return results


def send(chat, sender, text="hi", **extra) -> Message:
    message, _ = services.send_message(sender=sender, chat_id=chat.pk, text=text, **extra)
    return message


# ---------------------------------------------------------------- seq allocation


@pytest.mark.django_db(transaction=True)  # threads of its own write to the database
def test_concurrent_senders_get_seqs_1_to_400_without_hole_or_duplicate(
    user, other_user, third_user, group_chat
):
    senders = [user, other_user, third_user]

    def send_fifty(index):
        sender = senders[index % len(senders)]
        return [send(group_chat, sender, f"{index}-{n}").seq for n in range(50)]

    per_thread = in_threads(8, send_fifty)

    stored = list(Message.objects.filter(chat=group_chat).values_list("seq", flat=True))
    assert sorted(stored) == list(range(1, 401))
    assert sorted(seq for seqs in per_thread for seq in seqs) == list(range(1, 401))
    assert all(seqs == sorted(seqs) for seqs in per_thread)
    group_chat.refresh_from_db()
    assert group_chat.last_seq == 400


def test_seqs_count_per_chat(user, other_user, chat, group_chat):
    send(chat, user)
    send(group_chat, user)
    send(chat, other_user)

    latest = send(group_chat, other_user)

    assert latest.seq == 2
    assert list(Message.objects.filter(chat=chat).values_list("seq", flat=True)) == [1, 2]


def test_refused_sends_leave_no_hole_in_seq(user, other_user, outsider, group_chat):
    send(group_chat, user, "one")
    services.set_muted(chat_id=group_chat.pk, user_id=other_user.pk, muted=True)

    with pytest.raises(NotMember):
        send(group_chat, outsider, "not a member")
    with pytest.raises(Forbidden):
        send(group_chat, other_user, "muted")
    after = send(group_chat, user, "two")

    assert after.seq == 2
    group_chat.refresh_from_db()
    assert group_chat.last_seq == 2


def test_send_to_a_missing_chat_is_not_member(user, chat):
    with pytest.raises(NotMember):
        services.send_message(sender=user, chat_id=chat.pk + 1000, text="anyone?")


def test_send_to_a_chat_you_left_is_refused(user, other_user, group_chat):
    services.remove_member(actor=other_user, chat_id=group_chat.pk, user_id=other_user.pk)

    with pytest.raises(NotMember):
        send(group_chat, other_user, "still here?")


def test_unmuted_member_may_send_again(other_user, group_chat):
    services.set_muted(chat_id=group_chat.pk, user_id=other_user.pk, muted=True)
    services.set_muted(chat_id=group_chat.pk, user_id=other_user.pk, muted=False)

    message = send(group_chat, other_user, "back")

    assert message.seq == 1


@pytest.mark.parametrize(
    ("text", "error"),
    [("", BadRequest), (" \t\n", BadRequest), (None, BadRequest), ("x" * 4001, TooLarge)],
    ids=["empty", "blank", "none", "too-long"],
)
def test_invalid_text_is_refused_before_anything_is_stored(user, chat, text, error):
    with pytest.raises(error):
        services.send_message(sender=user, chat_id=chat.pk, text=text)

    chat.refresh_from_db()
    assert chat.last_seq == 0
    assert not Message.objects.exists()


# ---------------------------------------------------------------- idempotency


def test_retry_with_same_client_message_id_returns_the_stored_message(user, chat):
    first, first_created = services.send_message(
        sender=user, chat_id=chat.pk, text="once", client_message_id="m-1"
    )

    retry, retry_created = services.send_message(
        sender=user, chat_id=chat.pk, text="once", client_message_id="m-1"
    )

    assert (first_created, retry_created) == (True, False)
    assert retry.pk == first.pk
    assert retry.seq == 1
    assert Message.objects.count() == 1
    chat.refresh_from_db()
    assert chat.last_seq == 1


def test_client_message_id_reused_in_another_chat_is_another_message(user, chat, group_chat):
    here = send(chat, user, "here", client_message_id="m-1")

    there = send(group_chat, user, "there", client_message_id="m-1")

    assert here.pk != there.pk
    assert (there.chat_id, there.seq, there.text) == (group_chat.pk, 1, "there")
    assert Message.objects.count() == 2


def test_client_message_id_is_unique_per_sender_not_globally(user, other_user, chat):
    mine = send(chat, user, "mine", client_message_id="same")

    theirs = send(chat, other_user, "theirs", client_message_id="same")

    assert theirs.pk != mine.pk
    assert [m.seq for m in Message.objects.all()] == [1, 2]


@pytest.mark.django_db(transaction=True)  # threads of its own write to the database
def test_concurrent_retries_of_one_message_store_it_once(user, chat):
    def retry(index):
        return services.send_message(
            sender=user, chat_id=chat.pk, text="flaky network", client_message_id="retry-me"
        )

    results = in_threads(6, retry)

    assert len({message.pk for message, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert Message.objects.count() == 1
    chat.refresh_from_db()
    assert chat.last_seq == 1


# ---------------------------------------------------------------- direct chats


@pytest.mark.django_db(transaction=True)  # threads of its own write to the database
def test_racing_requests_for_a_direct_chat_get_one_chat(user, other_user):
    def create(index):
        creator, other = (user, other_user) if index % 2 else (other_user, user)
        return services.create_chat(creator=creator, member_ids=[other.pk])

    results = in_threads(8, create)

    assert len({chat.pk for chat, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert Chat.objects.count() == 1
    assert Membership.objects.count() == 2
    assert ReadReceipt.objects.count() == 2


def test_direct_chat_is_the_same_from_either_side(user, other_user):
    mine, mine_created = services.create_chat(creator=user, member_ids=[other_user.pk])

    theirs, theirs_created = services.create_chat(creator=other_user, member_ids=[user.pk])

    assert (mine_created, theirs_created) == (True, False)
    assert theirs.pk == mine.pk
    assert mine.is_direct


def test_group_chat_creator_is_its_owner(user, other_user, third_user, group_chat):
    roles = dict(Membership.objects.filter(chat=group_chat).values_list("user_id", "role"))

    assert roles == {user.pk: "owner", other_user.pk: "member", third_user.pk: "member"}
    assert not group_chat.is_direct


# ---------------------------------------------------------------- read positions


def test_read_position_never_moves_back(user, other_user, chat):
    older = send(chat, other_user, "older")
    newer = send(chat, other_user, "newer")
    forward, forward_moved = services.mark_read(user=user, chat_id=chat.pk, message_id=newer.pk)

    backward, backward_moved = services.mark_read(user=user, chat_id=chat.pk, message_id=older.pk)

    assert (forward_moved, backward_moved) == (True, False)
    assert (backward.message_id, backward.seq, backward.read_at) == (
        newer.pk,
        2,
        forward.read_at,
    )
    stored = ReadReceipt.objects.get(chat=chat, user=user)
    assert (stored.message_id, stored.seq) == (newer.pk, 2)


def test_reading_the_same_message_again_does_not_move(user, other_user, chat):
    message = send(chat, other_user)
    services.mark_read(user=user, chat_id=chat.pk, message_id=message.pk)

    _, moved = services.mark_read(user=user, chat_id=chat.pk, message_id=message.pk)

    assert moved is False


def test_read_without_a_message_reads_up_to_the_latest(user, other_user, chat):
    send(chat, other_user, "one")
    latest = send(chat, other_user, "two")

    receipt, moved = services.mark_read(user=user, chat_id=chat.pk)

    assert moved is True
    assert (receipt.message_id, receipt.seq) == (latest.pk, 2)
    assert receipt.read_at is not None


def test_read_of_an_empty_chat_changes_nothing(user, chat):
    receipt, moved = services.mark_read(user=user, chat_id=chat.pk)

    assert moved is False
    assert (receipt.message_id, receipt.seq, receipt.read_at) == (None, 0, None)


def test_read_of_a_message_of_another_chat_is_not_found(user, other_user, chat, group_chat):
    elsewhere = send(group_chat, other_user)

    with pytest.raises(NotFound):
        services.mark_read(user=user, chat_id=chat.pk, message_id=elsewhere.pk)


def test_read_by_a_non_member_is_not_member(outsider, other_user, chat):
    message = send(chat, other_user)

    with pytest.raises(NotMember):
        services.mark_read(user=outsider, chat_id=chat.pk, message_id=message.pk)

    assert not ReadReceipt.objects.filter(user=outsider).exists()


@pytest.mark.django_db(transaction=True)  # threads of its own write to the database
def test_concurrent_reads_end_at_the_newest_message(user, other_user, chat):
    messages = [send(chat, other_user, f"m{n}") for n in range(8)]

    in_threads(
        8,
        lambda index: services.mark_read(user=user, chat_id=chat.pk, message_id=messages[index].pk),
    )

    stored = ReadReceipt.objects.get(chat=chat, user=user)
    assert (stored.message_id, stored.seq) == (messages[-1].pk, 8)


@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="PostgreSQL refuses a NUL in text; SQLite stores it",
)
def test_a_row_the_database_refuses_fails_alone_and_the_rest_of_the_batch_is_stored(
    user, other_user, chat
):
    batch = [
        services.Outgoing(user, chat.pk, "fine one"),
        services.Outgoing(other_user, chat.pk, "bad \x00 one"),
        services.Outgoing(user, chat.pk, "fine two"),
    ]

    first, bad, second = services.store_messages(batch)

    assert isinstance(bad, BadRequest)
    assert [first[0].seq, second[0].seq] == [1, 2]
    assert list(Message.objects.values_list("text", flat=True)) == ["fine one", "fine two"]


# ---------------------------------------------------------------- the hot path's statements


def statements_of(work) -> list[str]:
    """The SQL statements `work()` runs, each cut to its first words."""
    with CaptureQueriesContext(connection) as queries:
        work()
    return [" ".join(query["sql"].split()[:3]) for query in queries.captured_queries]


@pytest.mark.django_db(transaction=True)  # counts real BEGIN/COMMIT, not savepoints
def test_a_batch_of_new_messages_costs_the_same_statements_whatever_its_size(
    user, other_user, chat, group_chat
):
    """The hot path: one transaction of the chats locked and two lookups, one UPDATE and one
    INSERT. On PostgreSQL the UPDATE and the INSERT are one statement, so that the chats'
    locks are held over one round trip fewer; on SQLite the reads are one statement (each
    statement is one wait for the GIL in the writer thread), and nothing is read back.

    Before the chat log the same batch ran as many statements: 6 on SQLite, 7 on
    PostgreSQL (which locks the chat rows first). The UPDATE now also moves `last_rev`;
    the lookups moved inside the transaction, after the lock, so that a removal or a ban
    committed meanwhile is seen.
    """
    services.store_messages([services.Outgoing(user, chat.pk, "warm up")])

    def batch(size: int):
        return [
            services.Outgoing(sender, target.pk, f"{size}-{n}", f"cid-{size}-{n}")
            for n in range(size)
            for sender, target in ((user, chat), (other_user, group_chat))
        ]

    one = statements_of(lambda: services.store_messages(batch(1)))
    fifty = statements_of(lambda: services.store_messages(batch(50)))

    assert one == fifty
    if connection.vendor == "sqlite":
        # Each read's rows come back as one JSON array (`WITH t(…) AS (SELECT …)`,
        # storage.fetch_all), the reads of a `together` block as one row.
        assert [s.split()[0] for s in one] == [
            "BEGIN",
            "SELECT",  # the chats' last seq and rev, memberships, mutes and bans, client ids
            "UPDATE",  # seqs and revs
            "INSERT",  # its ids consecutive (the write lock held since BEGIN): no read
            "COMMIT",
        ]
    else:
        assert [s.split()[0] for s in one] == [
            "BEGIN",
            "SELECT",  # the chat rows, locked in id order
            "SELECT",  # memberships, mutes and bans
            "SELECT",  # clientMessageIds already stored
            "WITH",  # seqs and revs taken and the messages inserted, in one statement
            "COMMIT",
        ]


def test_a_large_batch_finds_every_sender_and_every_stored_retry_with_the_same_statements(
    user, group_chat
):
    """A writer that fell behind stores a large batch (350 senders): every sender and every
    stored retry is found, and on SQLite its reads are the very statement a batch of one
    runs (the keys one JSON array, storage._keyed), which sqlite3 prepares once: one OR'ed
    equality per key made a new statement for nearly every batch size, and preparing it
    cost more than running it."""
    from django.contrib.auth import get_user_model

    size = 350
    user_model = get_user_model()
    senders = user_model.objects.bulk_create(user_model(username=f"sender{n}") for n in range(size))
    Membership.objects.bulk_create(Membership(chat=group_chat, user=s) for s in senders)
    batch = [
        services.Outgoing(s, group_chat.pk, f"hi {n}", f"cid-{n}") for n, s in enumerate(senders)
    ]

    first = services.store_messages(batch)
    assert all(created for _, created in first)

    def statements(work) -> list[str]:  # as sent, before the parameters are bound
        sent = []

        def record(execute, sql, params, many, context):
            sent.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record):
            result = work()
        return result, sent

    again, sent = statements(lambda: services.store_messages(batch))
    _, sent_for_one = statements(lambda: services.store_messages(batch[:1]))

    assert [(m.pk, created) for m, created in again] == [(m.pk, False) for m, _ in first]
    assert sorted(m.seq for m, _ in first) == list(range(1, size + 1))
    if connection.vendor == "sqlite":
        reads = [sql for sql in sent if sql.startswith("SELECT (")]
        assert len(reads) == 1 and reads == [
            sql for sql in sent_for_one if sql.startswith("SELECT (")
        ]


def test_a_batch_stores_every_text_exactly_and_gives_each_message_its_own_id(user, chat):
    """The batched insert (one array per column on PostgreSQL, `VALUES` rows on SQLite) keeps
    every text and client id as sent, whatever characters an array literal must escape, and
    matches each returned id to its own message."""
    texts = [
        "plain",
        'with "double" quotes',
        "single ' quote",
        "{braces}",
        "a,b,c",
        'back\\slash \\"',
        "NULL",
        "  spaces around  ",
        "ünïcödé 👍 漢字",
        "new\nline\ttab",
        '{"json": [1, 2], "x": null}',
        "(1,2)",
    ]
    batch = [
        services.Outgoing(user, chat.pk, text, None if n % 3 == 0 else f'cid,{{"{n}"}}')
        for n, text in enumerate(texts)
    ]
    results = services.store_messages(batch)

    for (message, created), request in zip(results, batch, strict=True):
        assert created
        stored = Message.objects.get(pk=message.pk)
        assert (stored.text, stored.client_message_id) == (request.text, request.client_message_id)
        assert (stored.seq, stored.chat_id) == (message.seq, message.chat_id)
    assert sorted(m.seq for m, _ in results) == list(range(1, len(texts) + 1))


def test_one_batch_across_chats_numbers_each_chat_in_the_order_sent(
    user, other_user, chat, group_chat
):
    """A batch of interleaved chats is numbered and inserted in one statement on PostgreSQL:
    each message gets the next seq and rev of its own chat, in the order it was sent, and the
    answer for each request is the row stored for it."""
    send(group_chat, user, "before")  # the group chat starts at seq 2, the direct chat at 1
    react = services.Change(
        other_user,
        group_chat.pk,
        send(group_chat, user, "b2").pk,
        services.Action.REACT,
        emoji="👍",
    )
    services.apply_changes([react])  # the group chat's rev is now ahead of its seq
    targets = [chat, group_chat, group_chat, chat, group_chat, chat, chat]
    batch = [
        services.Outgoing(sender, target.pk, f"{n}", f"mixed-{n}")
        for n, (sender, target) in enumerate(zip([user, other_user] * 4, targets, strict=False))
    ]

    results = services.store_messages(batch)

    assert [(m.chat_id, m.seq) for m, _ in results] == [
        (chat.pk, 1),
        (group_chat.pk, 3),
        (group_chat.pk, 4),
        (chat.pk, 2),
        (group_chat.pk, 5),
        (chat.pk, 3),
        (chat.pk, 4),
    ]
    assert [m.rev for m, _ in results if m.chat_id == group_chat.pk] == [4, 5, 6]
    for (message, created), request in zip(results, batch, strict=True):
        stored = Message.objects.get(pk=message.pk)
        assert created and stored.text == request.text
        assert (stored.chat_id, stored.seq, stored.rev) == (
            message.chat_id,
            message.seq,
            message.rev,
        )
    for target in (chat, group_chat):
        target.refresh_from_db()
    assert (chat.last_seq, chat.last_rev) == (4, 4)
    assert (group_chat.last_seq, group_chat.last_rev) == (5, 6)


def round_trips(work, tmp_path) -> list[list[str]]:
    """The statements `work` sends to PostgreSQL, grouped by round trip (read off libpq's own
    trace of the wire protocol: a round trip is a run of frontend messages before the answers)."""
    from psycopg.pq import Trace

    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    path = tmp_path / "libpq.trace"
    with open(path, "w") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
        try:
            work()
        finally:
            pgconn.untrace()
    trips: list[list[str]] = []
    sending = False
    for line in path.read_text().splitlines():
        direction = line.split("\t", 1)[0]
        if direction == "F" and not sending:
            trips.append([])
        sending = direction == "F"
        statement = re.match(r'F\t\d+\t(?:Parse\t "" |Query\t )"(\w+)', line)
        if statement:
            trips[-1].append(statement.group(1))  # the statement's first word
    return trips


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="a round trip to the database server is PostgreSQL's",
)
@pytest.mark.django_db(transaction=True)
def test_a_batch_reads_who_may_write_in_one_round_trip_after_the_lock(
    user, other_user, chat, tmp_path
):
    """The message writer's thread waits for the GIL after every round trip (the event loop
    holds it, up to 5 ms each): the lock and the reads under it go in one pipeline, in order."""
    services.store_messages([services.Outgoing(user, chat.pk, "warm up")])
    batch = [services.Outgoing(user, chat.pk, f"m{n}", f"cid-{n}") for n in range(3)]
    first = services.store_messages(batch)
    assert all(created for _, created in first)

    trips = round_trips(lambda: services.store_messages(batch), tmp_path)  # all retries now

    assert trips == [
        ["BEGIN"],
        ["SELECT", "SELECT", "SELECT"],  # the chats locked, memberships, clientMessageIds
        ["SELECT"],  # the stored retries' messages
        ["SELECT"],  # and their reactions
        ["COMMIT"],
    ]
    trips = round_trips(
        lambda: services.store_messages([services.Outgoing(user, chat.pk, "new", "cid-new")]),
        tmp_path,
    )
    # Numbered and inserted in one statement: the chats' locks held over one round trip fewer.
    assert trips == [["BEGIN"], ["SELECT", "SELECT", "SELECT"], ["WITH"], ["COMMIT"]]

    # A batch of changes: the chats locked and the memberships read in one round trip too.
    message = first[0][0]
    react = services.Change(other_user, chat.pk, message.pk, services.Action.REACT, emoji="👍")
    trips = round_trips(lambda: services.apply_changes([react]), tmp_path)
    assert trips[:2] == [["BEGIN"], ["SELECT", "SELECT"]]


@pytest.mark.django_db(transaction=True)  # counts real BEGIN/COMMIT, not savepoints
def test_a_batch_with_replies_costs_one_read_more_in_the_same_round_trip(user, chat):
    original = send(chat, user, "original")
    plain = [services.Outgoing(user, chat.pk, f"plain {n}") for n in range(5)]
    replies = [
        services.Outgoing(user, chat.pk, f"reply {n}", reply_to=original.pk) for n in range(5)
    ]

    with CaptureQueriesContext(connection) as queries:
        services.store_messages(plain)
    without = [q["sql"] for q in queries.captured_queries]
    with CaptureQueriesContext(connection) as queries:
        services.store_messages(replies)
    with_replies = [q["sql"] for q in queries.captured_queries]

    # PostgreSQL: one statement more in the same pipeline (the round trip is tested above);
    # SQLite: one subquery more in the same statement.
    if connection.vendor == "sqlite":
        assert len(with_replies) == len(without)
        (reads,) = [s for s in with_replies if s.startswith("SELECT (WITH")]
        (reads_before,) = [s for s in without if s.startswith("SELECT (WITH")]
        assert reads.count("WITH t(") == reads_before.count("WITH t(") + 1
    else:
        assert len(with_replies) == len(without) + 1


@pytest.mark.django_db(transaction=True)  # counts real BEGIN/COMMIT, not savepoints
def test_a_batch_of_changes_costs_the_same_statements_whatever_its_size(user, other_user, chat):
    messages = [send(chat, user, f"m{n}") for n in range(40)]

    def edits(first: int, count: int):
        return [
            services.Change(user, chat.pk, m.pk, services.Action.EDIT, text=f"edited {first}")
            for m in messages[first : first + count]
        ]

    one = statements_of(lambda: services.apply_changes(edits(0, 1)))
    twenty = statements_of(lambda: services.apply_changes(edits(1, 20)))

    assert [s.split()[0] for s in one] == [s.split()[0] for s in twenty]
    assert len(one) <= 10


# ---------------------------------------------------------------- the chat log


def test_new_messages_and_changes_share_one_gap_free_rev_per_chat(user, other_user, chat):
    first = send(chat, user, "one")
    services.edit_message(user=user, chat_id=chat.pk, message_id=first.pk, text="one!")
    services.react(user=other_user, chat_id=chat.pk, message_id=first.pk, emoji="👍")
    second = send(chat, other_user, "two")
    services.delete_own_message(user=other_user, chat_id=chat.pk, message_id=second.pk)

    chat.refresh_from_db()
    first.refresh_from_db()
    second.refresh_from_db()
    assert (chat.last_seq, chat.last_rev) == (2, 5)
    assert (first.seq, first.rev, second.seq, second.rev) == (1, 3, 2, 5)


def test_changes_that_change_nothing_take_no_rev(user, other_user, chat):
    message = send(chat, user, "same")

    edit = services.edit_message(user=user, chat_id=chat.pk, message_id=message.pk, text="same")
    off = services.react(
        user=other_user, chat_id=chat.pk, message_id=message.pk, emoji="👍", on=False
    )

    chat.refresh_from_db()
    assert (edit.changed, off.changed) == (False, False)
    assert chat.last_rev == 1
    assert edit.frame["type"] == "update" and edit.frame["data"]["message"]["rev"] == "1"


def test_refused_changes_take_no_rev(user, other_user, outsider, chat):
    message = send(chat, user, "mine")
    attempts = [
        lambda: services.edit_message(
            user=other_user, chat_id=chat.pk, message_id=message.pk, text="x"
        ),
        lambda: services.delete_own_message(
            user=other_user, chat_id=chat.pk, message_id=message.pk
        ),
        lambda: services.react(user=outsider, chat_id=chat.pk, message_id=message.pk, emoji="x"),
        lambda: services.react(user=user, chat_id=chat.pk, message_id=0, emoji="x"),
    ]

    errors = []
    for attempt in attempts:
        with pytest.raises(MessagingError) as refused:
            attempt()
        errors.append(refused.value.code)

    chat.refresh_from_db()
    assert errors == ["forbidden", "forbidden", "not_member", "not_found"]
    assert chat.last_rev == 1


def test_one_batch_of_changes_numbers_each_change_and_keeps_each_frame_as_it_was(
    user, other_user, chat
):
    message = send(chat, user, "v1")
    change = functools.partial(services.Change, chat_id=chat.pk, message_id=message.pk)

    outcomes = services.apply_changes(
        [
            change(user, action=services.Action.EDIT, text="v2"),
            change(other_user, action=services.Action.REACT, emoji="👍"),
            change(user, action=services.Action.REACT, emoji="🎉"),
            change(other_user, action=services.Action.UNREACT, emoji="👍"),
            change(other_user, action=services.Action.REACT, emoji="👍"),
        ]
    )

    seen = [
        (o.rev, o.frame["data"]["message"]["text"], o.frame["data"]["message"]["reactions"])
        for o in outcomes
    ]
    assert seen == [
        (2, "v2", []),
        (3, "v2", [{"emoji": "👍", "userIds": [str(other_user.pk)]}]),
        (
            4,
            "v2",
            [
                {"emoji": "👍", "userIds": [str(other_user.pk)]},
                {"emoji": "🎉", "userIds": [str(user.pk)]},
            ],
        ),
        (5, "v2", [{"emoji": "🎉", "userIds": [str(user.pk)]}]),
        (
            6,
            "v2",
            [
                {"emoji": "🎉", "userIds": [str(user.pk)]},
                {"emoji": "👍", "userIds": [str(other_user.pk)]},
            ],
        ),
    ]
    stored = Message.objects.framed(message.chat_id).get(pk=message.pk)
    assert stored.rev == 6
    assert protocol.message_data(stored)["reactions"] == seen[-1][2]


def test_a_batch_removing_reactions_removes_exactly_those_and_keeps_every_other(
    user, other_user, chat
):
    """Each removed (message, user, emoji) is matched as a whole: the batch's other messages,
    users and emoji crossed with each other (which a match per column would also hit) stay."""
    messages = [send(chat, user, f"m{n}") for n in range(2)]
    people, emoji = [user, other_user], ["👍", "🎉"]
    change = functools.partial(services.Change, chat_id=chat.pk)
    everything = [(message, person, e) for message in messages for person in people for e in emoji]
    services.apply_changes(
        [
            change(p, message_id=m.pk, action=services.Action.REACT, emoji=e)
            for m, p, e in everything
        ]
    )
    removed = [(messages[0], user, "👍"), (messages[1], other_user, "🎉")]

    outcomes = services.apply_changes(
        [change(p, message_id=m.pk, action=services.Action.UNREACT, emoji=e) for m, p, e in removed]
    )

    assert [o.changed for o in outcomes] == [True, True]
    stored = set(Reaction.objects.values_list("message_id", "user_id", "emoji"))
    assert stored == {(m.pk, p.pk, e) for m, p, e in everything if (m, p, e) not in removed}
    kept = Message.objects.framed(chat.pk).get(pk=messages[0].pk)
    assert protocol.message_data(kept)["reactions"] == [  # in order of first use still there
        {"emoji": "🎉", "userIds": [str(user.pk), str(other_user.pk)]},
        {"emoji": "👍", "userIds": [str(other_user.pk)]},
    ]


@pytest.mark.django_db(transaction=True)  # threads of its own write to the database
def test_concurrent_edits_and_reactions_take_revs_without_hole_or_duplicate(
    user, other_user, third_user, group_chat
):
    members = [user, other_user, third_user]
    messages = {m: send(group_chat, m, f"by {m.username}") for m in members}

    def change_forty(index):
        someone = members[index % len(members)]
        revs = []
        for n in range(40):
            if n % 2:
                outcome = services.edit_message(
                    user=someone,
                    chat_id=group_chat.pk,
                    message_id=messages[someone].pk,
                    text=f"{index}-{n}",
                )
            else:
                outcome = services.react(
                    user=someone,
                    chat_id=group_chat.pk,
                    message_id=messages[members[n % 3]].pk,
                    emoji=f"e{index}",
                    on=n % 4 == 0,
                )
            if outcome.changed:
                revs.append(outcome.rev)
        return revs

    per_thread = in_threads(6, change_forty)

    group_chat.refresh_from_db()
    taken = sorted(rev for revs in per_thread for rev in revs)
    assert taken == list(range(4, group_chat.last_rev + 1))
    assert all(revs == sorted(revs) for revs in per_thread)
    latest = max(m.rev for m in Message.objects.filter(chat=group_chat))
    assert latest == group_chat.last_rev


def test_restore_brings_back_the_text_and_edit_history_but_not_the_reactions(
    user, other_user, chat
):
    message = send(chat, user, "first")
    services.edit_message(user=user, chat_id=chat.pk, message_id=message.pk, text="second")
    services.react(user=other_user, chat_id=chat.pk, message_id=message.pk, emoji="👍")

    assert services.delete_message(message=message, moderator=other_user)
    assert services.restore_message(message=message, moderator=other_user)

    restored = Message.objects.framed(message.chat_id).get(pk=message.pk)
    assert protocol.message_data(restored)["text"] == "second"
    assert protocol.message_data(restored)["reactions"] == []
    assert [e["text"] for e in selectors.edit_history(restored)] == ["first", "second"]
    assert restored.rev == 5


def test_a_message_its_author_deleted_cannot_be_restored(user, other_user, chat):
    message = send(chat, user, "regret")
    services.delete_own_message(user=user, chat_id=chat.pk, message_id=message.pk)
    message.refresh_from_db()

    with pytest.raises(Forbidden):
        services.restore_message(message=message, moderator=other_user)

    message.refresh_from_db()
    assert message.deleted_at is not None


def test_delivered_position_moves_forward_only_and_past_the_last_counts_as_the_last(
    user, other_user, chat
):
    for n in range(3):
        send(chat, user, f"m{n}")

    steps = [
        services.mark_delivered(user=other_user, chat_id=chat.pk, seq=seq) for seq in (2, 1, 99)
    ]

    assert steps == [(2, True), (2, False), (3, True)]
    assert ReadReceipt.objects.get(chat=chat, user=other_user).delivered_seq == 3


def test_reading_moves_the_delivered_position_too(user, other_user, chat):
    first = send(chat, user, "one")
    send(chat, user, "two")

    services.mark_read(user=other_user, chat_id=chat.pk)

    receipt = ReadReceipt.objects.get(chat=chat, user=other_user)
    assert (receipt.seq, receipt.delivered_seq) == (2, 2)
    assert services.mark_delivered(user=other_user, chat_id=chat.pk, seq=first.seq) == (2, False)
