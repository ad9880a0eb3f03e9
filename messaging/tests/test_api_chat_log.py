"""The REST side of the chat log (docs/protocol.md, version 2): single messages, edits, deletions, edit history, reactions, changes since a rev, delivered."""

from urllib.parse import quote

import pytest

from messaging import services
from messaging.models import Chat, Message, ReadReceipt
from messaging.tests.test_api import MESSAGE_KEYS, assert_error, error_of


def send(chat, sender, text="hi", **extra) -> Message:
    message, _ = services.send_message(sender=sender, chat_id=chat.pk, text=text, **extra)
    return message


def message_url(chat, message, tail: str = "") -> str:
    return f"/api/chats/{chat.pk}/messages/{message.pk}/{tail}"


def reaction_url(chat, message, emoji: str) -> str:
    return message_url(chat, message, f"reactions/{quote(emoji, safe='')}/")


def last_rev(chat) -> int:
    return Chat.objects.get(pk=chat.pk).last_rev


# ---------------------------------------------------------------- one message


def test_a_single_message_is_the_message_object(api_client, user, other_user, chat):
    original = send(chat, other_user, "question")
    reply = send(chat, user, "answer", reply_to=original.pk)

    response = api_client.as_user(other_user).get(message_url(chat, reply))

    assert response.status_code == 200
    body = response.json()
    assert set(body) == MESSAGE_KEYS
    assert body["replyTo"] == {"id": str(original.pk), "seq": "1"}
    assert (body["seq"], body["rev"], body["text"]) == ("2", "2", "answer")


def test_a_message_of_another_chat_or_none_is_404_not_found(api_client, user, chat, group_chat):
    elsewhere = send(group_chat, user, "elsewhere")
    client = api_client.as_user(user)

    answers = [
        error_of(client.get(f"/api/chats/{chat.pk}/messages/{message_id}/"))
        for message_id in (elsewhere.pk, 999999, 0, "9" * 30)
    ]

    assert answers == [(404, "not_found")] * 4


# ---------------------------------------------------------------- edit


def test_author_edits_with_patch_and_gets_the_message(api_client, user, chat):
    message = send(chat, user, "helo")

    response = api_client.as_user(user).patch(
        message_url(chat, message), {"text": "hello"}, format="json"
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["text"], body["rev"]) == ("hello", "2")
    assert body["editedAt"] is not None
    assert last_rev(chat) == 2


def test_editing_someone_elses_message_is_403(api_client, user, other_user, chat):
    message = send(chat, other_user, "bob's")

    response = api_client.as_user(user).patch(
        message_url(chat, message), {"text": "mine"}, format="json"
    )

    assert_error(response, 403, "forbidden")
    assert Message.objects.get(pk=message.pk).text == "bob's"


def test_editing_a_deleted_message_is_404(api_client, user, chat):
    message = send(chat, user, "gone")
    services.delete_own_message(user=user, chat_id=chat.pk, message_id=message.pk)

    response = api_client.as_user(user).patch(
        message_url(chat, message), {"text": "back"}, format="json"
    )

    assert_error(response, 404, "not_found")


def test_editing_to_the_same_text_is_200_and_takes_no_rev(api_client, user, chat):
    message = send(chat, user, "same")

    response = api_client.as_user(user).patch(
        message_url(chat, message), {"text": "same"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["rev"] == "1"
    assert last_rev(chat) == 1


def test_editing_with_bad_text_is_400(api_client, user, chat):
    message = send(chat, user, "short")
    client = api_client.as_user(user)

    answers = [
        error_of(client.patch(message_url(chat, message), body, format="json"))
        for body in (
            {},
            {"text": ""},
            {"text": "  "},
            {"text": None},
            {"text": ["a"]},
            {"text": "x" * 4001},
        )
    ]

    assert answers == [(400, "bad_request")] * 5 + [(400, "too_large")]


def test_muted_author_editing_is_403(api_client, user, chat):
    message = send(chat, user, "said")
    services.set_muted(chat_id=chat.pk, user_id=user.pk, muted=True)

    response = api_client.as_user(user).patch(
        message_url(chat, message), {"text": "unsaid"}, format="json"
    )

    assert_error(response, 403, "forbidden")


# ---------------------------------------------------------------- delete


def test_author_deletes_with_204_and_again_with_204(api_client, user, chat):
    message = send(chat, user, "oops")
    client = api_client.as_user(user)

    first = client.delete(message_url(chat, message))
    again = client.delete(message_url(chat, message))

    assert (first.status_code, again.status_code) == (204, 204)
    assert last_rev(chat) == 2
    shown = client.get(message_url(chat, message)).json()
    assert (shown["deleted"], shown["text"], shown["rev"]) == (True, None, "2")


def test_deleting_someone_elses_message_is_403(api_client, user, other_user, chat):
    message = send(chat, other_user, "bob's")

    response = api_client.as_user(user).delete(message_url(chat, message))

    assert_error(response, 403, "forbidden")
    assert Message.objects.get(pk=message.pk).deleted_at is None


# ---------------------------------------------------------------- edit history


def test_edit_history_lists_every_text_oldest_first_the_current_last(api_client, user, chat):
    message = send(chat, user, "one")
    for text in ("two", "three"):
        services.edit_message(user=user, chat_id=chat.pk, message_id=message.pk, text=text)
    created = api_client.as_user(user).get(message_url(chat, message)).json()

    response = api_client.as_user(user).get(message_url(chat, message, "edits/"))

    assert response.status_code == 200
    history = response.json()
    assert [entry["text"] for entry in history] == ["one", "two", "three"]
    assert history[0]["editedAt"] == created["createdAt"]
    assert history[-1]["editedAt"] == created["editedAt"]
    assert history[0]["editedAt"] <= history[1]["editedAt"] <= history[2]["editedAt"]


def test_edit_history_of_a_message_never_edited_is_its_text(api_client, user, chat):
    message = send(chat, user, "as sent")

    history = api_client.as_user(user).get(message_url(chat, message, "edits/")).json()

    assert [entry["text"] for entry in history] == ["as sent"]


def test_edit_history_of_a_deleted_message_is_404(api_client, user, chat):
    message = send(chat, user, "one")
    services.edit_message(user=user, chat_id=chat.pk, message_id=message.pk, text="two")
    services.delete_own_message(user=user, chat_id=chat.pk, message_id=message.pk)

    response = api_client.as_user(user).get(message_url(chat, message, "edits/"))

    assert_error(response, 404, "not_found")


# ---------------------------------------------------------------- reactions


def test_put_and_delete_of_a_reaction_answer_the_message(api_client, user, other_user, chat):
    message = send(chat, user, "hi")
    client = api_client.as_user(other_user)

    added = client.put(reaction_url(chat, message, "👍"))
    repeated = client.put(reaction_url(chat, message, "👍"))
    removed = client.delete(reaction_url(chat, message, "👍"))

    assert (added.status_code, repeated.status_code, removed.status_code) == (200, 200, 200)
    assert added.json()["reactions"] == [{"emoji": "👍", "userIds": [str(other_user.pk)]}]
    assert repeated.json()["rev"] == added.json()["rev"] == "2"
    assert removed.json()["reactions"] == []
    assert last_rev(chat) == 3


@pytest.mark.parametrize("emoji", ["👩\u200d💻", "🏳️\u200d🌈", "a/b", "%", "?"])
def test_an_emoji_is_percent_encoded_in_the_path(api_client, user, chat, emoji):
    message = send(chat, user, "hi")

    response = api_client.as_user(user).put(reaction_url(chat, message, emoji))

    assert response.status_code == 200, response.content
    assert response.json()["reactions"] == [{"emoji": emoji, "userIds": [str(user.pk)]}]


def test_an_emoji_outside_the_rule_is_400(api_client, user, chat):
    message = send(chat, user, "hi")
    client = api_client.as_user(user)

    answers = [
        error_of(client.put(reaction_url(chat, message, emoji)))
        for emoji in (" ", "\u200b", "a b", "é" * 33, "\u00ad")
    ]

    assert answers == [(400, "bad_request")] * 5


def test_a_21st_different_emoji_is_400_too_large(api_client, user, chat):
    message = send(chat, user, "popular")
    for n in range(20):
        services.react(user=user, chat_id=chat.pk, message_id=message.pk, emoji=chr(0x1F600 + n))

    response = api_client.as_user(user).put(reaction_url(chat, message, "🦄"))

    assert_error(response, 400, "too_large")


def test_reacting_to_a_deleted_message_is_404_and_muted_is_403(api_client, user, other_user, chat):
    deleted = send(chat, user, "gone")
    services.delete_own_message(user=user, chat_id=chat.pk, message_id=deleted.pk)
    kept = send(chat, user, "kept")
    services.set_muted(chat_id=chat.pk, user_id=other_user.pk, muted=True)

    gone = api_client.as_user(user).put(reaction_url(chat, deleted, "👍"))
    muted = api_client.as_user(other_user).put(reaction_url(chat, kept, "👍"))

    assert_error(gone, 404, "not_found")
    assert_error(muted, 403, "forbidden")


# ---------------------------------------------------------------- replies


def test_sending_a_reply_names_the_original(api_client, user, other_user, chat):
    original = send(chat, other_user, "question")

    response = api_client.as_user(user).post(
        f"/api/chats/{chat.pk}/messages/",
        {"text": "answer", "replyTo": str(original.pk)},
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["replyTo"] == {"id": str(original.pk), "seq": "1"}


def test_a_reply_to_a_message_not_in_the_chat_is_404_and_a_malformed_one_400(
    api_client, user, chat, group_chat
):
    elsewhere = send(group_chat, user, "elsewhere")
    client = api_client.as_user(user)
    url = f"/api/chats/{chat.pk}/messages/"

    answers = [
        error_of(client.post(url, {"text": "re", "replyTo": reply_to}, format="json"))
        for reply_to in (str(elsewhere.pk), "999999", "abc", True, 1.5)
    ]

    assert answers == [(404, "not_found")] * 3 + [(400, "bad_request")] * 2
    assert not Message.objects.filter(chat=chat).exists()


# ---------------------------------------------------------------- changes since a rev


def test_changes_since_a_rev_are_the_messages_changed_after_it_by_rev(
    api_client, user, other_user, chat
):
    one = send(chat, user, "one")
    two = send(chat, user, "two")
    services.edit_message(user=user, chat_id=chat.pk, message_id=one.pk, text="one!")  # rev 3
    three = send(chat, other_user, "three")  # rev 4
    services.delete_own_message(user=user, chat_id=chat.pk, message_id=two.pk)  # rev 5

    response = api_client.as_user(other_user).get(f"/api/chats/{chat.pk}/changes/?since=2")

    assert response.status_code == 200
    body = response.json()
    assert [(m["id"], m["rev"]) for m in body["results"]] == [
        (str(one.pk), "3"),
        (str(three.pk), "4"),
        (str(two.pk), "5"),
    ]
    assert body["results"][2]["deleted"] is True
    assert (body["rev"], body["hasMore"]) == ("5", False)


def test_changes_page_with_limit_and_say_where_to_go_on(api_client, user, chat):
    for n in range(5):
        send(chat, user, f"m{n}")
    client = api_client.as_user(user)

    first = client.get(f"/api/chats/{chat.pk}/changes/?limit=2").json()
    second = client.get(f"/api/chats/{chat.pk}/changes/?since={first['rev']}&limit=2").json()
    last = client.get(f"/api/chats/{chat.pk}/changes/?since={second['rev']}&limit=2").json()
    nothing = client.get(f"/api/chats/{chat.pk}/changes/?since={last['rev']}").json()

    assert [(p["rev"], p["hasMore"]) for p in (first, second, last)] == [
        ("2", True),
        ("4", True),
        ("5", False),
    ]
    assert nothing == {"results": [], "rev": "5", "hasMore": False}


def test_changes_with_a_bad_cursor_or_limit_is_400(api_client, user, chat):
    client = api_client.as_user(user)

    answers = [
        error_of(client.get(f"/api/chats/{chat.pk}/changes/?{query}"))
        for query in ("since=-1", "since=x", "limit=0", "limit=x")
    ]

    assert answers == [(400, "bad_request")] * 4


# ---------------------------------------------------------------- delivered


def test_delivered_moves_the_position_forward_and_answers_it(api_client, user, other_user, chat):
    for n in range(3):
        send(chat, user, f"m{n}")
    client = api_client.as_user(other_user)
    url = f"/api/chats/{chat.pk}/delivered/"

    answers = [client.post(url, {"seq": seq}, format="json").json() for seq in ("2", "1", "99")]

    assert answers == [{"seq": "2"}, {"seq": "2"}, {"seq": "3"}]
    assert ReadReceipt.objects.get(chat=chat, user=other_user).delivered_seq == 3
    members = {m["id"]: m for m in client.get(f"/api/chats/{chat.pk}/").json()["members"]}
    assert members[str(other_user.pk)]["lastDeliveredSeq"] == "3"


def test_delivered_with_a_bad_seq_is_400(api_client, user, chat):
    client = api_client.as_user(user)

    answers = [
        error_of(client.post(f"/api/chats/{chat.pk}/delivered/", body, format="json"))
        for body in ({}, {"seq": "-1"}, {"seq": "x"}, {"seq": None})
    ]

    assert answers == [(400, "bad_request")] * 4


# ---------------------------------------------------------------- rate limit


def test_edits_deletions_and_reactions_count_against_the_message_rate(
    api_client, user, chat, settings
):
    settings.RATE_LIMIT_BURST = 3
    settings.RATE_LIMIT_PER_SECOND = 0.01
    message = send(chat, user, "hi")
    client = api_client.as_user(user)

    statuses = [
        client.patch(message_url(chat, message), {"text": "hi!"}, format="json").status_code,
        client.put(reaction_url(chat, message, "👍")).status_code,
        client.delete(reaction_url(chat, message, "👍")).status_code,
        client.delete(message_url(chat, message)).status_code,
    ]
    delivered = client.post(f"/api/chats/{chat.pk}/delivered/", {"seq": "1"}, format="json")

    assert statuses == [200, 200, 200, 429]
    assert delivered.status_code == 200
