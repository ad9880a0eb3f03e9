"""Notifications from a real server process: its notifier runs beside the sockets (`manage.py serve`).

A member whose socket is open but whose device never says `delivered` is pushed;
one whose device says it in time is not. The push service and the webhook
receiver are the test's own (`push_service.py`).
"""

import asyncio
import os
import signal
import time

import pytest

from conftest import db_call, token_for
from messaging.testing import send_and_ack
from messaging.tests.cluster import call
from messaging.tests.push_service import Browser, vapid_key_pem, webhook_signature_ok

pytestmark = pytest.mark.live

SECRET = "whsec-live"


@pytest.fixture
def server(start_live_server, webhook_receiver):
    return start_live_server(
        NOTIFIER_ENABLED=1,
        NOTIFY_DELAY_MS=300,
        NOTIFY_POLL_MS=100,
        WEBPUSH_ALLOW_INSECURE=1,
        VAPID_PRIVATE_KEY=vapid_key_pem(),
        NOTIFY_WEBHOOK_URL=webhook_receiver.url + "/hook",
        NOTIFY_WEBHOOK_SECRET=SECRET,
        RATE_LIMIT_ENABLED=0,
    )


def subscribe(server, someone, push_service) -> Browser:
    browser = Browser(push_service)
    status, _ = call(
        server.url,
        "POST",
        "/api/push/subscriptions/",
        browser.subscription(),
        token=token_for(someone),
    )
    assert status == 201
    return browser


async def test_a_member_online_but_not_acknowledging_is_pushed(
    server, open_socket, push_service, webhook_receiver, user, other_user, chat
):
    bob_browser = await db_call(subscribe)(server, other_user, push_service)
    alice = await open_socket(server, user)
    bob = await open_socket(server, other_user)

    sent = await send_and_ack(alice, chat.pk, "are-you-there")
    await bob.receive_type("message")  # shown on an open socket, never marked delivered

    (push,) = await asyncio.to_thread(push_service.wait_for, 1, path=bob_browser.path)
    payload = bob_browser.decrypt(push)
    assert (payload["messageId"], payload["count"], payload["userIds"]) == (
        sent["id"],
        1,
        [str(other_user.pk)],
    )
    (hook,) = await asyncio.to_thread(webhook_receiver.wait_for, 1)
    assert webhook_signature_ok(hook, SECRET)


async def test_a_member_whose_socket_marks_delivered_in_time_is_not_pushed(
    server, open_socket, push_service, user, other_user, third_user, group_chat
):
    bob_browser = await db_call(subscribe)(server, other_user, push_service)
    carol_browser = await db_call(subscribe)(server, third_user, push_service)
    alice = await open_socket(server, user)
    bob = await open_socket(server, other_user)

    await send_and_ack(alice, group_chat.pk, "standup")
    frame = await bob.receive_type("message")
    await bob.send("delivered", chatId=str(group_chat.pk), seq=frame["data"]["message"]["seq"])

    # Carol, offline, is pushed; by then and a while after, nothing came for Bob.
    await asyncio.to_thread(push_service.wait_for, 1, path=carol_browser.path)
    await asyncio.sleep(1.0)
    assert bob_browser.pushes() == []


def notifier_pids(server) -> list[int]:
    path = f"/proc/{server.process.pid}/task/{server.process.pid}/children"
    with open(path) as handle:
        return [int(pid) for pid in handle.read().split()]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not yet reaped
    except OSError:
        return True


def test_the_notifier_process_is_restarted_and_ends_with_its_server(server):
    (first,) = notifier_pids(server)
    os.kill(first, signal.SIGKILL)

    assert wait_for(lambda: [p for p in notifier_pids(server) if p != first], timeout=10)
    (second,) = [p for p in notifier_pids(server) if p != first]
    server.kill()  # not even a chance to stop it: it notices its server is gone
    assert wait_for(lambda: gone(second), timeout=10)


def wait_for(condition, *, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    return condition()
