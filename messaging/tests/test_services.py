"""The writes of messaging under contention: seq allocation, idempotent sends, direct chats, read positions."""

import threading

import pytest
from django.conf import settings
from django.db import connection

from messaging import services
from messaging.errors import BadRequest, Forbidden, NotFound, NotMember, TooLarge
from messaging.models import Chat, Membership, Message, ReadReceipt


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


def test_client_message_id_reused_in_another_chat_is_bad_request(user, chat, group_chat):
    send(chat, user, "here", client_message_id="m-1")

    with pytest.raises(BadRequest):
        send(group_chat, user, "there", client_message_id="m-1")

    assert Message.objects.count() == 1


def test_client_message_id_is_unique_per_sender_not_globally(user, other_user, chat):
    mine = send(chat, user, "mine", client_message_id="same")

    theirs = send(chat, other_user, "theirs", client_message_id="same")

    assert theirs.pk != mine.pk
    assert [m.seq for m in Message.objects.all()] == [1, 2]


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
