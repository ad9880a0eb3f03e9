"""Notifications of new messages (issue 17): who is pushed and when, what the push and the webhook say.

The notifier runs here in the test's thread, one round at a time (`poll(settle=True)`);
the push service and the webhook receiver are HTTP servers of the test's own
(`push_service.py`), and each push is decrypted with the keys the test made for its
subscription. NOTIFY_DELAY_MS is 300; a test ages its messages rather than wait.
"""

import json
import time
from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from messaging import notifications, services, webhook, webpush
from messaging.models import Message, Notification, NotificationDispatch, PushSubscription
from messaging.notifier import Notifier
from messaging.testing import free_port
from messaging.tests.push_service import (
    Browser,
    Received,
    b64url,
    vapid_claims,
    vapid_key_pem,
    webhook_signature_ok,
)

VAPID_PEM = vapid_key_pem()
SUBJECT = "mailto:ops@biogram.test"
SECRET = "whsec-test-secret"
KEY_URL = "/api/push/key/"
SUBSCRIPTIONS_URL = "/api/push/subscriptions/"


@pytest.fixture
def notify_settings(settings):
    settings.NOTIFY_DELAY_MS = 300
    settings.WEBPUSH_ALLOW_INSECURE = True  # the test's push service is http on 127.0.0.1
    settings.VAPID_PRIVATE_KEY = VAPID_PEM
    settings.VAPID_SUBJECT = SUBJECT
    settings.NOTIFY_WEBHOOK_URL = ""
    settings.NOTIFY_WEBHOOK_SECRET = SECRET
    webpush.forget_keys()
    yield settings
    webpush.forget_keys()


@pytest.fixture
def with_webhook(notify_settings, webhook_receiver):
    notify_settings.NOTIFY_WEBHOOK_URL = webhook_receiver.url + "/hook"
    return webhook_receiver


@pytest.fixture
def notifier(notify_settings):
    notifier = Notifier(workers=4)
    yield notifier
    notifier.pool.shutdown()


def subscribe(someone, push_service, name=None) -> Browser:
    browser = Browser(push_service, name)
    services.subscribe_push(
        user=someone, endpoint=browser.endpoint, p256dh=browser.p256dh, auth=b64url(browser.auth)
    )
    return browser


def send(sender, chat, *texts) -> list[Message]:
    return [services.send_message(sender=sender, chat_id=chat.pk, text=t)[0] for t in texts]


def _now():
    return timezone.now()


def _retry_now() -> None:
    """As if the backoff had passed."""
    NotificationDispatch.objects.filter(done_at__isnull=True).update(next_attempt_at=_now())


def age(chat, seconds: float = 1.0) -> None:
    """As if the chat's messages had been sent `seconds` earlier (past NOTIFY_DELAY_MS)."""
    Message.objects.filter(chat=chat).update(
        created_at=F("created_at") - timedelta(seconds=seconds)
    )


# ---------------------------------------------------------------- who is pushed, once


def test_an_offline_member_is_pushed_once_with_the_folded_count(
    api_client, notifier, push_service, user, other_user, chat
):
    bob = subscribe(other_user, push_service)
    public_key = api_client.get(KEY_URL).json()["publicKey"]
    *_, latest = send(user, chat, "Hi Bob", "are you there?", "call me")

    notifier.poll(settle=True)
    assert bob.pushes() == []  # not yet: NOTIFY_DELAY_MS has not passed

    age(chat)
    notifier.poll(settle=True)
    notifier.poll(settle=True)

    (push,) = bob.pushes()
    assert bob.decrypt(push) == {
        "type": "message",
        "chatId": str(chat.pk),
        "messageId": str(latest.pk),
        "seq": "3",
        "senderId": str(user.pk),
        "senderName": "alice",
        "preview": "call me",
        "count": 3,
        "userIds": [str(other_user.pk)],
        "title": "alice",
        "body": "3 new messages from alice",
        "url": f"/#chat-{chat.pk}",
    }
    claims = vapid_claims(push, public_key=public_key)
    assert claims["aud"] == push_service.url
    assert claims["sub"] == SUBJECT
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600
    assert int(push.headers["TTL"]) > 0
    assert push.headers["Topic"] == f"chat-{chat.pk}"


def test_a_member_online_but_not_acknowledging_is_pushed_like_an_offline_one(
    notifier, push_service, user, other_user, chat
):
    # What a device does not mark delivered, it may not have shown: a socket open is not enough.
    # (test_notifications_live.py proves it with a real server and a real socket.)
    bob = subscribe(other_user, push_service)
    send(user, chat, "hello?")
    age(chat)

    notifier.poll(settle=True)

    assert [p["preview"] for p in bob.payloads()] == ["hello?"]


def test_a_member_whose_device_marked_delivered_in_time_is_not_pushed(
    notifier, push_service, user, other_user, chat
):
    bob = subscribe(other_user, push_service)
    _, second = send(user, chat, "one", "two")
    services.mark_delivered(user=other_user, chat_id=chat.pk, seq=second.seq)

    age(chat)
    notifier.poll(settle=True)

    assert bob.pushes() == []


def test_a_member_who_read_in_time_is_not_pushed(notifier, push_service, user, other_user, chat):
    bob = subscribe(other_user, push_service)
    send(user, chat, "one")
    services.mark_read(user=other_user, chat_id=chat.pk)

    age(chat)
    notifier.poll(settle=True)

    assert bob.pushes() == []


def test_a_message_after_the_delivered_position_waits_its_own_delay(
    notifier, push_service, user, other_user, chat
):
    bob = subscribe(other_user, push_service)
    (first,) = send(user, chat, "seen")
    services.mark_delivered(user=other_user, chat_id=chat.pk, seq=first.seq)
    age(chat)
    send(user, chat, "not seen")

    notifier.poll(settle=True)
    assert bob.pushes() == []

    age(chat)
    notifier.poll(settle=True)
    assert [(p["preview"], p["count"]) for p in bob.payloads()] == [("not seen", 1)]


def test_messages_after_a_notification_make_the_next_one(
    notifier, push_service, user, other_user, chat
):
    bob = subscribe(other_user, push_service)
    send(user, chat, "one", "two")
    age(chat)
    notifier.poll(settle=True)

    send(user, chat, "three")
    age(chat)
    notifier.poll(settle=True)

    assert [(p["seq"], p["count"]) for p in bob.payloads()] == [("2", 2), ("3", 1)]


def test_the_sender_is_never_notified(notifier, push_service, user, other_user, group_chat):
    alice = subscribe(user, push_service)
    bob = subscribe(other_user, push_service)
    send(other_user, group_chat, "from bob")
    send(user, group_chat, "from alice")

    age(group_chat)
    notifier.poll(settle=True)

    # Each is told only of the other's message; the group's title heads it.
    assert [(p["count"], p["preview"], p["title"]) for p in alice.payloads()] == [
        (1, "from bob", "Team")
    ]
    assert [(p["count"], p["body"]) for p in bob.payloads()] == [(1, "alice: from alice")]


def test_a_muted_chat_is_never_notified(
    notifier, push_service, with_webhook, user, other_user, chat
):
    bob = subscribe(other_user, push_service)
    services.set_notifications_muted(user=other_user, chat_id=chat.pk, muted=True)
    send(user, chat, "shh")

    age(chat)
    notifier.poll(settle=True)

    assert bob.pushes() == []
    assert with_webhook.requests == []


def test_a_chat_muted_after_the_claim_is_not_pushed_either(
    notifier, push_service, user, other_user, chat
):
    bob = subscribe(other_user, push_service)
    send(user, chat, "shh")
    age(chat)
    notifications.claim(notifications.due_members([chat.pk], now=_now()), now=_now())
    services.set_notifications_muted(user=other_user, chat_id=chat.pk, muted=True)

    notifier.poll(settle=True)

    assert bob.pushes() == []


def test_a_message_deleted_before_the_notification_is_not_notified(
    notifier, push_service, user, other_user, chat
):
    bob = subscribe(other_user, push_service)
    kept, deleted = send(user, chat, "kept", "oops")
    services.delete_own_message(user=user, chat_id=chat.pk, message_id=deleted.pk)

    age(chat)
    notifier.poll(settle=True)

    assert [(p["messageId"], p["count"]) for p in bob.payloads()] == [(str(kept.pk), 1)]


def test_a_message_deleted_between_the_claim_and_the_send_is_left_out(
    notifier, push_service, user, other_user, chat
):
    bob = subscribe(other_user, push_service)
    kept, deleted = send(user, chat, "kept", "oops")
    age(chat)
    notifications.claim(notifications.due_members([chat.pk], now=_now()), now=_now())
    services.delete_own_message(user=user, chat_id=chat.pk, message_id=deleted.pk)

    notifier.poll(settle=True)

    assert [(p["messageId"], p["preview"], p["count"]) for p in bob.payloads()] == [
        (str(kept.pk), "kept", 1)
    ]


def test_when_every_folded_message_was_deleted_nothing_goes_out(
    notifier, push_service, with_webhook, user, other_user, chat
):
    bob = subscribe(other_user, push_service)
    messages = send(user, chat, "one", "two")
    age(chat)
    notifications.claim(notifications.due_members([chat.pk], now=_now()), now=_now())
    for message in messages:
        services.delete_own_message(user=user, chat_id=chat.pk, message_id=message.pk)

    notifier.poll(settle=True)

    assert bob.pushes() == []
    assert with_webhook.requests == []
    assert set(NotificationDispatch.objects.values_list("outcome", flat=True)) == {"dropped"}


def test_a_banned_member_is_not_notified(notifier, push_service, user, other_user, chat):
    bob = subscribe(other_user, push_service)
    send(user, chat, "hello")
    services.ban_user(user=other_user)

    age(chat)
    notifier.poll(settle=True)

    assert bob.pushes() == []


def test_a_member_added_later_is_not_notified_of_what_came_before(
    notifier, push_service, user, other_user, third_user
):
    chat, _ = services.create_chat(creator=user, member_ids=[other_user.pk], title="Later")
    send(user, chat, "before carol")
    age(chat)
    services.add_member(actor=user, chat_id=chat.pk, user_id=third_user.pk)
    carol = subscribe(third_user, push_service)

    notifier.poll(settle=True)
    assert carol.pushes() == []

    send(user, chat, "after carol")
    age(chat)
    notifier.poll(settle=True)
    assert [p["preview"] for p in carol.payloads()] == ["after carol"]


def test_each_subscription_of_each_member_gets_one_push_and_the_webhook_one_call(
    notifier, push_service, with_webhook, user, other_user, third_user, group_chat
):
    bob = subscribe(other_user, push_service)
    carol_phone = subscribe(third_user, push_service)
    carol_laptop = subscribe(third_user, push_service)
    *_, latest = send(user, group_chat, "standup?", "now")

    age(group_chat)
    notifier.poll(settle=True)
    notifier.poll(settle=True)

    for browser in (bob, carol_phone, carol_laptop):
        assert [(p["messageId"], p["count"]) for p in browser.payloads()] == [(str(latest.pk), 2)]
    (call,) = with_webhook.requests
    assert call.path == "/hook"
    assert call.headers["Content-Type"] == "application/json"
    assert webhook_signature_ok(call, SECRET)
    assert json.loads(call.body) == {
        "type": "message",
        "chatId": str(group_chat.pk),
        "messageId": str(latest.pk),
        "seq": "2",
        "senderId": str(user.pk),
        "senderName": "alice",
        "preview": "now",
        "count": 2,
        "userIds": sorted([str(other_user.pk), str(third_user.pk)], key=int),
    }


def test_the_webhook_alone_notifies_members_without_subscriptions(
    notifier, with_webhook, user, other_user, chat
):
    send(user, chat, "to the app")

    age(chat)
    notifier.poll(settle=True)

    (call,) = with_webhook.requests
    assert webhook_signature_ok(call, SECRET)
    assert not webhook_signature_ok(call, "another secret")


def test_a_tampered_or_stale_webhook_signature_does_not_verify():
    body = b'{"type":"message"}'
    now = int(time.time())
    header = webhook.signature(body, secret=SECRET, timestamp=now)

    def received(headers, payload=body):
        return Received("/hook", headers, payload, 0.0)

    assert webhook_signature_ok(received({"Biogram-Signature": header}), SECRET)
    assert not webhook_signature_ok(received({"Biogram-Signature": header}, b"{}"), SECRET)
    stale = webhook.signature(body, secret=SECRET, timestamp=now - 3600)
    assert not webhook_signature_ok(received({"Biogram-Signature": stale}), SECRET)


# ---------------------------------------------------------------- failures and cleanup


@pytest.mark.parametrize("status", [404, 410])
def test_a_subscription_answered_404_or_410_is_deleted(
    notifier, push_service, user, other_user, chat, status
):
    bob = subscribe(other_user, push_service)
    push_service.answer(bob.path, status)
    send(user, chat, "anyone?")

    age(chat)
    notifier.poll(settle=True)
    notifier.poll(settle=True)

    assert len(bob.pushes()) == 1
    assert not PushSubscription.objects.filter(endpoint=bob.endpoint).exists()
    assert not NotificationDispatch.objects.exists()


def test_a_devices_next_push_waits_until_the_one_before_it_is_done(
    notifier, push_service, user, other_user, chat
):
    """Pushes reach a device in the order they were decided: a newer notification is not sent
    while an older one to the same subscription is in flight or waiting for its retry (two
    processes sending at once could otherwise deliver them the wrong way round)."""
    bob = subscribe(other_user, push_service)
    push_service.answer(bob.path, 503)  # the first push fails and waits for its retry
    send(user, chat, "one")
    age(chat)
    notifier.poll(settle=True)
    send(user, chat, "two")
    age(chat)
    notifier.poll(settle=True)  # the second notification is decided, not sent

    waiting = [p["seq"] for p in bob.payloads()]
    _retry_now()
    notifier.poll(settle=True)  # the first one's retry
    notifier.poll(settle=True)  # then the second

    assert waiting == ["1"]
    assert [p["seq"] for p in bob.payloads()] == ["1", "1", "2"]


def test_a_failed_push_is_retried_and_another_answer_is_not(
    notifier, push_service, user, other_user, third_user, group_chat
):
    flaky = subscribe(other_user, push_service)
    refusing = subscribe(third_user, push_service)
    push_service.answer(flaky.path, 503)
    push_service.answer(refusing.path, 400)
    send(user, group_chat, "ping")
    age(group_chat)

    notifier.poll(settle=True)
    _retry_now()
    notifier.poll(settle=True)
    _retry_now()
    notifier.poll(settle=True)

    assert [r.path for r in push_service.requests].count(flaky.path) == 2
    assert len(refusing.pushes()) == 1
    assert flaky.decrypt(flaky.pushes()[0]) == flaky.decrypt(flaky.pushes()[1])
    assert sorted(NotificationDispatch.objects.values_list("outcome", flat=True)) == [
        "rejected",
        "sent",
    ]


def test_a_failed_webhook_is_retried_within_5_seconds_with_the_same_fields(
    notifier, with_webhook, user, other_user, chat
):
    with_webhook.answer("/hook", 500)
    send(user, chat, "are you up?")
    age(chat)

    notifier.poll(settle=True)
    deadline = time.monotonic() + 6
    while len(with_webhook.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        notifier.poll(settle=True)

    first, second = with_webhook.requests
    assert second.at - first.at < 5
    assert second.body == first.body
    assert second.headers["Biogram-Notification"] == first.headers["Biogram-Notification"]
    assert webhook_signature_ok(second, SECRET)
    notifier.poll(settle=True)
    assert len(with_webhook.requests) == 2


def test_an_unreachable_webhook_is_a_retry(notify_settings):
    notify_settings.NOTIFY_WEBHOOK_URL = f"http://127.0.0.1:{free_port()}/hook"

    assert webhook.send({"type": "message"}, notification_id=1) == notifications.RETRY


def test_an_unsubscribed_browser_is_not_pushed(
    api_client, notifier, push_service, user, other_user, chat
):
    bob = subscribe(other_user, push_service)

    response = api_client.as_user(other_user).delete(
        SUBSCRIPTIONS_URL, {"endpoint": bob.endpoint}, format="json"
    )
    send(user, chat, "gone?")
    age(chat)
    notifier.poll(settle=True)

    assert response.status_code == 204
    assert bob.pushes() == []
    assert not PushSubscription.objects.exists()


def test_finished_notifications_are_pruned_after_an_hour(
    notifier, push_service, user, other_user, chat
):
    subscribe(other_user, push_service)
    send(user, chat, "old news")
    age(chat)
    notifier.poll(settle=True)
    notifier.poll(settle=True)
    Notification.objects.update(created_at=F("created_at") - timedelta(hours=2))

    notifications.prune(now=_now())

    assert not Notification.objects.exists()


# ---------------------------------------------------------------- the REST endpoints


def test_the_push_key_is_the_vapid_public_key_and_stays_the_same(api_client, notify_settings):
    first = api_client.get(KEY_URL)
    second = api_client.get(KEY_URL)

    assert first.status_code == 200
    assert first.json() == second.json() == {"publicKey": webpush.public_key()}
    assert len(webpush.b64url_decode(first.json()["publicKey"])) == 65


def test_a_generated_vapid_key_is_kept_in_var(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.VAPID_PRIVATE_KEY = ""
    webpush.forget_keys()
    try:
        key = webpush.public_key()
        webpush.forget_keys()

        assert webpush.public_key() == key
        path = tmp_path / webpush.KEY_FILE
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        webpush.forget_keys()


def test_subscribing_answers_201_then_200_for_the_same_endpoint(
    api_client, notify_settings, push_service, other_user
):
    browser = Browser(push_service)
    client = api_client.as_user(other_user)

    first = client.post(SUBSCRIPTIONS_URL, browser.subscription(), format="json")
    again = client.post(SUBSCRIPTIONS_URL, browser.subscription(), format="json")

    assert (first.status_code, again.status_code) == (201, 200)
    subscription = PushSubscription.objects.get()
    assert (subscription.user, subscription.endpoint) == (other_user, browser.endpoint)


def test_an_endpoint_subscribed_by_another_user_now_belongs_to_them(
    api_client, notify_settings, push_service, user, other_user
):
    browser = Browser(push_service)
    api_client.as_user(user).post(SUBSCRIPTIONS_URL, browser.subscription(), format="json")

    response = api_client.as_user(other_user).post(
        SUBSCRIPTIONS_URL, browser.subscription(), format="json"
    )

    assert response.status_code == 200
    assert PushSubscription.objects.get().user == other_user


def test_subscribing_needs_a_login(api_client, notify_settings, push_service):
    response = api_client.post(
        SUBSCRIPTIONS_URL, Browser(push_service).subscription(), format="json"
    )

    assert response.status_code == 401


@pytest.mark.parametrize(
    "keys",
    [
        {"p256dh": "not-a-key", "auth": "AAAAAAAAAAAAAAAAAAAAAA"},
        {"p256dh": b64url(b"\x04" + b"\x01" * 64), "auth": "AAAAAAAAAAAAAAAAAAAAAA"},
        {"auth": "AAAAAAAAAAAAAAAAAAAAAA"},
        {"p256dh": None, "auth": "short"},
    ],
)
def test_a_subscription_with_bad_keys_is_400(
    api_client, notify_settings, push_service, other_user, keys
):
    body = {**Browser(push_service).subscription(), "keys": keys}

    response = api_client.as_user(other_user).post(SUBSCRIPTIONS_URL, body, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"
    assert not PushSubscription.objects.exists()


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://127.0.0.1/push/1",
        "https://localhost/push/1",
        "https://10.1.2.3/push/1",
        "https://192.168.0.10/push/1",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/push/1",
        "https://[fe80::1]/push/1",
        "https://[::ffff:127.0.0.1]/push/1",
        "https://0.0.0.0/push/1",
        "https://224.0.0.1/push/1",
        "http://push.example.com/push/1",
        "ftp://push.example.com/push/1",
        "https://user:secret@push.example.com/push/1",
    ],
)
def test_an_endpoint_on_a_private_address_is_refused_by_default(
    api_client, settings, push_service, other_user, endpoint
):
    settings.WEBPUSH_ALLOW_INSECURE = False
    body = {**Browser(push_service).subscription(), "endpoint": endpoint}

    response = api_client.as_user(other_user).post(SUBSCRIPTIONS_URL, body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "endpoint_refused"
    assert not PushSubscription.objects.exists()


def test_an_endpoint_that_turned_private_is_refused_at_send_time(
    notifier, notify_settings, push_service, user, other_user, chat
):
    bob = subscribe(other_user, push_service)  # let in while insecure endpoints were allowed
    send(user, chat, "psst")
    age(chat)

    notify_settings.WEBPUSH_ALLOW_INSECURE = False
    notifier.poll(settle=True)

    assert bob.pushes() == []
    assert list(NotificationDispatch.objects.values_list("outcome", flat=True)) == ["refused"]


def test_a_user_keeps_at_most_the_newest_subscriptions(notify_settings, push_service, other_user):
    notify_settings.WEBPUSH_MAX_SUBSCRIPTIONS = 2
    browsers = [subscribe(other_user, push_service) for _ in range(3)]

    kept = set(PushSubscription.objects.values_list("endpoint", flat=True))

    assert kept == {browsers[1].endpoint, browsers[2].endpoint}


def test_the_service_worker_is_served_at_the_root_for_the_whole_site(client):
    response = client.get("/biogram-sw.js")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert response["Service-Worker-Allowed"] == "/"
    assert b"showNotification" in response.content
