"""The REST API of docs/protocol.md, row by row: chats, members, history, sending, reading, schema, operations."""

import json
import re

import pytest
from django.core.management import call_command
from prometheus_client.parser import text_string_to_metric_families

from conftest import db_call
from messaging import metrics, services
from messaging.models import Chat, Membership, Message

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
MESSAGE_KEYS = {
    "id",
    "chatId",
    "seq",
    "senderId",
    "text",
    "clientMessageId",
    "createdAt",
    "deleted",
    "rev",
    "editedAt",
    "replyTo",
    "reactions",
}


def send(chat, sender, text="hi", **extra) -> Message:
    message, _ = services.send_message(sender=sender, chat_id=chat.pk, text=text, **extra)
    return message


def send_many(chat, sender, count: int) -> list[Message]:
    return [send(chat, sender, f"message {n}") for n in range(1, count + 1)]


def seqs(response) -> list[int]:
    return [int(message["seq"]) for message in response.json()["results"]]


def history(client, chat, query: str = ""):
    return client.get(f"/api/chats/{chat.pk}/messages/{query}")


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str)
    assert body["detail"]


def error_of(response) -> tuple[int, str | None]:
    """(status, code) of an answer, to compare many answers in one assertion."""
    body = response.json() if response["Content-Type"] == "application/json" else {}
    return response.status_code, body.get("code") if isinstance(body, dict) else None


def chat_in_list(client, chat) -> dict:
    (entry,) = [c for c in client.get("/api/chats/").json()["results"] if c["id"] == str(chat.pk)]
    return entry


# ---------------------------------------------------------------- authentication and access


AUTHENTICATED_ENDPOINTS = [
    ("get", "/api/me/"),
    ("get", "/api/users/"),
    ("get", "/api/chats/"),
    ("post", "/api/chats/"),
    ("get", "/api/chats/{chat}/"),
    ("post", "/api/chats/{chat}/members/"),
    ("delete", "/api/chats/{chat}/members/{user}/"),
    ("get", "/api/chats/{chat}/messages/"),
    ("post", "/api/chats/{chat}/messages/"),
    ("post", "/api/chats/{chat}/read/"),
    ("get", "/api/chats/{chat}/messages/1/"),
    ("patch", "/api/chats/{chat}/messages/1/"),
    ("delete", "/api/chats/{chat}/messages/1/"),
    ("get", "/api/chats/{chat}/messages/1/edits/"),
    ("put", "/api/chats/{chat}/messages/1/reactions/%F0%9F%91%8D/"),
    ("delete", "/api/chats/{chat}/messages/1/reactions/%F0%9F%91%8D/"),
    ("get", "/api/chats/{chat}/changes/"),
    ("post", "/api/chats/{chat}/delivered/"),
    ("patch", "/api/chats/{chat}/"),
    ("put", "/api/chats/{chat}/notifications/"),
]


def answers_to_every_endpoint(client, chat, user) -> dict:
    return {
        f"{method} {path}": error_of(
            getattr(client, method)(path.format(chat=chat.pk, user=user.pk), {}, format="json")
        )
        for method, path in AUTHENTICATED_ENDPOINTS
    }


def test_anonymous_caller_gets_401_never_403_from_every_endpoint(api_client, user, chat):
    answers = answers_to_every_endpoint(api_client, chat, user)

    assert answers == dict.fromkeys(answers, (401, "unauthorized"))


def test_invalid_token_gets_401_with_simplejwts_token_not_valid_from_every_endpoint(
    api_client, user, chat
):
    # SimpleJWT's own code, which refresh interceptors (axios and the like) key on.
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")

    answers = answers_to_every_endpoint(api_client, chat, user)

    assert answers == dict.fromkeys(answers, (401, "token_not_valid"))


def test_token_of_a_deactivated_user_gets_401(api_client, user):
    client = api_client.as_user(user)
    user.is_active = False
    user.save(update_fields=["is_active"])

    response = client.get("/api/chats/")

    assert_error(response, 401, "user_inactive")  # SimpleJWT's code


NON_MEMBER_REQUESTS = [
    ("get", "/api/chats/{chat}/", None),
    ("get", "/api/chats/{chat}/messages/", None),
    ("post", "/api/chats/{chat}/messages/", {"text": "let me in"}),
    ("post", "/api/chats/{chat}/read/", {}),
    ("post", "/api/chats/{chat}/members/", {"userId": "{outsider}"}),
    ("delete", "/api/chats/{chat}/members/{outsider}/", None),
    ("delete", "/api/chats/{chat}/members/{member}/", None),
    ("get", "/api/chats/{chat}/messages/{message}/", None),
    ("patch", "/api/chats/{chat}/messages/{message}/", {"text": "mine"}),
    ("delete", "/api/chats/{chat}/messages/{message}/", None),
    ("get", "/api/chats/{chat}/messages/{message}/edits/", None),
    ("put", "/api/chats/{chat}/messages/{message}/reactions/%F0%9F%91%8D/", None),
    ("delete", "/api/chats/{chat}/messages/{message}/reactions/%F0%9F%91%8D/", None),
    ("get", "/api/chats/{chat}/changes/", None),
    ("post", "/api/chats/{chat}/delivered/", {"seq": "1"}),
]


def test_non_member_gets_404_for_everything_about_a_chat(api_client, user, outsider, group_chat):
    message = send(group_chat, user, "private")
    names = {
        "chat": group_chat.pk,
        "outsider": outsider.pk,
        "member": user.pk,
        "message": message.pk,
    }
    client = api_client.as_user(outsider)

    answers = {
        f"{method} {path}": error_of(
            getattr(client, method)(
                path.format(**names),
                {key: value.format(**names) for key, value in (body or {}).items()},
                format="json",
            )
        )
        for method, path, body in NON_MEMBER_REQUESTS
    }

    assert answers == dict.fromkeys(answers, (404, "not_member"))
    assert Membership.objects.filter(chat=group_chat).count() == 3
    assert list(Message.objects.values_list("text", "rev", "deleted_at")) == [("private", 1, None)]


def test_missing_chat_answers_like_a_chat_of_others(api_client, outsider, group_chat):
    client = api_client.as_user(outsider)

    hidden = client.get(f"/api/chats/{group_chat.pk}/")
    missing = client.get(f"/api/chats/{group_chat.pk + 1000}/")

    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()


def test_non_member_gets_404_for_chat_history(api_client, user, other_user, outsider, chat):
    send(chat, user, "private")

    response = history(api_client.as_user(outsider), chat)

    assert_error(response, 404, "not_member")
    assert b"private" not in response.content


def test_chat_id_too_large_for_the_database_is_404(api_client, user):
    response = api_client.as_user(user).get("/api/chats/99999999999999999999999/messages/")

    assert_error(response, 404, "not_member")


def test_every_path_with_an_id_too_large_for_the_database_is_404_not_a_server_error(
    api_client, user, other_user
):
    # Found by the schema fuzzer (test_api_fuzz.py): sending to such a chat was a 500.
    client = api_client.as_user(user)
    huge = "7663073102477743454041021612032"
    requests = [
        ("get", f"/api/chats/{huge}/", None),
        ("get", f"/api/chats/{huge}/messages/", None),
        ("post", f"/api/chats/{huge}/messages/", {"text": "hi"}),
        ("post", f"/api/chats/{huge}/messages/", {"text": "hi", "clientMessageId": "c-1"}),
        ("post", f"/api/chats/{huge}/read/", {}),
        ("post", f"/api/chats/{huge}/members/", {"userId": str(other_user.pk)}),
        ("delete", f"/api/chats/{huge}/members/{user.pk}/", None),
        ("delete", f"/api/chats/{huge}/members/{huge}/", None),
    ]

    answers = {
        (method, path, json.dumps(body)): error_of(
            getattr(client, method)(path, body, format="json")
        )
        for method, path, body in requests
    }

    assert answers == dict.fromkeys(answers, (404, "not_member"))


def test_path_naming_no_chat_answers_404_with_an_error_code(api_client, user):
    client = api_client.as_user(user)

    answers = {path: error_of(client.get(path)) for path in ["/api/chats/abc/", "/api/nothing/"]}

    assert answers == dict.fromkeys(answers, (404, "not_found"))


# ---------------------------------------------------------------- chat list


def test_chat_list_shows_members_last_message_unread_count_and_read_position(
    api_client, user, other_user, chat
):
    first = send(chat, other_user, "one")
    send(chat, other_user, "two")
    services.mark_read(user=user, chat_id=chat.pk, message_id=first.pk)
    send(chat, user, "three")
    last = send(chat, other_user, "four")

    entry = chat_in_list(api_client.as_user(user), chat)

    assert entry["id"] == str(chat.pk)
    assert entry["isDirect"] is True
    assert entry["title"] == ""
    assert TIME.match(entry["createdAt"])
    assert sorted(entry["members"], key=lambda m: m["username"]) == [
        {"id": str(user.pk), "username": "alice", "lastReadSeq": "1", "lastDeliveredSeq": "1"},
        {"id": str(other_user.pk), "username": "bob", "lastReadSeq": "0", "lastDeliveredSeq": "0"},
    ]
    assert entry["lastMessage"]["id"] == str(last.pk)
    assert entry["lastMessage"]["text"] == "four"
    assert entry["lastMessage"]["seq"] == "4"
    assert entry["unreadCount"] == 2
    assert entry["lastReadSeq"] == "1"
    assert entry["rev"] == "4"


def test_unread_count_leaves_out_the_callers_own_messages(api_client, user, other_user, chat):
    send(chat, user, "mine")
    send(chat, other_user, "theirs")
    send(chat, user, "mine again")

    mine = chat_in_list(api_client.as_user(user), chat)
    theirs = chat_in_list(api_client.as_user(other_user), chat)

    assert mine["unreadCount"] == 1
    assert theirs["unreadCount"] == 2
    assert mine["lastReadSeq"] == theirs["lastReadSeq"] == "0"


def test_chat_without_messages_lists_no_last_message_and_nothing_unread(api_client, user, chat):
    entry = chat_in_list(api_client.as_user(user), chat)

    assert entry["lastMessage"] is None
    assert entry["unreadCount"] == 0
    assert entry["lastReadSeq"] == "0"


def test_chat_list_holds_only_the_callers_chats(api_client, user, other_user, third_user, chat):
    services.create_chat(creator=other_user, member_ids=[third_user.pk])

    response = api_client.as_user(user).get("/api/chats/")

    assert response.status_code == 200
    assert [entry["id"] for entry in response.json()["results"]] == [str(chat.pk)]


def test_chat_list_puts_the_most_recent_activity_first(api_client, user, other_user, third_user):
    older, _ = services.create_chat(creator=user, member_ids=[other_user.pk])
    newer, _ = services.create_chat(creator=user, member_ids=[third_user.pk])
    client = api_client.as_user(user)
    by_creation = [entry["id"] for entry in client.get("/api/chats/").json()["results"]]

    send(older, other_user, "wake up")
    by_message = [entry["id"] for entry in client.get("/api/chats/").json()["results"]]
    newest, _ = services.create_chat(creator=user, member_ids=[], title="Notes")
    after_creation = [entry["id"] for entry in client.get("/api/chats/").json()["results"]]

    assert by_creation == [str(newer.pk), str(older.pk)]
    assert by_message == [str(older.pk), str(newer.pk)]
    assert after_creation == [str(newest.pk), str(older.pk), str(newer.pk)]


def test_reading_updates_unread_count_and_read_position_in_the_list(
    api_client, user, other_user, chat
):
    send_many(chat, other_user, 3)
    client = api_client.as_user(user)

    client.post(f"/api/chats/{chat.pk}/read/", {}, format="json")
    entry = chat_in_list(client, chat)

    assert entry["unreadCount"] == 0
    assert entry["lastReadSeq"] == "3"


# ---------------------------------------------------------------- creating chats


def test_direct_chat_is_created_once_then_returned_with_200(api_client, user, other_user):
    client = api_client.as_user(user)

    first = client.post("/api/chats/", {"memberIds": [str(other_user.pk)]}, format="json")
    again = client.post("/api/chats/", {"memberIds": [str(other_user.pk)]}, format="json")
    from_the_other_side = api_client.as_user(other_user).post(
        "/api/chats/", {"memberIds": [str(user.pk)]}, format="json"
    )

    assert first.status_code == 201
    assert again.status_code == 200
    assert from_the_other_side.status_code == 200
    assert first.json()["id"] == again.json()["id"] == from_the_other_side.json()["id"]
    assert first.json()["isDirect"] is True
    assert {m["id"] for m in first.json()["members"]} == {str(user.pk), str(other_user.pk)}
    assert Chat.objects.count() == 1


def test_asking_again_for_a_direct_chat_one_left_brings_them_back(
    api_client, user, other_user, chat
):
    services.remove_member(actor=user, chat_id=chat.pk, user_id=user.pk)

    response = api_client.as_user(user).post(
        "/api/chats/", {"memberIds": [str(other_user.pk)]}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["id"] == str(chat.pk)
    assert {m["id"] for m in response.json()["members"]} == {str(user.pk), str(other_user.pk)}


@pytest.mark.parametrize("asker", ["removed", "other"])
def test_a_direct_chat_a_moderator_removed_one_from_cannot_be_recreated_by_either(
    api_client, user, other_user, chat, asker
):
    services.remove_member(actor=None, chat_id=chat.pk, user_id=user.pk, by_moderator=True)
    me, them = (user, other_user) if asker == "removed" else (other_user, user)

    response = api_client.as_user(me).post(
        "/api/chats/", {"memberIds": [str(them.pk)]}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert not chat.memberships.filter(user=user).exists()


def test_adding_back_a_member_a_moderator_removed_is_403(api_client, user, other_user, group_chat):
    services.remove_member(
        actor=None, chat_id=group_chat.pk, user_id=other_user.pk, by_moderator=True
    )

    response = api_client.as_user(user).post(
        f"/api/chats/{group_chat.pk}/members/", {"userId": str(other_user.pk)}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


def test_a_member_let_back_by_a_moderator_is_a_member_again(api_client, user, other_user, chat):
    services.remove_member(actor=None, chat_id=chat.pk, user_id=user.pk, by_moderator=True)

    services.readmit_member(chat_id=chat.pk, user_id=user.pk)

    response = api_client.as_user(user).get(f"/api/chats/{chat.pk}/")
    assert response.status_code == 200


def test_group_chat_is_created_with_the_caller_as_a_member(
    api_client, user, other_user, third_user
):
    client = api_client.as_user(user)
    body = {"memberIds": [str(other_user.pk), str(third_user.pk)], "title": "Crew"}

    response = client.post("/api/chats/", body, format="json")

    assert response.status_code == 201
    created = response.json()
    assert created["title"] == "Crew"
    assert created["isDirect"] is False
    assert {m["id"] for m in created["members"]} == {
        str(user.pk),
        str(other_user.pk),
        str(third_user.pk),
    }
    assert created["lastMessage"] is None
    assert created["unreadCount"] == 0
    assert created["lastReadSeq"] == "0"
    assert Membership.objects.get(chat_id=created["id"], user=user).role == "owner"


def test_a_titled_chat_with_one_other_member_is_a_new_group_each_time(api_client, user, other_user):
    client = api_client.as_user(user)
    body = {"memberIds": [str(other_user.pk)], "title": "Project"}

    first = client.post("/api/chats/", body, format="json")
    second = client.post("/api/chats/", body, format="json")

    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]
    assert first.json()["isDirect"] is False


def test_chat_with_only_a_title_has_the_caller_alone(api_client, user):
    response = api_client.as_user(user).post(
        "/api/chats/", {"memberIds": [], "title": "Notes to self"}, format="json"
    )

    assert response.status_code == 201
    assert [m["id"] for m in response.json()["members"]] == [str(user.pk)]


def test_creating_a_chat_with_bad_members_is_400(api_client, user, other_user):
    client = api_client.as_user(user)
    bodies = {
        "missing": {},
        "empty": {"memberIds": []},
        "not a list": {"memberIds": str(other_user.pk)},
        "not an id": {"memberIds": ["abc"]},
        "negative": {"memberIds": ["-3"]},
        "unknown user": {"memberIds": [str(other_user.pk + 1000)]},
        "only the caller": {"memberIds": [str(user.pk)]},
    }

    answers = {
        name: error_of(client.post("/api/chats/", body, format="json"))
        for name, body in bodies.items()
    }

    assert answers == dict.fromkeys(bodies, (400, "bad_request"))
    assert not Chat.objects.exists()


def test_creating_a_chat_with_a_deactivated_user_is_400(api_client, user, other_user):
    other_user.is_active = False
    other_user.save(update_fields=["is_active"])

    response = api_client.as_user(user).post(
        "/api/chats/", {"memberIds": [str(other_user.pk)]}, format="json"
    )

    assert_error(response, 400, "bad_request")


def test_validation_error_names_the_field(api_client, user):
    response = api_client.as_user(user).post("/api/chats/", {"title": "x"}, format="json")

    assert_error(response, 400, "bad_request")
    assert response.json()["detail"].startswith("memberIds")
    assert "memberIds" in response.json()["errors"]


def test_malformed_json_body_is_400(api_client, user):
    response = api_client.as_user(user).post(
        "/api/chats/", "{not json", content_type="application/json"
    )

    assert_error(response, 400, "bad_request")


# ---------------------------------------------------------------- one chat


def test_chat_detail_is_the_chat_object_of_the_list(api_client, user, other_user, group_chat):
    send(group_chat, other_user, "hello team")
    client = api_client.as_user(user)

    response = client.get(f"/api/chats/{group_chat.pk}/")

    assert response.status_code == 200
    assert response.json() == chat_in_list(client, group_chat)
    assert response.json()["title"] == "Team"
    assert response.json()["unreadCount"] == 1


# ---------------------------------------------------------------- members


def test_member_adds_a_user_to_a_group_chat_with_201(api_client, user, outsider, group_chat):
    response = api_client.as_user(user).post(
        f"/api/chats/{group_chat.pk}/members/", {"userId": str(outsider.pk)}, format="json"
    )

    assert response.status_code == 201
    assert str(outsider.pk) in {m["id"] for m in response.json()["members"]}
    assert api_client.as_user(outsider).get(f"/api/chats/{group_chat.pk}/").status_code == 200


def test_any_member_not_only_the_owner_may_add(api_client, other_user, outsider, group_chat):
    response = api_client.as_user(other_user).post(
        f"/api/chats/{group_chat.pk}/members/", {"userId": str(outsider.pk)}, format="json"
    )

    assert response.status_code == 201


def test_adding_someone_already_a_member_is_200(api_client, user, other_user, group_chat):
    response = api_client.as_user(user).post(
        f"/api/chats/{group_chat.pk}/members/", {"userId": str(other_user.pk)}, format="json"
    )

    assert response.status_code == 200
    assert Membership.objects.filter(chat=group_chat).count() == 3


def test_adding_to_a_direct_chat_is_400(api_client, user, third_user, chat):
    response = api_client.as_user(user).post(
        f"/api/chats/{chat.pk}/members/", {"userId": str(third_user.pk)}, format="json"
    )

    assert_error(response, 400, "bad_request")
    assert Membership.objects.filter(chat=chat).count() == 2


def test_adding_an_unknown_or_malformed_user_is_400(api_client, user, group_chat):
    client = api_client.as_user(user)
    url = f"/api/chats/{group_chat.pk}/members/"

    answers = {
        user_id: error_of(client.post(url, {"userId": user_id}, format="json"))
        for user_id in ["999999", "abc", "0", None]
    }

    assert answers == dict.fromkeys(answers, (400, "bad_request"))
    assert Membership.objects.filter(chat=group_chat).count() == 3


def test_member_leaves_a_group_chat_with_204(api_client, user, other_user, group_chat):
    client = api_client.as_user(other_user)

    response = client.delete(f"/api/chats/{group_chat.pk}/members/{other_user.pk}/")

    assert response.status_code == 204
    assert client.get(f"/api/chats/{group_chat.pk}/").status_code == 404
    assert client.get("/api/chats/").json()["results"] == []


def test_owner_removes_another_member_with_204(api_client, user, other_user, group_chat):
    response = api_client.as_user(user).delete(
        f"/api/chats/{group_chat.pk}/members/{other_user.pk}/"
    )

    assert response.status_code == 204
    assert not Membership.objects.filter(chat=group_chat, user=other_user).exists()
    removed = api_client.as_user(other_user).get(f"/api/chats/{group_chat.pk}/messages/")
    assert removed.status_code == 404


def test_non_owner_removing_someone_else_is_403(api_client, other_user, third_user, group_chat):
    response = api_client.as_user(other_user).delete(
        f"/api/chats/{group_chat.pk}/members/{third_user.pk}/"
    )

    assert_error(response, 403, "forbidden")
    assert Membership.objects.filter(chat=group_chat, user=third_user).exists()


def test_owner_leaving_hands_ownership_to_the_longest_standing_member(
    api_client, user, other_user, third_user, group_chat
):
    api_client.as_user(user).delete(f"/api/chats/{group_chat.pk}/members/{user.pk}/")

    response = api_client.as_user(other_user).delete(
        f"/api/chats/{group_chat.pk}/members/{third_user.pk}/"
    )

    assert response.status_code == 204
    assert Membership.objects.get(chat=group_chat, user=other_user).role == "owner"


def test_removing_a_user_who_is_not_a_member_is_404(api_client, user, outsider, group_chat):
    response = api_client.as_user(user).delete(f"/api/chats/{group_chat.pk}/members/{outsider.pk}/")

    assert_error(response, 404, "not_found")


def test_a_member_may_leave_a_direct_chat(api_client, user, chat):
    response = api_client.as_user(user).delete(f"/api/chats/{chat.pk}/members/{user.pk}/")

    assert response.status_code == 204
    assert list(Membership.objects.filter(chat=chat).values_list("user__username", flat=True)) == [
        "bob"
    ]


def test_nobody_removes_the_other_member_of_a_direct_chat(api_client, user, other_user, chat):
    response = api_client.as_user(user).delete(f"/api/chats/{chat.pk}/members/{other_user.pk}/")

    assert_error(response, 400, "bad_request")
    assert Membership.objects.filter(chat=chat).count() == 2


def test_member_who_left_cannot_send(api_client, other_user, group_chat):
    client = api_client.as_user(other_user)
    client.delete(f"/api/chats/{group_chat.pk}/members/{other_user.pk}/")

    response = client.post(f"/api/chats/{group_chat.pk}/messages/", {"text": "hi"}, format="json")

    assert_error(response, 404, "not_member")


# ---------------------------------------------------------------- history


def test_history_of_an_empty_chat_is_empty(api_client, user, chat):
    response = history(api_client.as_user(user), chat)

    assert response.status_code == 200
    assert response.json() == {"results": [], "hasMore": False, "next": None, "previous": None}


def test_history_message_is_the_protocol_message_object(api_client, user, other_user, chat):
    sent = send(chat, other_user, "Hello, world!", client_message_id="b8a3")

    (message,) = history(api_client.as_user(user), chat).json()["results"]

    assert set(message) == MESSAGE_KEYS
    assert message == {
        "id": str(sent.pk),
        "chatId": str(chat.pk),
        "seq": "1",
        "senderId": str(other_user.pk),
        "text": "Hello, world!",
        "clientMessageId": "b8a3",
        "createdAt": message["createdAt"],
        "deleted": False,
        "rev": "1",
        "editedAt": None,
        "replyTo": None,
        "reactions": [],
    }
    assert TIME.match(message["createdAt"])


def test_history_without_cursor_is_the_latest_page_of_50(api_client, user, chat):
    send_many(chat, user, 60)

    response = history(api_client.as_user(user), chat)

    assert seqs(response) == list(range(11, 61))
    assert response.json()["hasMore"] is True


def test_history_without_cursor_holding_everything_has_no_more(api_client, user, chat):
    send_many(chat, user, 5)

    response = history(api_client.as_user(user), chat, "?limit=5")

    assert seqs(response) == [1, 2, 3, 4, 5]
    assert response.json()["hasMore"] is False


def test_history_after_pages_upward_and_says_when_newer_exist(api_client, user, chat):
    send_many(chat, user, 12)
    client = api_client.as_user(user)

    first = history(client, chat, "?after=0&limit=5")
    middle = history(client, chat, "?after=5&limit=5")
    last = history(client, chat, "?after=10&limit=5")
    beyond = history(client, chat, "?after=12&limit=5")

    assert (seqs(first), first.json()["hasMore"]) == ([1, 2, 3, 4, 5], True)
    assert (seqs(middle), middle.json()["hasMore"]) == ([6, 7, 8, 9, 10], True)
    assert (seqs(last), last.json()["hasMore"]) == ([11, 12], False)
    assert (seqs(beyond), beyond.json()["hasMore"]) == ([], False)


def test_history_page_ending_exactly_at_the_newest_has_no_more(api_client, user, chat):
    send_many(chat, user, 10)

    response = history(api_client.as_user(user), chat, "?after=5&limit=5")

    assert seqs(response) == [6, 7, 8, 9, 10]
    assert response.json()["hasMore"] is False


def test_history_before_pages_downward_and_says_when_older_exist(api_client, user, chat):
    send_many(chat, user, 12)
    client = api_client.as_user(user)

    newer = history(client, chat, "?before=11&limit=5")
    oldest = history(client, chat, "?before=6&limit=5")
    nothing = history(client, chat, "?before=1&limit=5")

    assert (seqs(newer), newer.json()["hasMore"]) == ([6, 7, 8, 9, 10], True)
    assert (seqs(oldest), oldest.json()["hasMore"]) == ([1, 2, 3, 4, 5], False)
    assert (seqs(nothing), nothing.json()["hasMore"]) == ([], False)


def test_history_after_and_before_pages_up_to_before(api_client, user, chat):
    send_many(chat, user, 20)
    client = api_client.as_user(user)

    whole_gap = history(client, chat, "?after=10&before=15")
    part_of_gap = history(client, chat, "?after=10&before=15&limit=2")

    assert (seqs(whole_gap), whole_gap.json()["hasMore"]) == ([11, 12, 13, 14], False)
    assert (seqs(part_of_gap), part_of_gap.json()["hasMore"]) == ([11, 12], True)


def test_history_limit_over_200_is_clamped_to_200(api_client, user, chat):
    send_many(chat, user, 203)

    response = history(api_client.as_user(user), chat, "?limit=1000")

    assert seqs(response) == list(range(4, 204))
    assert response.json()["hasMore"] is True


def test_history_with_a_bad_cursor_or_limit_is_400(api_client, user, chat):
    send(chat, user)
    client = api_client.as_user(user)
    queries = [
        "?limit=0",
        "?limit=-1",
        "?limit=ten",
        "?limit=1.5",
        "?after=abc",
        "?after=-1",
        "?before=x",
        "?before=-5",
        "?after=99999999999999999999",
    ]

    answers = {query: error_of(history(client, chat, query)) for query in queries}

    assert answers == dict.fromkeys(queries, (400, "bad_request"))


def test_deleted_message_shows_in_history_as_deleted_without_text(
    api_client, user, other_user, chat
):
    kept = send(chat, other_user, "fine")
    removed = send(chat, other_user, "rude")
    services.delete_message(message=removed, moderator=user)

    results = history(api_client.as_user(user), chat).json()["results"]

    assert [(m["id"], m["seq"], m["text"], m["deleted"]) for m in results] == [
        (str(kept.pk), "1", "fine", False),
        (str(removed.pk), "2", None, True),
    ]


# ---------------------------------------------------------------- sending


def test_sent_message_is_201_and_stored_under_the_next_seq(api_client, user, other_user, chat):
    send(chat, other_user, "before")
    client = api_client.as_user(user)

    response = client.post(
        f"/api/chats/{chat.pk}/messages/",
        {"text": "Hello!", "clientMessageId": "c1"},
        format="json",
    )

    assert response.status_code == 201
    message = response.json()
    assert set(message) == MESSAGE_KEYS
    assert message["seq"] == "2"
    assert message["chatId"] == str(chat.pk)
    assert message["senderId"] == str(user.pk)
    assert message["text"] == "Hello!"
    assert message["clientMessageId"] == "c1"
    assert message["deleted"] is False
    assert history(client, chat).json()["results"][-1] == message


def test_message_without_client_message_id_has_null_client_message_id(api_client, user, chat):
    response = api_client.as_user(user).post(
        f"/api/chats/{chat.pk}/messages/", {"text": "plain"}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["clientMessageId"] is None


def test_retry_with_same_client_message_id_answers_200_with_the_stored_message(
    api_client, user, chat
):
    client = api_client.as_user(user)
    url = f"/api/chats/{chat.pk}/messages/"

    first = client.post(url, {"text": "once", "clientMessageId": "retry-1"}, format="json")
    retry = client.post(url, {"text": "once", "clientMessageId": "retry-1"}, format="json")

    assert first.status_code == 201
    assert retry.status_code == 200
    assert retry.json() == first.json()
    assert Message.objects.count() == 1


def test_client_message_id_reused_in_another_chat_is_201_another_message(
    api_client, user, chat, group_chat
):
    client = api_client.as_user(user)
    client.post(
        f"/api/chats/{chat.pk}/messages/", {"text": "here", "clientMessageId": "k"}, format="json"
    )

    response = client.post(
        f"/api/chats/{group_chat.pk}/messages/",
        {"text": "there", "clientMessageId": "k"},
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["text"] == "there"
    assert Message.objects.count() == 2


def test_text_of_exactly_4000_characters_is_accepted(api_client, user, chat):
    response = api_client.as_user(user).post(
        f"/api/chats/{chat.pk}/messages/", {"text": "x" * 4000}, format="json"
    )

    assert response.status_code == 201


def test_text_over_4000_characters_is_400_too_large(api_client, user, chat):
    response = api_client.as_user(user).post(
        f"/api/chats/{chat.pk}/messages/", {"text": "x" * 4001}, format="json"
    )

    assert_error(response, 400, "too_large")
    assert not Message.objects.exists()


def test_invalid_message_is_400(api_client, user, chat):
    client = api_client.as_user(user)
    url = f"/api/chats/{chat.pk}/messages/"
    bodies = {
        "empty text": {"text": ""},
        "blank text": {"text": "   \n"},
        "no text": {},
        "null text": {"text": None},
        "list text": {"text": ["hi"]},
        "empty clientMessageId": {"text": "ok", "clientMessageId": ""},
        "clientMessageId over 64": {"text": "ok", "clientMessageId": "x" * 65},
    }

    answers = {
        name: error_of(client.post(url, body, format="json")) for name, body in bodies.items()
    }

    assert answers == dict.fromkeys(bodies, (400, "bad_request"))
    assert not Message.objects.exists()


def test_muted_member_sending_is_403(api_client, user, other_user, group_chat):
    services.set_muted(chat_id=group_chat.pk, user_id=other_user.pk, muted=True)

    response = api_client.as_user(other_user).post(
        f"/api/chats/{group_chat.pk}/messages/", {"text": "can you hear me"}, format="json"
    )

    assert_error(response, 403, "forbidden")
    assert not Message.objects.exists()


def test_sending_faster_than_the_rate_limit_is_429_with_retry_after(
    api_client, user, chat, settings
):
    settings.RATE_LIMIT_BURST = 3
    settings.RATE_LIMIT_PER_SECOND = 0.5
    client = api_client.as_user(user)
    url = f"/api/chats/{chat.pk}/messages/"
    allowed = [client.post(url, {"text": "spam"}, format="json").status_code for _ in range(3)]

    response = client.post(url, {"text": "spam"}, format="json")

    assert allowed == [201, 201, 201]
    assert_error(response, 429, "rate_limited")
    assert response.json()["retryAfterMs"] > 0
    assert int(response["Retry-After"]) >= 1
    assert Message.objects.count() == 3


async def test_message_sent_over_rest_arrives_live_as_the_same_message_object(
    api_client, user, other_user, chat, connect
):
    bob = await connect(other_user)
    client = api_client.as_user(user)

    response = await db_call(client.post)(
        f"/api/chats/{chat.pk}/messages/", {"text": "via rest"}, format="json"
    )

    frame = await bob.receive_type("message")
    assert frame["data"]["message"] == response.json()
    assert frame["data"]["text"] == "via rest"
    assert frame["data"]["senderId"] == str(user.pk)


# ---------------------------------------------------------------- reading


def test_read_moves_the_position_to_the_message(api_client, user, other_user, chat):
    first = send(chat, other_user, "one")
    send(chat, other_user, "two")

    response = api_client.as_user(user).post(
        f"/api/chats/{chat.pk}/read/", {"messageId": str(first.pk)}, format="json"
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"messageId", "seq", "readAt"}
    assert body["messageId"] == str(first.pk)
    assert body["seq"] == "1"
    assert TIME.match(body["readAt"])


def test_read_without_message_id_reads_up_to_the_latest(api_client, user, other_user, chat):
    send_many(chat, other_user, 2)
    latest = send(chat, other_user, "latest")

    response = api_client.as_user(user).post(f"/api/chats/{chat.pk}/read/")

    assert response.status_code == 200
    assert response.json()["messageId"] == str(latest.pk)
    assert response.json()["seq"] == "3"


def test_read_of_an_empty_chat_leaves_nothing_read(api_client, user, chat):
    response = api_client.as_user(user).post(f"/api/chats/{chat.pk}/read/", {}, format="json")

    assert response.status_code == 200
    assert response.json() == {"messageId": None, "seq": "0", "readAt": None}


def test_read_position_never_moves_back(api_client, user, other_user, chat):
    older = send(chat, other_user, "older")
    newer = send(chat, other_user, "newer")
    client = api_client.as_user(user)
    url = f"/api/chats/{chat.pk}/read/"
    forward = client.post(url, {"messageId": str(newer.pk)}, format="json").json()

    backward = client.post(url, {"messageId": str(older.pk)}, format="json")

    assert backward.status_code == 200
    assert backward.json() == forward
    assert chat_in_list(client, chat)["lastReadSeq"] == "2"


def test_read_of_a_message_of_another_chat_is_404(api_client, user, other_user, chat, group_chat):
    elsewhere = send(group_chat, other_user, "elsewhere")

    response = api_client.as_user(user).post(
        f"/api/chats/{chat.pk}/read/", {"messageId": str(elsewhere.pk)}, format="json"
    )

    assert_error(response, 404, "not_found")


def test_read_with_a_malformed_message_id_is_400(api_client, user, chat):
    response = api_client.as_user(user).post(
        f"/api/chats/{chat.pk}/read/", {"messageId": "latest"}, format="json"
    )

    assert_error(response, 400, "bad_request")


async def test_read_over_rest_is_announced_live(api_client, user, other_user, chat, connect):
    message = await db_call(send)(chat, other_user, "read me")
    bob = await connect(other_user)
    client = api_client.as_user(user)

    response = await db_call(client.post)(f"/api/chats/{chat.pk}/read/", {}, format="json")

    frame = await bob.receive_type("read")
    assert frame["data"] == {"chatId": str(chat.pk), "userId": str(user.pk), **response.json()}
    assert frame["data"]["messageId"] == str(message.pk)


# ---------------------------------------------------------------- schema and operations


REST_PATHS = {
    "/api/auth/register/",
    "/api/auth/token/",
    "/api/auth/token/refresh/",
    "/api/auth/logout/",
    "/api/auth/logout-all/",
    "/api/me/",
    "/api/users/",
    "/api/session/token/",
    "/api/chats/",
    "/api/chats/{chat_id}/",
    "/api/chats/{chat_id}/members/",
    "/api/chats/{chat_id}/members/{user_id}/",
    "/api/chats/{chat_id}/messages/",
    "/api/chats/{chat_id}/messages/{message_id}/",
    "/api/chats/{chat_id}/messages/{message_id}/edits/",
    "/api/chats/{chat_id}/messages/{message_id}/reactions/{emoji}/",
    "/api/chats/{chat_id}/changes/",
    "/api/chats/{chat_id}/read/",
    "/api/chats/{chat_id}/delivered/",
    "/api/chats/{chat_id}/notifications/",
    "/api/push/key/",
    "/api/push/subscriptions/",
}


def test_schema_is_an_openapi_3_document_naming_every_path(api_client, transactional_db):
    response = api_client.get("/api/schema/?format=json")

    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) == REST_PATHS
    assert set(schema["paths"]["/api/chats/{chat_id}/messages/"]) == {"get", "post"}


def test_schema_generates_without_warnings(tmp_path, transactional_db):
    target = tmp_path / "schema.yaml"

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    assert target.read_text().startswith("openapi: 3.")


def test_healthz_answers_200(client, transactional_db):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_answers_200_with_database_and_channel_layer_up(client, transactional_db):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": True, "channelLayer": True},
    }


def test_metrics_is_prometheus_text(client, transactional_db):
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert metrics.MESSAGES_STORED._name in families
