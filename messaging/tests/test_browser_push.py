"""The page's "Turn on notifications" in Chromium: service worker, permission, subscription, push.

Chromium cannot reach a real push service from here, so the browser's
`pushManager.subscribe` is answered by the test: a stand-in installed before the
page's scripts returns a subscription whose endpoint is the test's own push
service and whose keys the test made. Everything else is the real thing: the
page's button, static/biogram-push.js, the service worker at /biogram-sw.js,
the REST endpoints, the server's notifier, the encrypted push.
"""

import json

import pytest

from conftest import token_for
from messaging.models import PushSubscription
from messaging.tests import test_browser
from messaging.tests.cluster import call
from messaging.tests.push_service import Browser, b64url, vapid_key_pem
from messaging.tests.test_browser import wait_until

# The browser tests' fixtures: one Chromium per module, a live server, logged-in pages.
browser = test_browser.browser
start_server = test_browser.start_server
open_page = test_browser.open_page

pytestmark = [pytest.mark.browser, pytest.mark.live]

STAND_IN = """
(() => {
  const json = %(json)s;
  let current = null;
  window.__subscribeKeys = [];
  const subscription = {
    endpoint: json.endpoint,
    expirationTime: null,
    options: { userVisibleOnly: true, applicationServerKey: null },
    toJSON: () => json,
    unsubscribe: async () => { current = null; return true; },
  };
  PushManager.prototype.subscribe = async function (options) {
    const key = new Uint8Array(options.applicationServerKey);
    window.__subscribeKeys.push(btoa(String.fromCharCode(...key))
      .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, ""));
    subscription.options = { ...options, applicationServerKey: key.buffer };
    current = subscription;
    return subscription;
  };
  PushManager.prototype.getSubscription = async function () { return current; };
})();
"""


def test_turn_on_notifications_subscribes_this_browser_and_it_is_pushed_when_away(
    open_page, start_server, push_service, user, other_user, chat
):
    server = start_server(
        NOTIFIER_ENABLED=1,
        NOTIFY_DELAY_MS=300,
        NOTIFY_POLL_MS=100,
        WEBPUSH_ALLOW_INSECURE=1,
        VAPID_PRIVATE_KEY=vapid_key_pem(),
        RATE_LIMIT_ENABLED=0,
    )
    device = Browser(push_service, "bobs-chromium")
    public_key = call(server.url, "GET", "/api/push/key/")[1]["publicKey"]
    bob = open_page(server, other_user)
    bob.add_init_script(STAND_IN % {"json": json.dumps(device.subscription())})
    bob.reload()
    bob.wait_for_selector("#notify-on:visible")

    bob.context.grant_permissions(["notifications"], origin=server.url)
    bob.click("#notify-on")

    assert wait_until(lambda: PushSubscription.objects.filter(user=other_user).exists())
    subscription = PushSubscription.objects.get(user=other_user)
    assert (subscription.endpoint, subscription.p256dh, subscription.auth) == (
        device.endpoint,
        device.p256dh,
        b64url(device.auth),
    )
    assert bob.evaluate("window.__subscribeKeys") == [public_key]
    worker = bob.evaluate(
        "navigator.serviceWorker.getRegistration('/').then(r => r && r.active && r.active.scriptURL)"
    )
    assert worker == server.url + "/biogram-sw.js"

    # Bob goes away; Alice writes; his browser is pushed.
    bob.context.close()
    status, message = call(
        server.url,
        "POST",
        f"/api/chats/{chat.pk}/messages/",
        {"text": "Are you coming?"},
        token=token_for(user),
    )
    assert status == 201
    (push,) = push_service.wait_for(1, path=device.path, timeout=10)
    payload = device.decrypt(push)
    assert (payload["title"], payload["body"], payload["url"], payload["messageId"]) == (
        "alice",
        "Are you coming?",
        f"/#chat-{chat.pk}",
        message["id"],
    )
