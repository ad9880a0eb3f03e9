"""The web chat page in a real browser: Playwright drives Debian's Chromium against a real server.

The last tests load static/biogram-client.js alone, with a scripted stand-in for
the WebSocket, to pin down what a live server cannot easily provoke: the
backoff's bounds, ordering around a gap, the outbox's retries, 4001/4003.

With BIOGRAM_SCREENSHOTS=<folder> (`make screenshots`) the tests keep
screenshots of the page's main states there (docs/screenshots/ in the repository).
"""

import os
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from conftest import BASE_DIR, token_for
from messaging import services
from messaging.models import Message
from messaging.tests.cluster import call

pytestmark = [pytest.mark.browser, pytest.mark.live]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1100, "height": 680}
SCREENSHOTS = os.environ.get("BIOGRAM_SCREENSHOTS")
CONNECTED = "#connection[data-tone='green']"
RECONNECTING = "#connection[data-tone='amber']"
OFFLINE = "#connection[data-tone='red']"
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("no /usr/bin/chromium: `make browser` installs Debian's")
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API keeps an event loop running in this thread, which Django
    # takes for async code; the ORM calls of these tests are plain synchronous ones.
    # The servers started here are given the check back (see `server`).
    previous = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = previous


@pytest.fixture
def start_server(browser, start_live_server):
    """`start_server(**env)`: conftest's live server, without the async-unsafe allowance this
    process needs for Playwright's sync API."""

    def start(**env):
        return start_live_server(**{ASYNC_UNSAFE: "", **env})

    return start


@pytest.fixture
def server(start_server):
    return start_server()


@pytest.fixture
def open_page(browser):
    """`open_page(server, user)`: a new browser window logged in as `user` on the messages page.

    `context=` opens another window of the same browser profile (same session); `viewport=`
    sizes a new one; `init_script=` runs in the page before its own scripts.
    Script errors on any page fail the test.
    """
    contexts, errors = [], []

    def open_(server, someone=None, *, path="/", context=None, viewport=None, init_script=None):
        if context is None:
            context = browser.new_context(viewport=viewport or VIEWPORT)
            contexts.append(context)
            if someone is not None:
                context.add_cookies([session_cookie(someone, server)])
        page = context.new_page()
        if init_script:
            page.add_init_script(init_script)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url + path)
        if someone is not None and path.split("#")[0] == "/":
            page.wait_for_selector(CONNECTED, timeout=10000)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, errors


def session_cookie(someone, server) -> dict:
    """The cookie of a Django session of `someone`, stored in the test database the server reads."""
    client = Client()
    client.force_login(someone)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    return {"name": settings.SESSION_COOKIE_NAME, "value": value, "url": server.url}


def keep_screenshot(page, name: str):
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))


def texts(page) -> list[str]:
    return page.locator("#message-list li .text").all_text_contents()


def send(page, text: str):
    page.fill("#composer-text", text)
    page.press("#composer-text", "Enter")


def wait_until(predicate, timeout: float = 10, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# ---------------------------------------------------------------- pages


def test_register_log_out_and_log_in_again_through_the_pages(open_page, server):
    page = open_page(server, path="/register/")
    keep_screenshot(page, "register")

    page.fill("#id_username", "dave")
    page.fill("#id_password1", "a-long-passphrase-1")
    page.fill("#id_password2", "a-long-passphrase-1")
    page.click("button[type=submit]")
    page.wait_for_selector(CONNECTED)
    page.click(".logout button")
    page.wait_for_url("**/login/")
    keep_screenshot(page, "login")
    page.fill("#id_username", "dave")
    page.fill("#id_password", "a-long-passphrase-1")
    page.click("button[type=submit]")

    page.wait_for_selector(CONNECTED)
    assert page.text_content(".me") == "dave"
    assert page.is_visible("#no-chats")


def test_two_users_chat_live_in_every_open_window(open_page, server, user, other_user):
    alice = open_page(server, user)
    bob = open_page(server, other_user)

    # Alice starts the chat from the user search.
    alice.fill("#user-search", "bo")
    alice.click(".user-item:has-text('bob')")
    alice.wait_for_selector("#chat-title:has-text('bob')")
    alice_again = open_page(server, path="/", context=alice.context)
    alice_again.wait_for_selector(CONNECTED)
    bob.wait_for_selector(".chat-item:has-text('alice')")
    send(alice, "Hi Bob!")

    bob.wait_for_selector(".chat-item .unread:has-text('1')")
    assert "alice" in bob.text_content(".chat-item")
    assert "Hi Bob!" in bob.text_content(".chat-item .chat-preview")
    alice_again.click(".chat-item")
    alice_again.wait_for_selector("#message-list li:has-text('Hi Bob!')")
    # Bob's page shows it in his chat list: delivered, not yet seen.
    alice.wait_for_selector("#message-list li.mine .receipt:has-text('Delivered')")

    bob.click(".chat-item")
    bob.wait_for_selector("#message-list li.theirs:has-text('Hi Bob!')")
    alice.wait_for_selector("#message-list li.mine .receipt:has-text('Seen')")
    assert bob.locator(".chat-item .unread").count() == 0
    send(bob, "Hello Alice, how are you?")

    for page in (alice, alice_again):
        page.wait_for_selector("#message-list li.theirs:has-text('Hello Alice')")
        assert texts(page) == ["Hi Bob!", "Hello Alice, how are you?"]
    bob.wait_for_selector("#message-list li.mine .receipt:has-text('Seen')")
    assert texts(bob) == ["Hi Bob!", "Hello Alice, how are you?"]
    assert Message.objects.count() == 2

    bob.reload()  # history and receipts come back from the REST API
    bob.wait_for_selector(CONNECTED)
    bob.wait_for_selector("#message-list li.mine .receipt:has-text('Seen')")
    assert texts(bob) == ["Hi Bob!", "Hello Alice, how are you?"]
    assert bob.is_visible("#chat-presence.online")
    keep_screenshot(bob, "chat")


def test_seen_by_counts_the_readers_of_a_group_chat(
    open_page, server, user, other_user, third_user, group_chat
):
    services.send_message(sender=user, chat_id=group_chat.pk, text="Team, lunch at noon?")
    alice = open_page(server, user, path=f"/#chat-{group_chat.pk}")
    alice.wait_for_selector("#message-list li.mine .receipt:has-text('Sent')")

    bob = open_page(server, other_user, path=f"/#chat-{group_chat.pk}")
    alice.wait_for_selector("#message-list .receipt:has-text('Seen by 1')")
    carol = open_page(server, third_user, path=f"/#chat-{group_chat.pk}")

    alice.wait_for_selector("#message-list .receipt:has-text('Seen by 2')")
    for page in (bob, carol):
        assert texts(page) == ["Team, lunch at noon?"]
        assert page.text_content("#message-list li .sender") == "alice"
    send(bob, "Yes, the usual place?")
    send(carol, "Count me in")
    alice.wait_for_selector("#message-list li:has-text('Count me in')")
    send(alice, "Usual place it is")
    alice.wait_for_selector("#message-list li.mine:last-child .receipt:has-text('Seen by 2')")
    keep_screenshot(alice, "group-chat")


def test_user_text_is_shown_as_text_never_as_html(open_page, server, user, other_user, chat):
    hostile = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"
    bob = open_page(server, other_user, path=f"/#chat-{chat.pk}")
    alice = open_page(server, user, path=f"/#chat-{chat.pk}")

    send(alice, hostile)

    bob.wait_for_selector("#message-list li.theirs")
    assert texts(bob) == [hostile]
    assert bob.locator("#message-list img, #message-list b, .chat-list img").count() == 0
    assert bob.title() != "pwned"
    assert hostile in bob.text_content(".chat-item .chat-preview")


def test_older_messages_load_as_you_scroll_up(open_page, server, user, other_user, chat):
    for n in range(1, 101):
        services.send_message(sender=other_user, chat_id=chat.pk, text=f"message {n}")
    alice = open_page(server, user, path=f"/#chat-{chat.pk}")
    alice.wait_for_selector("#message-list li:has-text('message 100')")
    first_page = texts(alice)

    for _ in range(10):
        if alice.text_content("#history-status") == "This is the start of the chat.":
            break
        alice.eval_on_selector("#messages", "box => box.scrollTo(0, 0)")
        time.sleep(0.3)

    assert first_page == [f"message {n}" for n in range(61, 101)]
    assert texts(alice) == [f"message {n}" for n in range(1, 101)]
    assert alice.text_content("#history-status") == "This is the start of the chat."


# ---------------------------------------------------------------- edit, delete, reply, react, ticks


def bubble(text: str) -> str:
    """The selector of the message bubble showing `text` (as its own text, not a quote)."""
    return f"#message-list li:has(> .text:text-is('{text}'))"


def open_menu(page, text: str):
    page.click(f"{bubble(text)} .menu-button")
    page.wait_for_selector(f"{bubble(text)} .message-menu")


def test_the_author_edits_a_message_from_its_menu_and_every_window_shows_it_edited(
    open_page, server, user, other_user, chat
):
    alice = open_page(server, user, path=f"/#chat-{chat.pk}")
    bob = open_page(server, other_user, path=f"/#chat-{chat.pk}")
    send(alice, "See you at 6")
    bob.wait_for_selector(bubble("See you at 6"))

    open_menu(alice, "See you at 6")
    alice.click(".message-menu .edit")
    assert alice.input_value("#composer-text") == "See you at 6"
    assert alice.is_visible("#composer-context:has-text('Editing')")
    alice.fill("#composer-text", "See you at 7")
    alice.press("#composer-text", "Enter")

    for page in (alice, bob):
        page.wait_for_selector(f"{bubble('See you at 7')} .edited:has-text('edited')")
        assert texts(page) == ["See you at 7"]
    assert bob.locator("#message-list li.theirs .menu-button").count() == 1
    open_menu(bob, "See you at 7")
    assert bob.locator(".message-menu .edit, .message-menu .delete").count() == 0  # not his
    keep_screenshot(alice, "edited")
    message = Message.objects.get()
    assert (message.text, message.edits.get().text) == ("See you at 7", "See you at 6")


def test_the_author_deletes_a_message_after_confirming_and_it_is_gone_everywhere(
    open_page, server, user, other_user, chat
):
    services.send_message(sender=user, chat_id=chat.pk, text="wrong chat, sorry")
    alice = open_page(server, user, path=f"/#chat-{chat.pk}")
    bob = open_page(server, other_user, path=f"/#chat-{chat.pk}")
    bob.wait_for_selector(bubble("wrong chat, sorry"))

    open_menu(alice, "wrong chat, sorry")
    alice.click(".message-menu .delete")
    alice.wait_for_selector(".message-menu .delete.confirm:has-text('Delete for everyone?')")
    alice.click(".message-menu .delete.confirm")

    for page in (alice, bob):
        page.wait_for_selector("#message-list li.deleted .text:has-text('Message deleted')")
        assert "message deleted" in page.text_content(".chat-item .chat-preview")
    assert Message.objects.get().deleted_by_author


def test_a_reply_quotes_its_original_which_a_click_scrolls_to_and_says_when_it_is_deleted(
    open_page, server, user, other_user, chat
):
    original, _ = services.send_message(sender=other_user, chat_id=chat.pk, text="Pizza or sushi?")
    for n in range(1, 60):
        services.send_message(sender=other_user, chat_id=chat.pk, text=f"filler {n}")
    alice = open_page(server, user, path=f"/#chat-{chat.pk}")
    bob = open_page(server, other_user, path=f"/#chat-{chat.pk}")
    alice.wait_for_selector(bubble("filler 59"))

    open_menu(alice, "filler 59")
    alice.click(".message-menu .reply")
    assert alice.is_visible("#composer-context:has-text('Replying to bob: filler 59')")
    send(alice, "The last one")
    for page in (alice, bob):
        page.wait_for_selector(f"{bubble('The last one')} .quote:has-text('filler 59')")
    # A reply to a message older than the page shown (sent over REST to the server, so that it
    # is announced live): its quote is fetched, and a click loads it.
    messages = f"/api/chats/{chat.pk}/messages/"
    reply = {"text": "Sushi", "replyTo": str(original.pk)}
    assert call(server.url, "POST", messages, reply, token=token_for(user))[0] == 201
    bob.wait_for_selector(f"{bubble('Sushi')} .quote:has-text('Pizza or sushi?')")
    assert bob.locator(bubble("Pizza or sushi?")).count() == 0
    bob.click(f"{bubble('Sushi')} .quote")
    bob.wait_for_selector(f"{bubble('Pizza or sushi?')}.flash")
    keep_screenshot(bob, "reply")

    deleted = call(server.url, "DELETE", f"{messages}{original.pk}/", token=token_for(other_user))

    assert deleted[0] == 204
    for page in (alice, bob):
        page.wait_for_selector(f"{bubble('Sushi')} .quote.gone:has-text('Original deleted')")


def test_reactions_are_picked_from_the_menu_counted_under_the_bubble_and_toggled_by_a_click(
    open_page, server, user, other_user, third_user, group_chat
):
    services.send_message(sender=user, chat_id=group_chat.pk, text="Ship it?")
    alice = open_page(server, user, path=f"/#chat-{group_chat.pk}")
    bob = open_page(server, other_user, path=f"/#chat-{group_chat.pk}")
    bob.wait_for_selector(bubble("Ship it?"))

    open_menu(bob, "Ship it?")
    bob.click(".message-menu .pick[data-emoji='👍']")
    alice.wait_for_selector(f"{bubble('Ship it?')} .reaction:has-text('👍 1')")
    alice.click(f"{bubble('Ship it?')} .reaction[data-emoji='👍']")
    for page in (alice, bob):
        page.wait_for_selector(f"{bubble('Ship it?')} .reaction:has-text('👍 2')")
    assert alice.get_attribute(f"{bubble('Ship it?')} .reaction", "aria-pressed") == "true"
    open_menu(alice, "Ship it?")
    alice.click(".message-menu .pick[data-emoji='🎉']")
    bob.wait_for_selector(f"{bubble('Ship it?')} .reaction:has-text('🎉 1')")
    keep_screenshot(bob, "reactions")
    bob.click(f"{bubble('Ship it?')} .reaction[data-emoji='👍']")

    for page in (alice, bob):
        page.wait_for_selector(f"{bubble('Ship it?')} .reaction:has-text('👍 1')")
        assert page.locator(f"{bubble('Ship it?')} .reaction").all_text_contents() == [
            "👍 1",
            "🎉 1",
        ]


def test_ticks_go_from_sent_to_delivered_to_seen(
    open_page, server, user, other_user, chat, group_chat
):
    alice = open_page(server, user, path=f"/#chat-{chat.pk}")
    send(alice, "Are you there?")
    alice.wait_for_selector(f"{bubble('Are you there?')} .tick[data-state='sent']")
    alice.wait_for_selector("#message-list .receipt:has-text('Sent')")

    bob = open_page(server, other_user, path=f"/#chat-{group_chat.pk}")  # another chat open
    alice.wait_for_selector(f"{bubble('Are you there?')} .tick[data-state='delivered']")
    alice.wait_for_selector("#message-list .receipt:has-text('Delivered')")
    bob.click(f".chat-item[data-chat-id='{chat.pk}']")

    alice.wait_for_selector(f"{bubble('Are you there?')} .tick[data-state='seen']")
    alice.wait_for_selector("#message-list .receipt:has-text('Seen')")
    keep_screenshot(alice, "ticks")


def test_group_receipts_count_the_members_it_was_delivered_to_and_seen_by(
    open_page, server, user, other_user, third_user, group_chat, chat
):
    alice = open_page(server, user, path=f"/#chat-{group_chat.pk}")
    send(alice, "Standup in 5")
    alice.wait_for_selector("#message-list .receipt:has-text('Sent')")

    open_page(server, other_user, path=f"/#chat-{chat.pk}")  # bob's device gets it
    alice.wait_for_selector("#message-list .receipt:has-text('Delivered to 1')")
    carol = open_page(server, third_user, path="/")
    alice.wait_for_selector("#message-list .receipt:has-text('Delivered to 2')")
    assert alice.get_attribute(f"{bubble('Standup in 5')} .tick", "data-state") == "delivered"
    carol.click(f".chat-item[data-chat-id='{group_chat.pk}']")

    alice.wait_for_selector("#message-list .receipt:has-text('Seen by 1')")
    assert alice.get_attribute(f"{bubble('Standup in 5')} .tick", "data-state") == "delivered"


# ---------------------------------------------------------------- typing


def test_typing_indicator_appears_and_expires_3_seconds_after_typing_stops(
    open_page, server, user, other_user, chat
):
    services.send_message(sender=other_user, chat_id=chat.pk, text="Did you get the photos?")
    alice = open_page(server, user, path=f"/#chat-{chat.pk}")
    bob = open_page(server, other_user, path=f"/#chat-{chat.pk}")
    alice.wait_for_selector("#chat-presence.online")  # bob came online: a presence frame
    assert bob.is_visible(".chat-item .presence.online")  # alice was: the `connect` frame

    alice.type("#composer-text", "I am writ", delay=40)
    bob.wait_for_selector("#typing:has-text('alice is typing…')", timeout=5000)
    stopped = time.monotonic()
    keep_screenshot(bob, "typing")
    bob.wait_for_function("document.getElementById('typing').textContent === ''", timeout=8000)
    waited = time.monotonic() - stopped

    alice.type("#composer-text", "ing this", delay=40)
    bob.wait_for_selector("#typing:has-text('alice is typing…')", timeout=5000)
    alice.press("#composer-text", "Enter")
    bob.wait_for_selector("#message-list li:has-text('I am writing this')")
    assert texts(bob) == ["Did you get the photos?", "I am writing this"]
    landed = time.monotonic()
    bob.wait_for_function("document.getElementById('typing').textContent === ''", timeout=8000)

    assert 2.0 <= waited <= 5.0
    assert time.monotonic() - landed < 1.0


# ---------------------------------------------------------------- reconnection


def test_indicator_goes_amber_while_the_server_is_down_and_green_with_the_missed_message(
    open_page, server, user, other_user, chat
):
    services.send_message(sender=other_user, chat_id=chat.pk, text="before the outage")
    alice = open_page(server, user, path=f"/#chat-{chat.pk}")
    bob = open_page(server, other_user, path=f"/#chat-{chat.pk}")
    alice.wait_for_selector("#message-list li:has-text('before the outage')")

    server.stop(signal.SIGTERM)
    alice.wait_for_selector(RECONNECTING, timeout=5000)
    bob.wait_for_selector(RECONNECTING, timeout=5000)
    alice.wait_for_selector("#connection-label:has-text('Reconnecting in')", timeout=5000)
    keep_screenshot(alice, "reconnecting")
    services.send_message(sender=other_user, chat_id=chat.pk, text="sent while you were away")
    server.start()  # the same port again

    alice.wait_for_selector(CONNECTED, timeout=45000)
    alice.wait_for_selector("#message-list li:has-text('sent while you were away')")
    bob.wait_for_selector(CONNECTED, timeout=45000)
    send(bob, "and one more, live")
    alice.wait_for_selector("#message-list li:has-text('and one more, live')")
    assert texts(alice) == ["before the outage", "sent while you were away", "and one more, live"]
    assert alice.locator("#connection-label").text_content() == "Connected"


def test_a_deletion_and_an_edit_made_while_the_page_was_offline_show_after_it_reconnects(
    open_page, server, user, other_user, chat
):
    regret, _ = services.send_message(sender=other_user, chat_id=chat.pk, text="regrettable")
    typo, _ = services.send_message(sender=other_user, chat_id=chat.pk, text="teh end")
    alice = open_page(server, user, path=f"/#chat-{chat.pk}")
    alice.wait_for_selector(bubble("teh end"))

    server.stop(signal.SIGTERM)
    alice.wait_for_selector(RECONNECTING, timeout=5000)
    services.delete_own_message(user=other_user, chat_id=chat.pk, message_id=regret.pk)
    services.edit_message(user=other_user, chat_id=chat.pk, message_id=typo.pk, text="the end")
    server.start()  # the same port again

    alice.wait_for_selector(CONNECTED, timeout=45000)
    alice.wait_for_selector("#message-list li.deleted .text:has-text('Message deleted')")
    alice.wait_for_selector(f"{bubble('the end')} .edited")
    assert texts(alice) == ["Message deleted", "the end"]
    assert "regrettable" not in alice.text_content("#message-list")


def test_message_typed_while_offline_waits_in_the_outbox_and_is_delivered_once(
    open_page, server, user, other_user, chat
):
    alice = open_page(server, user, path=f"/#chat-{chat.pk}")
    bob = open_page(server, other_user, path=f"/#chat-{chat.pk}")

    server.stop(signal.SIGTERM)
    alice.wait_for_selector(RECONNECTING, timeout=5000)
    send(alice, "written while offline")
    alice.wait_for_selector("#pending-list li.pending:has-text('written while offline')")
    assert alice.text_content("#pending-list li .status") == "Sending…"
    keep_screenshot(alice, "offline-outbox")
    server.start()  # the same port again

    alice.wait_for_selector(CONNECTED, timeout=45000)
    alice.wait_for_selector("#message-list li.mine:has-text('written while offline')")
    bob.wait_for_selector(
        "#message-list li.theirs:has-text('written while offline')", timeout=45000
    )
    alice.wait_for_selector("#pending-list li", state="detached")
    time.sleep(0.5)  # a duplicate, if any, would have arrived by now
    assert Message.objects.filter(text="written while offline").count() == 1
    assert texts(alice) == ["written while offline"]
    assert texts(bob) == ["written while offline"]


def test_after_a_4001_the_page_stops_reconnecting_and_asks_to_log_in(open_page, server, user, chat):
    alice = open_page(server, user, path=f"/#chat-{chat.pk}")

    server.stop(signal.SIGTERM)
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    server.start()  # the same port again

    alice.wait_for_selector(OFFLINE, timeout=45000)
    alice.wait_for_selector("#session-ended", state="visible")
    keep_screenshot(alice, "session-ended")
    handshakes = server.output().count("WebSocket /ws/chat/")
    time.sleep(2)
    assert server.output().count("WebSocket /ws/chat/") == handshakes
    assert alice.evaluate("window.biogram.client.state") == "offline"
    assert alice.text_content("#connection-label") == "Offline: please log in again"


def test_logging_out_in_one_tab_tells_the_other_tab_it_was_logged_out_and_it_stays_out(
    open_page, server, user, chat
):
    first = open_page(server, user)
    second = open_page(server, context=first.context)
    second.wait_for_selector(CONNECTED, timeout=10000)

    first.click("form.logout button")
    wait_until(lambda: "/login/" in first.url, timeout=10)

    second.wait_for_selector("#session-ended", state="visible", timeout=10000)
    assert "logged out" in second.text_content("#session-ended-text")
    handshakes = server.output().count("WebSocket /ws/chat/")
    time.sleep(2)
    assert server.output().count("WebSocket /ws/chat/") == handshakes  # no silent reconnect
    assert second.evaluate("window.biogram.client.state") == "offline"


def test_token_is_refreshed_through_the_auth_frame_before_it_expires(
    open_page, start_server, user, chat
):
    server = start_server(JWT_ACCESS_LIFETIME=4)
    alice = open_page(server, user, path=f"/#chat-{chat.pk}")
    first_connection = alice.evaluate("window.biogram.client.connectionId")

    time.sleep(9)  # two token lifetimes: without a refresh the server closes with 4001
    send(alice, "still here")

    alice.wait_for_selector("#message-list li.mine:has-text('still here')")
    assert alice.evaluate("window.biogram.client.connectionId") == first_connection
    assert alice.evaluate("window.biogram.client.state") == "connected"


# ---------------------------------------------------------------- the client module alone

CLIENT_JS = (BASE_DIR / "clients" / "js" / "src" / "biogram-client.js").read_text()
HARNESS_ORIGIN = "http://biogram.test"
HARNESS = """
<!doctype html><meta charset="utf-8"><title>harness</title>
<script type="module">
import * as bio from "/static/biogram-client.js";

/** A WebSocket stand-in the test drives: open(), serve(type, data), drop(code). */
class FakeSocket {
  static all = [];
  constructor(url) { this.url = url; this.readyState = 0; this.sent = []; FakeSocket.all.push(this); }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code = 1000) { this.drop(code); }
  open() { this.readyState = 1; }
  serve(type, data) { this.onmessage && this.onmessage({ data: JSON.stringify({ type, data }) }); }
  welcome(chats = ["1"], extra = {}) {
    this.open();
    this.serve("connect", { userId: "7", connectionId: "c" + FakeSocket.all.length, chats,
                            online: [], tokenExpiresAt: null, ...extra });
  }
  drop(code = 1006) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose && this.onclose({ code });
  }
  sentOf(type) { return this.sent.filter((frame) => frame.type === type); }
}
const message = (seq, extra = {}) => ({ id: String(100 + seq), chatId: "1", seq: String(seq),
  senderId: "9", text: "m" + seq, clientMessageId: null, createdAt: "2026-01-01T00:00:00.000Z",
  deleted: false, ...extra });
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
Object.assign(window, { bio, FakeSocket, message, pause });
window.harnessReady = true;
</script>
"""


@pytest.fixture
def harness(browser):
    """A page with the client module and a scripted WebSocket, served without any server."""
    context = browser.new_context()
    page = context.new_page()

    def serve(route):
        path = route.request.url.removeprefix(HARNESS_ORIGIN)
        if path == "/static/biogram-client.js":
            route.fulfill(body=CLIENT_JS, content_type="text/javascript")
        else:
            route.fulfill(body=HARNESS, content_type="text/html")

    page.route(f"{HARNESS_ORIGIN}/**", serve)
    page.goto(f"{HARNESS_ORIGIN}/")
    page.wait_for_function("window.harnessReady === true")
    yield page
    context.close()


def run(page, script: str):
    """Run an async JS body in the harness and return its (JSON) result."""
    return page.evaluate(f"async () => {{ {script} }}")


def test_backoff_is_full_jitter_exponential_capped_at_30_seconds(harness):
    result = run(
        harness,
        """
        const top = () => 0.999999, bottom = () => 0;
        return {
          highest: [0, 1, 2, 3, 4, 5, 6, 7, 20, 1000].map(
            (n) => bio.backoffDelay(n, { random: top })),
          lowest: [0, 5, 20].map((n) => bio.backoffDelay(n, { random: bottom })),
          samples: Array.from({ length: 200 }, () => bio.backoffDelay(3)),
        };
        """,
    )

    assert result["highest"] == [499, 999, 1999, 3999, 7999, 15999, 29999, 29999, 29999, 29999]
    assert result["lowest"] == [0, 0, 0]
    assert all(0 <= delay < 4000 for delay in result["samples"])
    assert len(set(result["samples"])) > 50  # jittered, not a fixed ladder


def test_client_syncs_from_the_last_seq_and_emits_each_message_once_in_order(harness):
    result = run(
        harness,
        """
        const client = new bio.BiogramSocket({ url: "ws://x/ws/chat/", WebSocketImpl: FakeSocket });
        const seen = [];
        client.on("message", (m) => seen.push(m.seq));
        client.track("1", 2);
        client.connect();
        const socket = FakeSocket.all[0];
        socket.welcome(["1"]);
        const firstSync = socket.sentOf("sync");
        socket.serve("message", { message: message(3) });      // replayed
        socket.serve("sync", { chats: { "1": { lastSeq: "3", hasMore: false } } });
        socket.serve("message", { message: message(5) });      // live, after a gap: held back
        const gapSync = socket.sentOf("sync").slice(1);
        socket.serve("message", { message: message(3) });      // a duplicate
        socket.serve("message", { message: message(4) });      // replayed: fills the gap
        socket.serve("message", { message: message(5) });      // replayed: a duplicate
        socket.serve("sync", { chats: { "1": { lastSeq: "5", hasMore: false } } });
        return { firstSync, gapSync, seen, last: client.lastSeqOf("1") };
        """,
    )

    assert result["firstSync"] == [{"type": "sync", "data": {"chats": {"1": "2"}}}]
    assert result["gapSync"] == [{"type": "sync", "data": {"chats": {"1": "3"}}}]
    assert result["seen"] == ["3", "4", "5"]
    assert result["last"] == 5


def test_outbox_is_resent_with_the_same_client_message_id_until_acknowledged(harness):
    result = run(
        harness,
        """
        const client = new bio.BiogramSocket({ url: "ws://x/ws/chat/", WebSocketImpl: FakeSocket,
                                               backoff: { baseMs: 1 } });
        const events = [];
        client.on("pending", (item) => events.push(["pending", item.text]));
        client.on("sent", (item, m) => events.push(["sent", item.text, m.id]));
        client.on("message", (m) => events.push(["message", m.text]));
        client.connect();
        FakeSocket.all[0].drop();                       // the server is down
        const item = client.send("1", "hello");         // typed while offline
        const pendingWhileOffline = client.pending("1").length;
        await pause(30);
        FakeSocket.all[1].welcome();                    // back: the outbox goes out
        const firstTry = FakeSocket.all[1].sentOf("message");
        FakeSocket.all[1].drop();                       // lost before the acknowledgement
        await pause(30);
        const third = FakeSocket.all[2];
        third.welcome();
        const retry = third.sentOf("message");
        const echo = message(1, { senderId: "7", text: "hello", clientMessageId: item.clientMessageId });
        third.serve("message", { message: echo });
        third.serve("message", { message: echo });      // the retry's echo, again
        third.drop();
        await pause(30);
        FakeSocket.all[3].welcome();
        return { id: item.clientMessageId, pendingWhileOffline, firstTry, retry, events,
                 afterAck: FakeSocket.all[3].sentOf("message"), left: client.pending("1").length };
        """,
    )

    frame = {
        "type": "message",
        "data": {"chatId": "1", "text": "hello", "clientMessageId": result["id"]},
    }
    assert len(result["id"]) == 32
    assert result["pendingWhileOffline"] == 1
    assert result["firstTry"] == [frame]
    assert result["retry"] == [frame]
    assert result["afterAck"] == []
    assert result["left"] == 0
    assert result["events"] == [
        ["pending", "hello"],
        ["sent", "hello", "101"],
        ["message", "hello"],
    ]


@pytest.mark.parametrize("code", [4001, 4003])
def test_client_never_reconnects_after_close_4001_or_4003(harness, code):
    result = run(
        harness,
        f"""
        const client = new bio.BiogramSocket({{ url: "ws://x/ws/chat/", WebSocketImpl: FakeSocket,
                                                backoff: {{ baseMs: 1 }} }});
        const states = [], refused = [];
        client.on("state", (s) => states.push(s.state));
        client.on("unauthorized", (e) => refused.push(e.code));
        client.connect();
        FakeSocket.all[0].welcome();
        FakeSocket.all[0].drop({code});
        await pause(100);
        return {{ sockets: FakeSocket.all.length, states, refused, state: client.state }};
        """,
    )

    assert result["sockets"] == 1
    assert result["refused"] == [code]
    assert result["states"] == ["connecting", "connected", "offline"]


def test_client_reconnects_with_a_fresh_token_after_token_expired(harness):
    result = run(
        harness,
        """
        let issued = 0;
        const getToken = async () => ({ token: "t" + (++issued), expiresAt: Date.now() + 600000 });
        const client = new bio.BiogramSocket({ url: "ws://x/ws/chat/", WebSocketImpl: FakeSocket,
                                               backoff: { baseMs: 1 }, getToken });
        client.connect();
        await pause(10);
        FakeSocket.all[0].welcome();
        FakeSocket.all[0].serve("disconnect", { userId: "7", reason: "token_expired" });
        FakeSocket.all[0].drop(4001);
        await pause(50);
        return { urls: FakeSocket.all.map((s) => s.url), state: client.state };
        """,
    )

    assert result["urls"] == ["ws://x/ws/chat/?token=t1", "ws://x/ws/chat/?token=t2"]
    assert result["state"] == "connecting"


def test_client_refreshes_its_token_with_an_auth_frame_before_expiry(harness):
    result = run(
        harness,
        """
        let issued = 0;
        const getToken = async () => ({ token: "t" + (++issued), expiresAt: Date.now() + 400 });
        const client = new bio.BiogramSocket({ url: "ws://x/ws/chat/", WebSocketImpl: FakeSocket,
                                               getToken });
        client.connect();
        await pause(10);
        const socket = FakeSocket.all[0];
        socket.welcome(["1"], { tokenExpiresAt: new Date(client.token.expiresAt).toISOString() });
        await pause(350);                               // refreshed at 3/4 of the lifetime
        return { auth: socket.sentOf("auth"), sockets: FakeSocket.all.length };
        """,
    )

    assert result["auth"] == [{"type": "auth", "data": {"token": "t2"}}]
    assert result["sockets"] == 1


def test_silent_connection_is_pinged_and_dropped_when_the_ping_goes_unanswered(harness):
    result = run(
        harness,
        """
        const client = new bio.BiogramSocket({ url: "ws://x/ws/chat/", WebSocketImpl: FakeSocket,
                                               pingIntervalMs: 60, pongTimeoutMs: 60,
                                               backoff: { baseMs: 1 } });
        client.connect();
        const answered = FakeSocket.all[0];
        answered.welcome();
        await pause(100);
        answered.serve("pong", { serverTime: "2026-01-01T00:00:00.000Z" });
        await pause(60);
        const stillUp = FakeSocket.all.length === 1 && client.state === "connected";
        await pause(300);                                // pinged again, never answered
        return { stillUp, pings: answered.sentOf("ping").length, sockets: FakeSocket.all.length };
        """,
    )

    assert result["stillUp"]
    assert result["pings"] == 2
    assert result["sockets"] == 2


def test_client_keeps_the_newest_copy_of_each_message_and_syncs_from_its_rev_after_a_jump(harness):
    result = run(
        harness,
        """
        const client = new bio.BiogramSocket({ url: "ws://x/ws/chat/", WebSocketImpl: FakeSocket });
        const seen = [];
        client.on("message", (m) => seen.push(["message", m.seq, m.rev, m.text]));
        client.on("update", (m) => seen.push(["update", m.seq, m.rev, m.text]));
        client.on("delete", (d) => seen.push(["delete", d.seq, d.rev]));
        client.track("1", 2, 5);
        client.connect();
        const socket = FakeSocket.all[0];
        socket.welcome(["1"]);
        const firstSync = socket.sentOf("sync");
        socket.serve("sync", { chats: { "1": { lastSeq: "2", rev: "5", hasMore: false } } });
        socket.serve("update", { chatId: "1", message: message(1, { rev: "6", text: "m1!" }) });
        socket.serve("update", { chatId: "1", message: message(1, { rev: "4", text: "old" }) });
        socket.serve("message", { message: message(3, { rev: "7" }) });
        socket.serve("delete", { chatId: "1", messageId: "102", seq: "2", rev: "9" }); // 8 lost
        const jumpSync = socket.sentOf("sync").slice(1);
        socket.serve("update", { chatId: "1", message: message(3, { rev: "8", text: "m3!" }) });
        socket.serve("delete", { chatId: "1", messageId: "102", seq: "2", rev: "9" });
        socket.serve("sync", { chats: { "1": { lastSeq: "3", rev: "9", hasMore: false } } });
        const newest = client.freshest(message(3, { rev: "7" }));
        return { firstSync, jumpSync, seen, rev: client.revOf("1"), newest: newest.text };
        """,
    )

    assert result["firstSync"] == [
        {"type": "sync", "data": {"chats": {"1": {"seq": "2", "rev": "5"}}}}
    ]
    assert result["jumpSync"] == [
        {"type": "sync", "data": {"chats": {"1": {"seq": "3", "rev": "7"}}}}
    ]
    assert result["seen"] == [
        ["update", "1", "6", "m1!"],
        ["message", "3", "7", "m3"],
        ["delete", "2", "9"],
        ["update", "3", "8", "m3!"],
    ]
    assert result["rev"] == 9
    assert result["newest"] == "m3!"


def test_client_pages_the_rest_of_a_long_absence_from_rest_before_saying_synced(harness):
    result = run(
        harness,
        """
        const asked = [];
        const pages = {
          "5": { results: [message(7, { rev: "9" }), message(2, { rev: "10", text: "m2!" }),
                           message(6, { rev: "11" })], rev: "11", hasMore: true },
          "11": { results: [message(1, { rev: "12", deleted: true, text: null })],
                  rev: "12", hasMore: false },
        };
        const fetchImpl = async (url, options) => {
          asked.push([url, options.headers.Authorization || null]);
          const since = new URL(url, "http://x").searchParams.get("since");
          return { ok: true, json: async () => pages[since] };
        };
        const client = new bio.BiogramSocket({ url: "ws://x/ws/chat/", WebSocketImpl: FakeSocket,
                                               fetchImpl });
        const seen = [], synced = [];
        client.on("message", (m) => seen.push(["message", m.seq]));
        client.on("update", (m) => seen.push(["update", m.seq, m.text]));
        client.on("delete", (d) => seen.push(["delete", d.seq]));
        client.on("synced", (chats) => synced.push(chats));
        client.track("1", 3, 3);
        client.connect();
        const socket = FakeSocket.all[0];
        socket.welcome(["1"]);
        socket.serve("message", { message: message(4, { rev: "4" }) });
        socket.serve("message", { message: message(5, { rev: "5" }) });
        socket.serve("sync", { chats: { "1": { lastSeq: "5", rev: "5", hasMore: true } } });
        await pause(50);
        return { asked, seen, synced, rev: client.revOf("1"), last: client.lastSeqOf("1") };
        """,
    )

    assert [url for url, _ in result["asked"]] == [
        "/api/chats/1/changes/?since=5&limit=200",
        "/api/chats/1/changes/?since=11&limit=200",
    ]
    assert result["seen"] == [
        ["message", "4"],
        ["message", "5"],
        ["message", "6"],
        ["message", "7"],
        ["update", "2", "m2!"],
        ["delete", "1"],
    ]
    assert result["synced"] == [{"1": {"lastSeq": "5", "rev": "12", "hasMore": False}}]
    assert (result["rev"], result["last"]) == (12, 7)


def test_client_reports_delivered_positions_once_connected_and_throttled_per_chat(harness):
    result = run(
        harness,
        """
        const client = new bio.BiogramSocket({ url: "ws://x/ws/chat/", WebSocketImpl: FakeSocket,
                                               deliveredThrottleMs: 100 });
        client.delivered("1", 3);                        // before connecting: kept
        client.connect();
        const socket = FakeSocket.all[0];
        socket.welcome(["1", "2"]);
        const atConnect = socket.sentOf("delivered").length;
        client.delivered("1", 4);
        client.delivered("1", 6);
        client.delivered("2", 1);
        client.delivered("1", 2);                        // behind: nothing
        const beforeWait = socket.sentOf("delivered").length;
        await pause(150);
        return { atConnect, beforeWait, sent: socket.sentOf("delivered").map((f) => f.data) };
        """,
    )

    assert result["atConnect"] == 1
    assert result["beforeWait"] == 2
    assert result["sent"] == [
        {"chatId": "1", "seq": "3"},
        {"chatId": "2", "seq": "1"},
        {"chatId": "1", "seq": "6"},
    ]


def test_page_has_no_inline_html_built_from_strings():
    """User text must only reach the DOM through textContent / text nodes."""
    page_js = (BASE_DIR / "static" / "biogram-page.js").read_text()

    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in page_js.split("*/", 1)[1], sink
