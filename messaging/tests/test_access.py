"""Access decided by the database: a lost live event fools no socket for more than a second or so.

Here a live event is "lost" by changing the database the way the service does
(an access change recorded in the same transaction) while the channel layer
never hears of it; the two-process tests with a paused Redis are in test_cluster.py.
"""

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from conftest import db_call, expect_error
from messaging.models import AccessChange, Membership
from messaging.realtime import access

pytestmark = pytest.mark.django_db(transaction=True)

# The access watch polls every POLL_SECONDS; a socket must have re-checked within this.
RECHECK_WITHIN = access.POLL_SECONDS + 3.0


def remove_without_telling_anyone(chat, user) -> None:
    """A removal committed while its live event was lost (Redis away)."""
    Membership.objects.filter(chat=chat, user=user).delete()
    AccessChange.objects.create(
        user=user, chat_id=chat.pk, kind=AccessChange.Kind.REMOVED, created_at=timezone.now()
    )


def ban_without_telling_anyone(user) -> None:
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    AccessChange.objects.create(user=user, kind=AccessChange.Kind.BANNED, created_at=timezone.now())


async def test_a_member_whose_removal_event_was_lost_is_told_and_stops_receiving_the_chat(
    user, other_user, chat, connect
):
    alice = await connect(user)
    bob = await connect(other_user)

    await db_call(remove_without_telling_anyone)(chat, other_user)
    frame = await bob.receive_type("chat", timeout=RECHECK_WITHIN)
    await alice.send("message", chatId=str(chat.pk), text="after", clientMessageId="a1")
    await alice.receive_type("message")

    assert frame["data"] == {"chatId": str(chat.pk), "event": "removed"}
    assert await bob.nothing(timeout=0.5)


async def test_typing_in_a_chat_the_database_says_you_left_is_not_member(
    user, other_user, chat, connect
):
    bob = await connect(other_user)

    await db_call(remove_without_telling_anyone)(chat, other_user)
    await bob.receive_type("chat", timeout=RECHECK_WITHIN)
    await bob.send("typing", chatId=str(chat.pk))

    await expect_error(bob, "not_member", "typing")


async def test_sync_of_a_chat_you_were_removed_from_replays_nothing_even_before_the_socket_knows(
    user, other_user, chat, connect
):
    bob = await connect(other_user)

    await db_call(remove_without_telling_anyone)(chat, other_user)
    await bob.send("sync", chats={str(chat.pk): "0"})  # at once: before any re-check

    await expect_error(bob, "not_member", "sync")
    summary = await bob.receive_type("sync")
    assert summary["data"]["chats"] == {}


async def test_a_member_added_while_the_event_was_lost_starts_receiving_the_chat(
    user, outsider, group_chat, connect
):
    mallory = await connect(outsider)

    def add_quietly():
        Membership.objects.create(chat=group_chat, user=outsider)
        AccessChange.objects.create(
            user=outsider,
            chat_id=group_chat.pk,
            kind=AccessChange.Kind.ADDED,
            created_at=timezone.now(),
        )

    await db_call(add_quietly)()
    frame = await mallory.receive_type("chat", timeout=RECHECK_WITHIN)

    assert frame["data"] == {"chatId": str(group_chat.pk), "event": "added"}


async def test_a_banned_users_send_is_refused_in_the_storing_transaction_and_closes_the_socket(
    user, chat, connect
):
    alice = await connect(user)
    # The ban lands but neither its live event nor the re-check has reached the socket yet.
    await db_call(get_user_model().objects.filter(pk=user.pk).update)(is_active=False)

    await alice.send("message", chatId=str(chat.pk), text="still here?", clientMessageId="b1")

    error = await expect_error(alice, "unauthorized", "b1")
    goodbye = await alice.receive()
    assert goodbye == {"type": "disconnect", "data": {"userId": str(user.pk), "reason": "banned"}}
    assert await alice.closed_with() == 4001
    assert error["data"]["message"]
    assert not await db_call(chat.messages.exists)()


async def test_a_user_whose_ban_event_was_lost_is_disconnected_within_seconds(user, chat, connect):
    alice = await connect(user)

    await db_call(ban_without_telling_anyone)(user)
    goodbye = await alice.receive_type("disconnect", timeout=RECHECK_WITHIN)

    assert goodbye["data"] == {"userId": str(user.pk), "reason": "banned"}
    assert await alice.closed_with() == 4001
