"""Moderation through the Django admin's own views, and its effect on live sockets and the API."""

import importlib
from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User
from conftest import db_call, make_user, token_for
from messaging import services
from messaging.errors import Forbidden
from messaging.models import Chat, Exclusion, Membership, Message, ReadReceipt

MODERATOR_PERMISSIONS = {
    "messaging.view_chat",
    "messaging.view_message",
    "messaging.moderate_message",
    "messaging.view_membership",
    "messaging.moderate_membership",
    "messaging.view_readreceipt",
    "accounts.view_user",
    "accounts.ban_user",
}


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def moderators_group(transactional_db):
    """The Moderators group as migration 0003 makes it.

    A transactional test flushes every table after it, migration data included,
    so a later test finds no group: it is rebuilt by the migration's own function.
    """
    group = Group.objects.filter(name="Moderators").first()
    if group is None:
        migration = importlib.import_module("messaging.migrations.0003_moderators_group")
        state = MigrationLoader(connection).project_state(("messaging", "0003_moderators_group"))
        migration.create_moderators(state.apps, None)
        group = Group.objects.get(name="Moderators")
    return group


@pytest.fixture
def moderator(moderators_group):
    """A staff user in the Moderators group, not a superuser."""
    someone = make_user("moderator", is_staff=True)
    someone.groups.add(moderators_group)
    return someone


@pytest.fixture
def moderator_client(moderator):
    client = Client()
    client.force_login(moderator)
    return client


def changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def change_page(obj) -> str:
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def run_action(client, action: str, *objects) -> list[str]:
    """Post the changelist's action form as its "Go" button does; the messages shown after."""
    url = changelist(type(objects[0]))
    response = client.post(
        url,
        {"action": action, ACTION_CHECKBOX_NAME: [obj.pk for obj in objects], "index": "0"},
        follow=True,
    )
    assert response.status_code == 200
    assert response.redirect_chain == [(url, 302)]
    return [str(message) for message in response.context["messages"]]


def offered_actions(client, model) -> set[str]:
    response = client.get(changelist(model))
    assert response.status_code == 200
    action_form = response.context["action_form"]
    if action_form is None:
        return set()
    return {name for name, _ in action_form.fields["action"].choices if name}


async def frames_until_quiet(client, quiet: float = 0.3) -> list[dict]:
    """Every frame the socket receives until it is quiet for `quiet` seconds."""
    frames = []
    while not await client.nothing(timeout=quiet):
        frames.append(await client.receive())
    return frames


def send_stored(sender, chat, text: str) -> Message:
    message, _ = services.send_message(sender=sender, chat_id=chat.pk, text=text)
    return message


def membership(chat, someone) -> Membership:
    return Membership.objects.get(chat=chat, user=someone)


def history(someone, chat) -> list[dict]:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(someone)}")
    answer = api.get(f"/api/chats/{chat.pk}/messages/")
    assert answer.status_code == 200, answer.content
    return answer.json()["results"]


# ---------------------------------------------------------------- delete and restore


async def test_deleting_a_message_in_the_admin_sends_delete_to_members_sockets(
    user, other_user, outsider, chat, moderator_client, connect
):
    message = await db_call(send_stored)(user, chat, "spam")
    alice = await connect(user)
    alice_phone = await connect(user)
    bob = await connect(other_user)
    mallory = await connect(outsider)

    shown = await db_call(run_action)(moderator_client, "delete_messages", message)

    assert shown == ["1 message(s) deleted."]
    expected = {
        "type": "delete",
        "data": {"chatId": str(chat.pk), "messageId": str(message.pk), "seq": "1", "rev": "2"},
    }
    for client in (alice, alice_phone, bob):
        assert await client.receive_type("delete") == expected
    assert await mallory.nothing()


def test_a_message_deleted_in_the_admin_is_served_by_history_as_deleted_without_text(
    user, other_user, chat, moderator, moderator_client
):
    kept = send_stored(user, chat, "hello")
    removed = send_stored(user, chat, "spam")

    run_action(moderator_client, "delete_messages", removed)

    results = history(other_user, chat)
    assert [(m["id"], m["seq"], m["deleted"], m["text"]) for m in results] == [
        (str(kept.pk), "1", False, "hello"),
        (str(removed.pk), "2", True, None),
    ]
    removed.refresh_from_db()
    assert removed.deleted_by == moderator


def test_restoring_a_message_in_the_admin_brings_its_text_back_to_history(
    user, other_user, chat, moderator, moderator_client
):
    message = send_stored(user, chat, "not spam after all")
    services.delete_message(message=message, moderator=moderator)

    shown = run_action(moderator_client, "restore_messages", message)

    assert shown == ["1 message(s) restored."]
    (restored,) = history(other_user, chat)
    assert (restored["deleted"], restored["text"]) == (False, "not spam after all")


async def test_restoring_a_message_in_the_admin_sends_update_with_its_text_to_members_sockets(
    user, other_user, chat, moderator, moderator_client, connect
):
    message = await db_call(send_stored)(user, chat, "not spam after all")
    await db_call(services.delete_message)(message=message, moderator=moderator)
    alice = await connect(user)
    bob = await connect(other_user)

    shown = await db_call(run_action)(moderator_client, "restore_messages", message)

    assert shown == ["1 message(s) restored."]
    for client in (alice, bob):
        update = await client.receive_type("update")
        assert update["data"]["message"]["id"] == str(message.pk)
        assert update["data"]["message"]["text"] == "not spam after all"
        assert (update["data"]["message"]["deleted"], update["data"]["message"]["rev"]) == (
            False,
            "3",
        )


def test_a_message_its_author_deleted_is_not_restored_and_the_moderator_is_told_why(
    user, chat, moderator, moderator_client
):
    message = send_stored(user, chat, "I take it back")
    services.delete_own_message(user=user, chat_id=chat.pk, message_id=message.pk)

    shown = run_action(moderator_client, "restore_messages", message)

    assert shown == [
        "0 message(s) restored.",
        "1 message(s) were deleted by their authors and cannot be restored.",
    ]
    assert Message.objects.get(pk=message.pk).deleted_at is not None
    assert not LogEntry.objects.filter(user=moderator).exists()


def test_the_message_page_shows_its_edit_history_and_reactions(
    user, other_user, third_user, group_chat, moderator_client
):
    message = send_stored(user, group_chat, "first <b>draft</b>")
    services.edit_message(user=user, chat_id=group_chat.pk, message_id=message.pk, text="final")
    for someone, emoji in ((other_user, "👍"), (third_user, "🎉"), (third_user, "👍")):
        services.react(user=someone, chat_id=group_chat.pk, message_id=message.pk, emoji=emoji)

    page = moderator_client.get(change_page(message)).content.decode()

    assert "first &lt;b&gt;draft&lt;/b&gt;" in page
    assert "<b>draft</b>" not in page
    assert '<p class="reaction">👍 bob, carol</p><p class="reaction">🎉 carol</p>' in page


def test_deleting_an_already_deleted_message_changes_and_logs_nothing(
    user, chat, moderator, moderator_client
):
    message = send_stored(user, chat, "spam")
    run_action(moderator_client, "delete_messages", message)
    first = Message.objects.get(pk=message.pk).deleted_at

    shown = run_action(moderator_client, "delete_messages", message)

    assert shown == ["0 message(s) deleted."]
    assert Message.objects.get(pk=message.pk).deleted_at == first
    assert LogEntry.objects.filter(user=moderator).count() == 1


# ---------------------------------------------------------------- mute and unmute


async def test_a_member_muted_in_the_admin_gets_forbidden_for_each_send_until_unmuted(
    user, other_user, group_chat, moderator_client, connect
):
    alice = await connect(user)
    bob = await connect(other_user)
    bobs_membership = await db_call(membership)(group_chat, other_user)

    shown = await db_call(run_action)(moderator_client, "mute_members", bobs_membership)

    assert shown == ["1 member(s) muted."]
    for n in range(2):
        await bob.send("message", chatId=str(group_chat.pk), text="shout", clientMessageId=f"m{n}")
        refused = await bob.receive_type("error")
        assert (refused["data"]["code"], refused["data"]["ref"]) == ("forbidden", f"m{n}")
    assert "message" not in [frame["type"] for frame in await frames_until_quiet(alice)]
    assert await db_call(Message.objects.filter(chat=group_chat).count)() == 0

    shown = await db_call(run_action)(moderator_client, "unmute_members", bobs_membership)

    assert shown == ["1 member(s) unmuted."]
    await bob.send("message", chatId=str(group_chat.pk), text="sorry", clientMessageId="m2")
    assert (await alice.receive_type("message"))["data"]["text"] == "sorry"
    assert (await bob.receive_type("message"))["data"]["text"] == "sorry"


# ---------------------------------------------------------------- remove a member


async def test_removing_a_member_in_the_admin_sends_chat_removed_and_stops_that_chat_at_once(
    user, other_user, third_user, group_chat, moderator_client, connect
):
    alice = await connect(user)
    bob = await connect(other_user)
    carol = await connect(third_user)
    carol_phone = await connect(third_user)
    carols_membership = await db_call(membership)(group_chat, third_user)

    shown = await db_call(run_action)(moderator_client, "remove_members", carols_membership)

    assert shown == ["1 member(s) removed."]
    expected = {"type": "chat", "data": {"chatId": str(group_chat.pk), "event": "removed"}}
    for client in (carol, carol_phone):
        assert await client.receive_type("chat") == expected
    await alice.send("message", chatId=str(group_chat.pk), text="without carol")
    assert (await bob.receive_type("message"))["data"]["text"] == "without carol"
    assert await carol.nothing()
    assert await carol_phone.nothing()
    await carol.send("message", chatId=str(group_chat.pk), text="still here?")
    assert (await carol.receive_type("error"))["data"]["code"] == "not_member"
    assert not await db_call(Membership.objects.filter(pk=carols_membership.pk).exists)()


# ---------------------------------------------------------------- ban


async def test_banning_a_user_in_the_admin_closes_each_of_their_sockets_with_4001(
    user, other_user, chat, moderator_client, connect
):
    alice = await connect(user)
    bob = await connect(other_user)
    bob_phone = await connect(other_user)

    shown = await db_call(run_action)(moderator_client, "ban_users", other_user)

    assert shown == ["1 user(s) banned."]
    for client in (bob, bob_phone):
        assert await client.receive_type("disconnect") == {
            "type": "disconnect",
            "data": {"userId": str(other_user.pk), "reason": "banned"},
        }
        assert await client.closed_with() == 4001
    await alice.send("ping")
    assert (await alice.receive_type("pong"))["type"] == "pong"


async def test_a_banned_users_old_tokens_no_longer_open_a_socket_the_api_or_a_refresh(
    other_user, moderator_client, connect
):
    old_token = token_for(other_user)
    old_refresh = str(await db_call(RefreshToken.for_user)(other_user))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {old_token}")
    assert (await db_call(api.get)("/api/me/")).status_code == 200

    await db_call(run_action)(moderator_client, "ban_users", other_user)

    refused = await connect(token=old_token)
    assert (await refused.receive())["data"]["code"] == "unauthorized"
    assert await refused.closed_with() == 4001
    assert (await db_call(api.get)("/api/me/")).status_code == 401
    refreshed = await db_call(APIClient().post)(
        "/api/auth/token/refresh/", {"refresh": old_refresh}, format="json"
    )
    assert refreshed.status_code == 401


def test_a_moderator_cannot_ban_themselves_another_moderator_or_a_superuser(
    moderator, moderators_group, moderator_client
):
    other_moderator = make_user("other-moderator", is_staff=True)
    other_moderator.groups.add(moderators_group)
    superuser = make_user("root", is_staff=True, is_superuser=True)

    shown = run_action(moderator_client, "ban_users", moderator, other_moderator, superuser)

    assert shown == [
        "moderator was not banned: You cannot ban yourself.",
        "other-moderator was not banned: Only a superuser can ban staff.",
        "root was not banned: Only a superuser can ban staff.",
        "0 user(s) banned.",
    ]
    for someone in (moderator, other_moderator, superuser):
        someone.refresh_from_db()
        assert someone.is_active
    assert not LogEntry.objects.filter(user=moderator).exists()


async def test_unticking_active_on_a_users_change_form_closes_their_sockets_like_a_ban(
    other_user, connect
):
    superuser = await db_call(make_user)("root", is_staff=True, is_superuser=True)
    admin = Client()
    await db_call(admin.force_login)(superuser)
    bob = await connect(other_user)
    # The change form as posted with "Active" unticked (an unticked box is not sent).
    form = {
        "username": other_user.username,
        "date_joined_0": "2026-11-25",
        "date_joined_1": "20:00",
    }

    response = await db_call(admin.post)(change_page(other_user), form)

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert (await bob.receive_type("disconnect"))["data"]["reason"] == "banned"
    assert await bob.closed_with() == 4001


# ---------------------------------------------------------------- the admin log


def test_each_admin_action_leaves_one_entry_in_the_admin_log(
    user, other_user, third_user, group_chat, moderator, moderator_client
):
    message = send_stored(user, group_chat, "spam")
    bobs = membership(group_chat, other_user)
    carols = membership(group_chat, third_user)

    run_action(moderator_client, "delete_messages", message)
    run_action(moderator_client, "restore_messages", message)
    run_action(moderator_client, "mute_members", bobs)
    run_action(moderator_client, "unmute_members", bobs)
    run_action(moderator_client, "remove_members", carols)
    run_action(moderator_client, "ban_users", other_user)

    entries = LogEntry.objects.filter(user=moderator).order_by("pk")
    assert [
        (e.content_type.model, e.object_id, e.action_flag, e.get_change_message()) for e in entries
    ] == [
        ("message", str(message.pk), CHANGE, "Deleted by a moderator."),
        ("message", str(message.pk), CHANGE, "Restored by a moderator."),
        ("membership", str(bobs.pk), CHANGE, "Muted."),
        ("membership", str(bobs.pk), CHANGE, "Unmuted."),
        ("chat", str(group_chat.pk), CHANGE, f"Removed member {third_user}."),
        ("user", str(other_user.pk), CHANGE, "Banned (deactivated)."),
    ]


# ---------------------------------------------------------------- who may moderate


def test_the_moderators_group_has_exactly_the_moderation_permissions(moderators_group, moderator):
    granted = {
        f"{p.content_type.app_label}.{p.codename}" for p in moderators_group.permissions.all()
    }

    assert granted == MODERATOR_PERMISSIONS
    assert moderator.get_all_permissions() == MODERATOR_PERMISSIONS


def test_a_moderator_is_offered_exactly_the_moderation_actions(moderator_client):
    assert offered_actions(moderator_client, Message) == {"delete_messages", "restore_messages"}
    assert offered_actions(moderator_client, Membership) == {
        "mute_members",
        "unmute_members",
        "remove_members",
    }
    assert offered_actions(moderator_client, User) == {"ban_users"}
    assert offered_actions(moderator_client, Chat) == set()
    assert offered_actions(moderator_client, ReadReceipt) == set()


def test_a_user_who_is_not_staff_is_redirected_to_the_admin_login(
    user, chat, moderators_group, client
):
    message = send_stored(user, chat, "spam")
    not_staff = make_user("eve")
    not_staff.groups.add(moderators_group)
    client.force_login(not_staff)

    for url in (reverse("admin:index"), changelist(Message)):
        response = client.get(url)
        assert response.status_code == 302
        assert response.url == f"{reverse('admin:login')}?next={url}"
    response = client.post(
        changelist(Message), {"action": "delete_messages", ACTION_CHECKBOX_NAME: [message.pk]}
    )

    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:login"))
    message.refresh_from_db()
    assert message.deleted_at is None


def test_staff_outside_the_moderators_group_cannot_run_moderation_actions(
    user, chat, transactional_db, client
):
    message = send_stored(user, chat, "spam")
    staff = make_user("intern", is_staff=True)
    staff.user_permissions.add(
        Permission.objects.get(content_type__app_label="messaging", codename="view_message")
    )
    client.force_login(staff)

    assert offered_actions(client, Message) == set()
    response = client.post(
        changelist(Message),
        {"action": "delete_messages", ACTION_CHECKBOX_NAME: [message.pk], "index": "0"},
        follow=True,
    )

    assert response.status_code == 200
    message.refresh_from_db()
    assert message.deleted_at is None


def test_a_moderator_cannot_add_users_nor_change_a_users_permissions(
    other_user, moderators_group, moderator_client
):
    pages = [
        reverse("admin:accounts_user_add"),
        reverse("admin:auth_user_password_change", args=[other_user.pk]),
        reverse("admin:auth_group_changelist"),
        change_page(moderators_group),
    ]
    for url in pages:
        assert moderator_client.get(url).status_code == 403, url

    response = moderator_client.post(
        change_page(other_user),
        {"username": other_user.username, "is_staff": "on", "is_superuser": "on"},
    )

    assert response.status_code == 403
    other_user.refresh_from_db()
    assert not (other_user.is_staff or other_user.is_superuser)


def test_a_moderator_cannot_edit_or_delete_rows_outside_the_actions(
    user, other_user, chat, moderator_client
):
    message = send_stored(user, chat, "spam")
    bobs = membership(chat, other_user)

    for obj in (message, bobs, chat):
        name = f"admin:{obj._meta.app_label}_{obj._meta.model_name}"
        assert moderator_client.get(reverse(f"{name}_delete", args=[obj.pk])).status_code == 403
        assert (
            moderator_client.post(change_page(obj), {"text": "x", "muted": "on"}).status_code == 403
        )
    assert moderator_client.get(reverse("admin:messaging_message_add")).status_code == 403

    message.refresh_from_db()
    assert message.text == "spam"
    assert Membership.objects.filter(pk=bobs.pk, muted=False).exists()


# ---------------------------------------------------------------- pages


def test_every_admin_page_of_a_moderator_renders(user, other_user, group_chat, moderator_client):
    message = send_stored(user, group_chat, "hello")
    services.mark_read(user=other_user, chat_id=group_chat.pk)
    pages = [reverse("admin:index")]
    for obj in (
        group_chat,
        message,
        membership(group_chat, other_user),
        ReadReceipt.objects.get(chat=group_chat, user=other_user),
        other_user,
    ):
        pages += [changelist(type(obj)), change_page(obj)]

    for url in pages:
        assert moderator_client.get(url).status_code == 200, url


def test_a_moderator_viewing_a_user_sees_no_password_hash(other_user, moderator_client):
    response = moderator_client.get(change_page(other_user))

    assert response.status_code == 200
    digest = other_user.password.rsplit("$", 1)[-1]
    assert digest not in response.content.decode()


def test_chat_list_shows_each_chats_member_and_message_counts(
    user, other_user, chat, group_chat, moderator_client
):
    for text in ("a", "b", "c"):
        send_stored(user, group_chat, text)
    send_stored(other_user, chat, "d")

    response = moderator_client.get(changelist(Chat))

    chat_admin = response.context["cl"].model_admin
    assert {
        row.pk: (chat_admin.member_count(row), chat_admin.message_count(row))
        for row in response.context["cl"].result_list
    } == {group_chat.pk: (3, 3), chat.pk: (2, 1)}


def test_chat_page_shows_its_members_inline(
    user, other_user, third_user, group_chat, moderator_client
):
    response = moderator_client.get(change_page(group_chat))

    content = response.content.decode()
    for someone in (user, other_user, third_user):
        assert someone.username in content


def test_message_list_is_searched_by_text_and_filtered_by_chat_sender_date_and_deleted_state(
    user, other_user, chat, group_chat, moderator, moderator_client
):
    direct_hello = send_stored(user, chat, "hello bob")
    direct_reply = send_stored(other_user, chat, "hello alice")
    group_spam = send_stored(other_user, group_chat, "buy cheap pills")
    services.delete_message(message=group_spam, moderator=moderator)
    today = direct_hello.created_at.date()

    def listed(**query) -> set[int]:
        response = moderator_client.get(changelist(Message), query)
        assert response.status_code == 200
        assert "e" not in response.get("Location", ""), response
        return {row.pk for row in response.context["cl"].result_list}

    assert listed(q="pills") == {group_spam.pk}
    assert listed(chat__id__exact=chat.pk) == {direct_hello.pk, direct_reply.pk}
    assert listed(sender__id__exact=other_user.pk) == {direct_reply.pk, group_spam.pk}
    assert listed(deleted="yes") == {group_spam.pk}
    assert listed(deleted="no") == {direct_hello.pk, direct_reply.pk}
    assert listed(
        created_at__year=today.year, created_at__month=today.month, created_at__day=today.day
    ) == {direct_hello.pk, direct_reply.pk, group_spam.pk}
    assert listed(created_at__year=today.year - 1) == set()


def test_message_list_costs_the_same_queries_for_5_messages_as_for_a_page_of_100(
    user, other_user, third_user, chat, group_chat, moderator_client
):
    senders = [(user, chat), (other_user, chat), (user, group_chat), (third_user, group_chat)]

    def store(count: int):
        services.store_messages(
            [
                services.Outgoing(sender, target.pk, f"message {n}")
                for n, (sender, target) in zip(range(count), senders * count, strict=False)
            ]
        )

    def queries_for_a_page(expected_rows: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            response = moderator_client.get(changelist(Message))
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == expected_rows
        return len(queries)

    store(5)
    moderator_client.get(changelist(Message))  # session and content types cached as for any page
    with_5 = queries_for_a_page(5)
    store(145)
    with_100 = queries_for_a_page(100)

    assert with_100 == with_5
    assert with_5 <= 12


# ---------------------------------------------------------------- moderation that sticks (issue 13)


@pytest.fixture
def full_moderators_group(moderators_group):
    """The Moderators group with the grants of the later migrations too."""
    migration = importlib.import_module("messaging.migrations.0007_moderators_unban_and_exclusions")
    state = MigrationLoader(connection).project_state(
        ("messaging", "0007_moderators_unban_and_exclusions")
    )
    migration.grant(state.apps, None)
    return moderators_group


def act(client, model, action: str, ids, **fields):
    """Post a changelist action with the action bar's extra fields (reason, duration)."""
    url = changelist(model)
    response = client.post(
        url,
        {"action": action, "_selected_action": [str(i) for i in ids], "index": "0", **fields},
        follow=True,
    )
    assert response.status_code == 200
    return [str(message) for message in response.context["messages"]]


def history_of(obj) -> list[str]:
    entries = LogEntry.objects.filter(object_id=str(obj.pk)).order_by("action_time")
    return [entry.get_change_message() for entry in entries]


@pytest.mark.django_db(transaction=True)
def test_a_moderator_unbans_a_user_with_the_unban_permission(
    full_moderators_group, moderator, moderator_client, outsider
):
    services.ban_user(user=outsider)

    shown = act(
        moderator_client, type(outsider), "unban_users", [outsider.pk], reason="appeal accepted"
    )

    outsider.refresh_from_db()
    assert outsider.is_active
    assert shown == ["1 user(s) unbanned."]
    assert history_of(outsider)[-1] == "Unbanned (active again). Reason: appeal accepted"


@pytest.mark.django_db(transaction=True)
def test_unban_is_not_offered_without_the_unban_permission(
    moderators_group, moderator, moderator_client
):
    assert "unban_users" not in offered_actions(moderator_client, type(moderator))
    assert "ban_users" in offered_actions(moderator_client, type(moderator))


@pytest.mark.django_db(transaction=True)
def test_a_ban_with_a_reason_keeps_it_in_the_users_history_page(
    moderators_group, moderator, moderator_client, outsider
):
    act(moderator_client, type(outsider), "ban_users", [outsider.pk], reason="spam links")

    page = moderator_client.get(reverse("admin:accounts_user_history", args=[outsider.pk]))
    assert "Banned (deactivated). Reason: spam links" in page.content.decode()


@pytest.mark.django_db(transaction=True)
def test_an_action_without_a_reason_works_as_before(
    moderators_group, moderator, moderator_client, outsider
):
    act(moderator_client, type(outsider), "ban_users", [outsider.pk])

    outsider.refresh_from_db()
    assert not outsider.is_active
    assert history_of(outsider)[-1] == "Banned (deactivated)."


@pytest.mark.django_db(transaction=True)
def test_delete_and_remove_keep_their_reasons(
    moderators_group, moderator, moderator_client, user, other_user, group_chat
):
    message, _ = services.send_message(sender=user, chat_id=group_chat.pk, text="rude")
    membership = Membership.objects.get(chat=group_chat, user=other_user)

    act(moderator_client, type(message), "delete_messages", [message.pk], reason="insult")
    act(moderator_client, Membership, "remove_members", [membership.pk], reason="harassment")

    assert history_of(message)[-1] == "Deleted by a moderator. Reason: insult"
    assert history_of(group_chat)[-1] == f"Removed member {other_user}. Reason: harassment"
    assert Exclusion.objects.get(chat=group_chat, user=other_user).reason == "harassment"


@pytest.mark.django_db(transaction=True)
def test_a_timed_mute_refuses_sends_until_it_ends_by_itself(
    moderators_group, moderator, moderator_client, user, other_user, group_chat
):
    membership = Membership.objects.get(chat=group_chat, user=other_user)

    act(moderator_client, Membership, "mute_members", [membership.pk], duration="3600")
    with pytest.raises(Forbidden):
        services.send_message(sender=other_user, chat_id=group_chat.pk, text="muted")
    # An hour later (the clock is not moved: the mute's end is).
    Membership.objects.filter(pk=membership.pk).update(
        muted_until=timezone.now() - timedelta(seconds=1)
    )
    message, created = services.send_message(sender=other_user, chat_id=group_chat.pk, text="back")

    assert created and message.text == "back"
    assert history_of(membership)[0].startswith("Muted until ")


@pytest.mark.django_db(transaction=True)
def test_a_mute_without_a_duration_lasts_until_unmuted(
    moderators_group, moderator, moderator_client, user, other_user, group_chat
):
    membership = Membership.objects.get(chat=group_chat, user=other_user)

    act(moderator_client, Membership, "mute_members", [membership.pk])

    membership.refresh_from_db()
    assert membership.muted and membership.muted_until is None


@pytest.mark.django_db(transaction=True)
def test_let_back_readmits_a_member_a_moderator_removed(
    full_moderators_group, moderator, moderator_client, user, other_user, chat, api_client
):
    services.remove_member(
        actor=moderator, chat_id=chat.pk, user_id=other_user.pk, by_moderator=True
    )
    exclusion = Exclusion.objects.get(chat=chat, user=other_user)

    shown = act(moderator_client, Exclusion, "let_back", [exclusion.pk], reason="apologised")

    assert shown == ["1 member(s) let back."]
    assert Membership.objects.filter(chat=chat, user=other_user).exists()
    assert not Exclusion.objects.filter(chat=chat, user=other_user).exists()
    response = api_client.as_user(other_user).post(
        "/api/chats/", {"memberIds": [str(user.pk)]}, format="json"
    )
    assert response.status_code == 200
