"""Group chats as the page manages them: rename, add, leave, the `chat` `updated` frame, and each
member's own notification setting (`PUT /api/chats/{id}/notifications/`)."""

from conftest import db_call, make_user
from messaging import services
from messaging.models import Membership


def chat_url(chat) -> str:
    return f"/api/chats/{chat.pk}/"


def notifications_url(chat) -> str:
    return f"/api/chats/{chat.pk}/notifications/"


def member_ids(chat_object) -> list[str]:
    return [member["id"] for member in chat_object["members"]]


async def frame_types_until_quiet(client) -> list[str]:
    """The types of the frames that arrive until none comes for 0.3 s."""
    types = []
    while not await client.nothing(0.3):
        types.append((await client.receive())["type"])
    return types


# ---------------------------------------------------------------- rename over REST


def test_any_member_renames_a_group_chat(api_client, other_user, group_chat):
    response = api_client.as_user(other_user).patch(
        chat_url(group_chat), {"title": "  Launch crew  "}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["title"] == "Launch crew"
    group_chat.refresh_from_db()
    assert group_chat.title == "Launch crew"


def test_renaming_a_direct_chat_is_400(api_client, user, chat):
    response = api_client.as_user(user).patch(chat_url(chat), {"title": "Us"}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"
    chat.refresh_from_db()
    assert chat.title == ""


def test_a_blank_or_overlong_title_is_400_and_changes_nothing(api_client, user, group_chat):
    client = api_client.as_user(user)
    for body in ({"title": ""}, {"title": "   "}, {"title": "x" * 101}, {}, {"title": None}):
        response = client.patch(chat_url(group_chat), body, format="json")
        assert response.status_code == 400, (body, response.content)
    group_chat.refresh_from_db()
    assert group_chat.title == "Team"


def test_a_title_of_100_characters_is_taken(api_client, user, group_chat):
    response = api_client.as_user(user).patch(
        chat_url(group_chat), {"title": "x" * 100}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["title"] == "x" * 100


def test_a_non_member_renaming_gets_404(api_client, outsider, group_chat):
    response = api_client.as_user(outsider).patch(
        chat_url(group_chat), {"title": "Mine now"}, format="json"
    )

    assert response.status_code == 404
    group_chat.refresh_from_db()
    assert group_chat.title == "Team"


# ---------------------------------------------------------------- notification setting


def test_muting_notifications_is_the_callers_own_setting(api_client, user, other_user, group_chat):
    response = api_client.as_user(user).put(
        notifications_url(group_chat), {"muted": True}, format="json"
    )

    assert response.status_code == 200
    assert response.json() == {"muted": True}
    mine = api_client.as_user(user).get(chat_url(group_chat)).json()
    theirs = api_client.as_user(other_user).get(chat_url(group_chat)).json()
    assert mine["notificationsMuted"] is True
    assert theirs["notificationsMuted"] is False

    response = api_client.as_user(user).put(
        notifications_url(group_chat), {"muted": False}, format="json"
    )
    assert response.json() == {"muted": False}
    assert api_client.as_user(user).get(chat_url(group_chat)).json()["notificationsMuted"] is False


def test_muting_notifications_is_not_the_moderation_mute(api_client, user, group_chat):
    api_client.as_user(user).put(notifications_url(group_chat), {"muted": True}, format="json")

    response = api_client.as_user(user).post(
        f"/api/chats/{group_chat.pk}/messages/", {"text": "still talking"}, format="json"
    )

    assert response.status_code == 201
    membership = Membership.objects.get(chat=group_chat, user=user)
    assert membership.notifications_muted is True
    assert membership.muted is False


def test_notification_setting_needs_a_boolean(api_client, user, group_chat):
    client = api_client.as_user(user)
    for body in ({}, {"muted": "perhaps"}, {"muted": None}, {"muted": [True]}):
        response = client.put(notifications_url(group_chat), body, format="json")
        assert response.status_code == 400, (body, response.content)
    assert not Membership.objects.get(chat=group_chat, user=user).notifications_muted


def test_a_non_member_cannot_set_notifications_of_a_chat(api_client, outsider, group_chat):
    response = api_client.as_user(outsider).put(
        notifications_url(group_chat), {"muted": True}, format="json"
    )

    assert response.status_code == 404
    assert not Membership.objects.filter(user=outsider).exists()


def test_the_chat_list_carries_each_chats_notification_setting(api_client, user, chat, group_chat):
    api_client.as_user(user).put(notifications_url(group_chat), {"muted": True}, format="json")

    listed = api_client.as_user(user).get("/api/chats/").json()
    chats = listed["results"]
    by_id = {c["id"]: c["notificationsMuted"] for c in chats}
    assert by_id == {str(chat.pk): False, str(group_chat.pk): True}


# ---------------------------------------------------------------- `chat` `updated` live


async def test_a_rename_reaches_every_member_as_chat_updated(
    api_client, user, other_user, third_user, outsider, group_chat, connect
):
    alice = await connect(user)
    bob = await connect(other_user)
    mallory = await connect(outsider)

    response = await db_call(
        lambda: api_client.as_user(third_user).patch(
            chat_url(group_chat), {"title": "Renamed"}, format="json"
        )
    )()
    assert response.status_code == 200

    for client in (alice, bob):
        frame = await client.receive_type("chat")
        assert frame["data"]["chatId"] == str(group_chat.pk)
        assert frame["data"]["event"] == "updated"
        assert frame["data"]["chat"]["title"] == "Renamed"
        assert frame["data"]["chat"]["id"] == str(group_chat.pk)
    assert await mallory.nothing()


async def test_each_member_gets_the_chat_object_as_they_see_it(
    user, other_user, group_chat, connect
):
    await db_call(services.send_message)(sender=user, chat_id=group_chat.pk, text="one")
    await db_call(services.send_message)(sender=user, chat_id=group_chat.pk, text="two")
    await db_call(services.set_notifications_muted)(
        user=other_user, chat_id=group_chat.pk, muted=True
    )
    alice = await connect(user)
    bob = await connect(other_user)

    await db_call(services.rename_chat)(actor=user, chat_id=group_chat.pk, title="Counted")

    mine = (await alice.receive_type("chat"))["data"]["chat"]
    theirs = (await bob.receive_type("chat"))["data"]["chat"]
    assert (mine["unreadCount"], mine["notificationsMuted"]) == (0, False)
    assert (theirs["unreadCount"], theirs["notificationsMuted"]) == (2, True)
    assert mine["lastMessage"]["text"] == theirs["lastMessage"]["text"] == "two"


async def test_an_addition_is_updated_for_the_others_and_added_for_the_newcomer(
    user, other_user, outsider, group_chat, connect
):
    alice = await connect(user)
    bob = await connect(other_user)
    mallory = await connect(outsider)

    await db_call(services.add_member)(actor=other_user, chat_id=group_chat.pk, user_id=outsider.pk)

    for client in (alice, bob):
        frame = await client.receive_type("chat")
        assert frame["data"]["event"] == "updated"
        assert str(outsider.pk) in member_ids(frame["data"]["chat"])
    assert (await mallory.receive_type("chat"))["data"] == {
        "chatId": str(group_chat.pk),
        "event": "added",
    }
    assert "chat" not in await frame_types_until_quiet(mallory)


async def test_a_newcomer_online_shows_as_online_to_the_members(
    user, outsider, group_chat, connect
):
    alice = await connect(user)
    mallory = await connect(outsider)
    assert str(outsider.pk) not in alice.connect_frame["data"]["online"]

    await db_call(services.add_member)(actor=user, chat_id=group_chat.pk, user_id=outsider.pk)

    assert (await alice.receive_type("connect"))["data"] == {"userId": str(outsider.pk)}
    assert (await mallory.receive_type("connect"))["data"] == {"userId": str(user.pk)}


async def test_a_departure_is_updated_for_those_who_stay(
    user, other_user, third_user, group_chat, connect
):
    alice = await connect(user)
    carol = await connect(third_user)

    await db_call(services.remove_member)(
        actor=other_user, chat_id=group_chat.pk, user_id=other_user.pk
    )

    for client in (alice, carol):
        frame = await client.receive_type("chat")
        assert frame["data"]["event"] == "updated"
        assert member_ids(frame["data"]["chat"]) == [str(user.pk), str(third_user.pk)]


async def test_a_moderators_removal_is_updated_for_those_who_stay(
    user, other_user, third_user, group_chat, connect
):
    moderator = await db_call(make_user)("mod", is_staff=True)
    alice = await connect(user)
    bob = await connect(other_user)

    await db_call(services.remove_member)(
        actor=moderator, chat_id=group_chat.pk, user_id=third_user.pk, by_moderator=True
    )

    for client in (alice, bob):
        frame = await client.receive_type("chat")
        assert frame["data"]["event"] == "updated"
        assert str(third_user.pk) not in member_ids(frame["data"]["chat"])


async def test_a_notification_setting_reaches_only_the_callers_other_devices(
    api_client, user, other_user, group_chat, connect
):
    laptop = await connect(user)
    phone = await connect(user)
    bob = await connect(other_user)

    response = await db_call(
        lambda: api_client.as_user(user).put(
            notifications_url(group_chat), {"muted": True}, format="json"
        )
    )()
    assert response.status_code == 200

    for device in (laptop, phone):
        frame = await device.receive_type("chat")
        assert frame["data"]["event"] == "updated"
        assert frame["data"]["chat"]["notificationsMuted"] is True
    assert await bob.nothing()


async def test_renaming_to_the_same_title_announces_nothing(user, other_user, group_chat, connect):
    bob = await connect(other_user)

    await db_call(services.rename_chat)(actor=user, chat_id=group_chat.pk, title="Team")

    assert await bob.nothing()
