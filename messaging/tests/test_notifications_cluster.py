"""Two server processes on PostgreSQL and a Redis of the test's own, each running its notifier: every
notification goes out once, whichever process decides it and whichever sends it."""

import json
import os
import time

import pytest

from conftest import make_user, token_for
from messaging import services
from messaging.tests.cluster import (
    CLUSTER_TEST,
    RedisServer,
    call,
    start_servers,
    stop_servers,
)
from messaging.tests.push_service import Browser, vapid_key_pem

pytestmark = CLUSTER_TEST

MEMBERS = 8
BURSTS = 6


@pytest.fixture
def pair(transactional_db, webhook_receiver):
    redis = RedisServer().start()
    servers = start_servers(
        2,
        {
            "REDIS_URL": redis.url,
            "CHANNEL_LAYER_PREFIX": f"biogram-notify-{os.getpid()}",
            "RATE_LIMIT_ENABLED": "0",
            "NOTIFIER_ENABLED": 1,
            "NOTIFY_DELAY_MS": 300,
            "NOTIFY_POLL_MS": 50,  # both poll often: their claims race
            "WEBPUSH_ALLOW_INSECURE": 1,
            "VAPID_PRIVATE_KEY": vapid_key_pem(),
            "NOTIFY_WEBHOOK_URL": webhook_receiver.url + "/hook",
            "NOTIFY_WEBHOOK_SECRET": "whsec-cluster",
        },
    )
    yield servers
    stop_servers(servers)
    redis.stop()


def test_two_processes_send_each_notification_exactly_once(
    pair, push_service, webhook_receiver, user
):
    members = [make_user(f"member{i}") for i in range(MEMBERS)]
    chat, _ = services.create_chat(creator=user, member_ids=[m.pk for m in members], title="Crowd")
    browsers = {}
    for index, member in enumerate(members):
        browsers[member.pk] = Browser(push_service, f"member{index}")
        status, _ = call(
            pair[index % 2].url,
            "POST",
            "/api/push/subscriptions/",
            browsers[member.pk].subscription(),
            token=token_for(member),
        )
        assert status == 201

    sent = []
    for burst in range(BURSTS):
        for n in range(3):
            status, message = call(
                pair[(burst + n) % 2].url,
                "POST",
                f"/api/chats/{chat.pk}/messages/",
                {"text": f"burst {burst} #{n}"},
                token=token_for(user),
            )
            assert status == 201
            sent.append(message["id"])
        time.sleep(0.25 if burst % 2 else 0.6)  # some bursts fold into the next, some do not

    # Every member hears of every message once: the folded counts add up, no message twice.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if all(sum(p["count"] for p in b.payloads()) >= len(sent) for b in browsers.values()):
            break
        time.sleep(0.2)
    time.sleep(1.5)  # a duplicate, if any, would come now
    for member_id, browser in browsers.items():
        payloads = browser.payloads()
        assert sum(p["count"] for p in payloads) == len(sent), (member_id, payloads)
        latest = [p["messageId"] for p in payloads]
        assert len(latest) == len(set(latest)), latest
        assert latest[-1] == sent[-1]
    calls = [json.loads(r.body) for r in webhook_receiver.to("/hook")]
    told = [(c["messageId"], user_id) for c in calls for user_id in c["userIds"]]
    assert len(told) == len(set(told))
    assert {m for m, _ in told} <= set(sent) and sent[-1] in {m for m, _ in told}
    assert sorted(told) == sorted(
        (p["messageId"], str(member_id)) for member_id, b in browsers.items() for p in b.payloads()
    )
