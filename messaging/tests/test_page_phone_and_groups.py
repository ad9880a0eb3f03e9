"""The messages page as people use it, at 1280 px and on a phone (390 px), in Chromium: one pane at a
time, dates and grouping, the unread divider and the jump button, the unread count in the title,
desktop notifications and their per-chat mute, groups made and managed from the page, presence
"unknown" while offline, the small things, keyboard use, and axe-core audits of every page.

Screenshots of both widths go to BIOGRAM_SCREENSHOTS (`make screenshots`: docs/screenshots/).
"""

import json
import re
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from conftest import BASE_DIR, make_user, token_for
from messaging import services
from messaging.models import Chat, Membership, Message
from messaging.tests.cluster import call
from messaging.tests.test_browser import (  # noqa: F401 (fixtures)
    CONNECTED,
    browser,
    keep_screenshot,
    open_page,
    send,
    server,
    start_server,
    texts,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.live]

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WIDTHS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
AXE = BASE_DIR / "messaging" / "tests" / "axe" / "node_modules" / "axe-core" / "axe.min.js"

# Records desktop notifications instead of showing them (a headless browser has no desktop), and
# answers the permission prompt "granted" once asked: what the page asks and shows is the test.
NOTIFICATION_RECORDER = """
(() => {
  const shown = [];
  let permission = "default";
  let asked = 0;
  class RecordedNotification {
    constructor(title, options = {}) {
      this.title = title;
      this.body = options.body;
      this.tag = options.tag;
      this.onclick = null;
      shown.push(this);
    }
    close() { this.closed = true; }
    static get permission() { return permission; }
    static async requestPermission() { asked += 1; permission = "granted"; return permission; }
  }
  window.Notification = RecordedNotification;
  window.__notifications = { shown, asked: () => asked };
})();
"""


def shown_notifications(page) -> list[dict]:
    return page.evaluate(
        "window.__notifications.shown.map(n => ({title: n.title, body: n.body, tag: n.tag}))"
    )


def is_phone(viewport) -> bool:
    return viewport["width"] <= 700


def visible(page, selector: str) -> bool:
    return page.locator(selector).first.is_visible()


def box(page, selector: str) -> dict:
    return page.locator(selector).first.bounding_box()


def post(server, sender, chat, text: str) -> dict:
    """A message sent through the live server's REST API, so the server announces it (the test
    process's own channel layer reaches no page on the embedded default)."""
    status, body = call(
        server.url,
        "POST",
        f"/api/chats/{chat.pk}/messages/",
        {"text": text},
        token=token_for(sender),
    )
    assert status == 201, (status, body)
    return body


def set_created_at(message, when):
    Message.objects.filter(pk=message.pk).update(created_at=when)
    Chat.objects.filter(pk=message.chat_id).update(last_message_at=when)


def open_chat(page, chat):
    page.click(f".chat-item[data-chat-id='{chat.pk}']")
    page.wait_for_selector("#chat-box:not([hidden])")


def axe_violations(page, *, context=None) -> list[dict]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not AXE.exists():
        pytest.fail(f"axe-core is not installed at {AXE}: `make axe` installs it")
    page.evaluate(AXE.read_text())
    results = page.evaluate(
        "async (context) => await axe.run(context || document, {resultTypes: ['violations']})",
        context,
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
        }
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def assert_accessible(page, where: str):
    violations = axe_violations(page)
    assert not violations, f"{where}: " + json.dumps(violations, indent=1)


def assert_nothing_clipped_sideways(page):
    width = page.evaluate("document.documentElement.clientWidth")
    overflowing = page.evaluate(
        """(width) => [...document.querySelectorAll('body *')]
             .filter(e => e.offsetParent !== null)
             .filter(e => { const r = e.getBoundingClientRect(); return r.width && r.right > width + 1; })
             .map(e => e.id || e.className)""",
        width,
    )
    assert overflowing == [], overflowing
    assert page.evaluate("document.documentElement.scrollWidth") <= width


# ---------------------------------------------------------------- one pane at a time


@WIDTHS
def test_a_phone_shows_one_pane_at_a_time_and_a_wide_screen_both(
    open_page, server, user, other_user, chat, viewport
):
    services.send_message(sender=other_user, chat_id=chat.pk, text="Are you coming tonight?")
    alice = open_page(server, user, viewport=viewport)
    alice.wait_for_selector(f".chat-item[data-chat-id='{chat.pk}']")
    keep_screenshot(alice, f"chat-list-{viewport['width']}")

    assert visible(alice, ".sidebar")
    assert visible(alice, "#no-chat") is not is_phone(viewport)
    topbar = box(alice, ".topbar")
    assert topbar["height"] < 60  # one line
    assert_nothing_clipped_sideways(alice)

    open_chat(alice, chat)
    alice.wait_for_selector("#message-list li:has-text('Are you coming tonight?')")

    assert visible(alice, "#chat-box")
    assert visible(alice, ".sidebar") is not is_phone(viewport)
    assert visible(alice, "#back") is is_phone(viewport)
    assert_nothing_clipped_sideways(alice)
    keep_screenshot(alice, f"chat-{viewport['width']}")
    if is_phone(viewport):
        alice.click("#back")
        alice.wait_for_selector(".sidebar", state="visible")
        assert not visible(alice, "#chat-box")
        alice.go_back()  # the browser's Back returns to the chat it left
        alice.wait_for_selector("#chat-box", state="visible")
        alice.go_back()
        alice.wait_for_selector(".sidebar", state="visible")


def test_on_a_phone_every_control_is_a_44_px_thumb_target_and_names_never_run_into_badges(
    open_page, server, user, other_user
):
    long_name = make_user("bartholomew_with_a_remarkably_long_username")
    chat, _ = services.create_chat(creator=user, member_ids=[long_name.pk])
    for n in range(3):
        services.send_message(sender=long_name, chat_id=chat.pk, text=f"unread {n}")
    alice = open_page(server, user, viewport=PHONE)
    alice.wait_for_selector(".chat-item .unread")

    name, badge = box(alice, ".chat-item .chat-name"), box(alice, ".chat-item .unread")
    assert name["x"] + name["width"] <= badge["x"] or name["y"] + name["height"] <= badge["y"]
    time_box = box(alice, ".chat-item .chat-time")
    assert name["x"] + name["width"] <= time_box["x"]
    search = box(alice, "#user-search")
    assert alice.eval_on_selector("#user-search", "e => e.scrollWidth <= e.clientWidth")
    assert search["width"] > 150  # the placeholder is not cut
    for selector in ("#new-group", ".chat-item", "#notify-on", ".logout button"):
        if visible(alice, selector):
            assert box(alice, selector)["height"] >= 44, selector

    open_chat(alice, chat)
    alice.wait_for_selector("#message-list li.message")
    for selector in ("#back", "#chat-menu-button", "#composer-text", "#composer button"):
        target = box(alice, selector)
        assert target["height"] >= 44 and target["width"] >= 44, (selector, target)
    menu_button = alice.locator("#message-list li.message .menu-button").first
    assert menu_button.bounding_box()["height"] >= 44
    assert alice.eval_on_selector(
        "#composer-text",
        "e => getComputedStyle(e).whiteSpace !== 'nowrap' && e.scrollWidth <= e.clientWidth",
    )
    assert_nothing_clipped_sideways(alice)


# ---------------------------------------------------------------- dates and grouping


@WIDTHS
def test_messages_have_day_separators_and_are_grouped_by_sender(
    open_page, server, user, other_user, chat, viewport
):
    now = timezone.now()
    today_noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    if today_noon > now:
        today_noon = now - timedelta(minutes=10)
    long_ago = (today_noon - timedelta(days=40)).replace(hour=12)
    days = [
        (long_ago, f"{long_ago:%b} {long_ago.day}"),
        (today_noon - timedelta(days=3), f"{today_noon - timedelta(days=3):%A}"),
        (today_noon - timedelta(days=1), "Yesterday"),
    ]
    for when, _ in days:
        message, _ = services.send_message(sender=other_user, chat_id=chat.pk, text=f"on {when:%F}")
        set_created_at(message, when)
    group = []
    for n, sender in enumerate([other_user, other_user, other_user, user]):
        message, _ = services.send_message(sender=sender, chat_id=chat.pk, text=f"today {n}")
        set_created_at(message, now - timedelta(seconds=40 - n))
        group.append(message)

    alice = open_page(server, user, path=f"/#chat-{chat.pk}", viewport=viewport)
    alice.wait_for_selector("#message-list li:has-text('today 3')")

    separators = alice.locator("#message-list li.day").all_text_contents()
    assert separators == [label for _, label in days] + ["Today"]
    bubbles = alice.locator("#message-list li.message")
    times = [bubbles.nth(i).locator("time").is_visible() for i in range(bubbles.count())]
    # three from bob in a row show one time, on the last; then alice's own
    assert times == [True, True, True, False, False, True, True]
    classes = [bubbles.nth(i).get_attribute("class") for i in range(bubbles.count())]
    assert "follows" in classes[4] and "follows" in classes[5] and "follows" not in classes[3]
    assert "follows" not in classes[6]  # another sender starts a new group
    keep_screenshot(alice, f"days-and-groups-{viewport['width']}")

    if is_phone(viewport):
        alice.click("#back")
    item_time = alice.text_content(f".chat-item[data-chat-id='{chat.pk}'] .chat-time")
    assert re.fullmatch(r"\d{2}:\d{2}", item_time), item_time


@WIDTHS
def test_the_chat_list_shows_yesterday_a_weekday_or_a_date(open_page, server, user, viewport):
    now = timezone.now()
    expected = {}
    for days_ago, label in [(1, "Yesterday"), (3, None), (30, None)]:
        someone = make_user(f"friend{days_ago}")
        chat, _ = services.create_chat(creator=user, member_ids=[someone.pk])
        message, _ = services.send_message(sender=someone, chat_id=chat.pk, text="hello")
        when = (now - timedelta(days=days_ago)).replace(hour=12)
        set_created_at(message, when)
        expected[chat.pk] = label or (f"{when:%a}" if days_ago < 7 else f"{when:%b} {when.day}")
    alice = open_page(server, user, viewport=viewport)

    for chat_id, label in expected.items():
        assert alice.text_content(f".chat-item[data-chat-id='{chat_id}'] .chat-time") == label


# ---------------------------------------------------------------- unread divider, jump button, title


@WIDTHS
def test_opening_a_chat_with_unread_messages_shows_the_divider_before_the_first(
    open_page, server, user, other_user, chat, viewport
):
    for n in range(30):
        services.send_message(sender=user if n < 25 else other_user, chat_id=chat.pk, text=f"m{n}")
    services.mark_read(user=user, chat_id=chat.pk)
    for n in range(30, 45):
        services.send_message(sender=other_user, chat_id=chat.pk, text=f"m{n}")

    alice = open_page(server, user, path=f"/#chat-{chat.pk}", viewport=viewport)
    alice.wait_for_selector("#message-list li.unread-divider")

    following = alice.locator("#message-list li.unread-divider + li.message .text")
    assert following.text_content() == "m30"
    divider = box(alice, "#message-list li.unread-divider")
    messages = box(alice, "#messages")
    assert messages["y"] <= divider["y"] <= messages["y"] + messages["height"]  # scrolled to it
    keep_screenshot(alice, f"unread-divider-{viewport['width']}")


@WIDTHS
def test_messages_arriving_while_scrolled_up_are_counted_on_the_jump_button(
    open_page, server, user, other_user, chat, viewport
):
    for n in range(40):
        services.send_message(sender=user, chat_id=chat.pk, text=f"line {n}\nsecond line")
    alice = open_page(server, user, path=f"/#chat-{chat.pk}", viewport=viewport)
    alice.wait_for_selector("#message-list li:has-text('line 39')")
    assert not visible(alice, "#jump")

    alice.eval_on_selector("#messages", "box => box.scrollTo(0, box.scrollHeight / 2)")
    alice.wait_for_selector("#jump:has-text('Latest')")
    post(server, other_user, chat, "first below")
    post(server, other_user, chat, "second below")

    alice.wait_for_selector("#jump:has-text('2 new messages')")
    keep_screenshot(alice, f"jump-button-{viewport['width']}")
    alice.click("#jump")
    alice.wait_for_selector("#jump", state="hidden")
    assert alice.eval_on_selector(
        "#messages", "b => b.scrollHeight - b.scrollTop - b.clientHeight < 2"
    )
    # seen now that the reader is at the bottom
    assert wait_until(lambda: _read_seq(chat, user) == 42)


def _read_seq(chat, user) -> int:
    from messaging.models import ReadReceipt

    return ReadReceipt.objects.get(chat=chat, user=user).seq


@WIDTHS
def test_the_tab_title_counts_unread_messages_across_chats(
    open_page, server, user, other_user, third_user, chat, viewport
):
    other_chat, _ = services.create_chat(creator=user, member_ids=[third_user.pk])
    alice = open_page(server, user, viewport=viewport)
    assert alice.title() == "Messages · Biogram"

    post(server, other_user, chat, "one")
    post(server, other_user, chat, "two")
    post(server, third_user, other_chat, "three")
    assert wait_until(lambda: alice.title() == "(3) Messages · Biogram"), alice.title()

    open_chat(alice, chat)
    assert wait_until(lambda: alice.title() == "(1) Messages · Biogram"), alice.title()


# ---------------------------------------------------------------- notifications


@WIDTHS
def test_a_notification_is_asked_for_by_a_button_and_shown_unless_the_chat_is_open(
    open_page, server, user, other_user, third_user, chat, viewport
):
    other_chat, _ = services.create_chat(creator=user, member_ids=[third_user.pk])
    alice = open_page(server, user, viewport=viewport, init_script=NOTIFICATION_RECORDER)

    assert alice.evaluate("window.__notifications.asked()") == 0  # never on load
    assert visible(alice, "#notify-on")
    keep_screenshot(alice, f"notifications-button-{viewport['width']}")
    alice.click("#notify-on")
    alice.wait_for_selector("#notify-bar", state="hidden")
    assert alice.evaluate("window.__notifications.asked()") == 1

    open_chat(alice, chat)
    post(server, other_user, chat, "in the open chat")
    post(server, third_user, other_chat, "elsewhere")
    assert wait_until(lambda: len(shown_notifications(alice)) == 1)
    assert shown_notifications(alice) == [
        {"title": "carol", "body": "elsewhere", "tag": f"chat-{other_chat.pk}"}
    ]
    alice.wait_for_timeout(300)
    assert len(shown_notifications(alice)) == 1  # nothing for the chat being read

    alice.evaluate("window.__notifications.shown[0].onclick()")  # clicking opens its chat
    alice.wait_for_selector("#message-list li:has-text('elsewhere')")
    assert alice.evaluate("location.hash") == f"#chat-{other_chat.pk}"


@WIDTHS
def test_a_chat_muted_from_its_menu_is_stored_on_the_server_and_never_notifies(
    open_page, server, user, other_user, chat, viewport
):
    alice = open_page(server, user, init_script=NOTIFICATION_RECORDER, viewport=viewport)
    alice.click("#notify-on")
    open_chat(alice, chat)
    alice.click("#chat-menu-button")
    keep_screenshot(alice, f"chat-menu-{viewport['width']}")
    alice.click("#menu-mute")
    assert wait_until(lambda: Membership.objects.get(chat=chat, user=user).notifications_muted)
    alice.wait_for_selector(f".chat-item[data-chat-id='{chat.pk}'] .muted-icon", state="attached")
    alice.click("#back") if visible(alice, "#back") else alice.evaluate("location.hash = ''")
    alice.wait_for_selector("#chat-box", state="hidden")

    post(server, other_user, chat, "muted chat")
    alice.wait_for_selector(".chat-item .chat-preview:has-text('muted chat')")
    alice.wait_for_timeout(300)
    assert shown_notifications(alice) == []

    second_tab = open_page(server, context=alice.context, path=f"/#chat-{chat.pk}")
    second_tab.wait_for_selector(CONNECTED)
    second_tab.click("#chat-menu-button")
    assert second_tab.text_content("#menu-mute") == "Unmute notifications"


# ---------------------------------------------------------------- groups


@WIDTHS
def test_a_group_is_made_renamed_grown_and_left_from_the_page_and_everyone_sees_it(
    open_page, server, user, other_user, third_user, viewport
):
    alice = open_page(server, user, viewport=viewport)
    bob = open_page(server, other_user, viewport=viewport)

    alice.click("#new-group")
    alice.fill("#group-title", "Climbing trip")
    alice.fill("#group-search", "bo")
    alice.click("#group-picker .user-item:has-text('bob')")
    keep_screenshot(alice, f"new-group-{viewport['width']}")
    assert_accessible(alice, "new group dialog")
    alice.click("#group-form button[type=submit]")
    alice.wait_for_selector("#chat-title:has-text('Climbing trip')")
    chat = Chat.objects.get(title="Climbing trip")
    assert set(chat.memberships.values_list("user_id", flat=True)) == {user.pk, other_user.pk}
    bob.wait_for_selector(f".chat-item[data-chat-id='{chat.pk}']:has-text('Climbing trip')")

    alice.click("#chat-menu-button")
    alice.click("#menu-rename")
    alice.fill("#rename-title", "Climbing weekend")
    alice.press("#rename-title", "Enter")
    bob.wait_for_selector(f".chat-item[data-chat-id='{chat.pk}']:has-text('Climbing weekend')")

    open_chat(bob, chat)
    bob.wait_for_selector("#chat-members:has-text('2 members')")
    alice.click("#chat-menu-button")
    alice.click("#menu-add")
    alice.fill("#add-search", "ca")
    alice.click("#add-picker .user-item:has-text('carol')")
    alice.click("#add-form button[type=submit]")
    bob.wait_for_selector("#chat-members:has-text('3 members')")

    bob.click("#chat-menu-button")
    bob.click("#menu-members")
    bob.wait_for_selector("#members-list li >> nth=2")
    states = {
        li.locator(".member-name").text_content(): li.locator(".member-state").text_content()
        for li in bob.locator("#members-list li").all()
    }
    assert states == {"alice": "online", "bob (you)": "online", "carol": "offline"}
    assert bob.text_content("#members-count") == "3 members"
    keep_screenshot(bob, f"members-{viewport['width']}")
    assert_accessible(bob, "members dialog")
    bob.keyboard.press("Escape")
    bob.wait_for_selector("#members-dialog", state="hidden")

    alice.click("#chat-menu-button")
    alice.click("#menu-leave")
    alice.click("#leave-form button[type=submit]")
    alice.wait_for_selector(f".chat-item[data-chat-id='{chat.pk}']", state="detached")
    bob.wait_for_selector("#chat-members:has-text('2 members')")
    assert not Membership.objects.filter(chat=chat, user=user).exists()


# ---------------------------------------------------------------- presence


@WIDTHS
def test_presence_shows_unknown_while_the_page_is_not_connected(
    open_page, server, user, other_user, chat, viewport
):
    alice = open_page(server, user, path=f"/#chat-{chat.pk}", viewport=viewport)
    open_page(server, other_user)
    alice.wait_for_selector("#chat-presence.online")
    assert alice.text_content("#chat-members") == "online"

    server.stop(signal.SIGTERM)
    alice.wait_for_selector("#chat-presence.unknown", timeout=5000)
    assert alice.text_content("#chat-members") == "unknown"
    assert alice.get_attribute(".chat-item .presence", "title") == "unknown"
    keep_screenshot(alice, f"presence-unknown-{viewport['width']}")
    server.start()

    alice.wait_for_selector(CONNECTED, timeout=45000)
    alice.wait_for_selector("#chat-presence.online", timeout=10000)


# ---------------------------------------------------------------- small things


@WIDTHS
def test_the_no_chats_hint_sits_under_the_search_it_points_to(open_page, server, user, viewport):
    alice = open_page(server, user, viewport=viewport)

    hint, search = box(alice, "#no-chats"), box(alice, "#user-search")
    assert 0 < hint["y"] - (search["y"] + search["height"]) < 60


@WIDTHS
def test_the_register_form_shows_the_password_rules_before_the_first_try(
    open_page, server, viewport
):
    page = open_page(server, path="/register/", viewport=viewport)

    rules = page.text_content("#id_password1_helptext")
    assert "at least 8 characters" in rules
    assert page.is_visible("#id_password1_helptext")
    assert page.get_attribute("#id_password1", "aria-describedby") == "id_password1_helptext"
    keep_screenshot(page, f"register-{viewport['width']}")


@WIDTHS
def test_the_composer_grows_with_multiline_text_and_shrinks_after_sending(
    open_page, server, user, chat, viewport
):
    alice = open_page(server, user, path=f"/#chat-{chat.pk}", viewport=viewport)
    alice.wait_for_selector("#chat-box:not([hidden])")
    one_line = box(alice, "#composer-text")["height"]

    alice.fill("#composer-text", "")
    alice.type("#composer-text", "first")
    for line in ("second", "third", "fourth"):
        alice.keyboard.press("Shift+Enter")
        alice.keyboard.type(line)
    grown = box(alice, "#composer-text")["height"]
    assert grown > one_line * 2
    assert box(alice, "#composer-text")["height"] <= 170  # a few lines, then it scrolls

    alice.keyboard.press("Enter")
    alice.wait_for_selector("#message-list li:has-text('fourth')")
    assert abs(box(alice, "#composer-text")["height"] - one_line) <= 1


@WIDTHS
def test_a_direct_chats_preview_leaves_out_the_other_persons_name(
    open_page, server, user, other_user, third_user, chat, group_chat, viewport
):
    services.send_message(sender=other_user, chat_id=chat.pk, text="see you at 8")
    services.send_message(sender=third_user, chat_id=group_chat.pk, text="who brings snacks")
    alice = open_page(server, user, viewport=viewport)

    assert alice.text_content(f"[data-chat-id='{chat.pk}'] .chat-preview") == "see you at 8"
    assert (
        alice.text_content(f"[data-chat-id='{group_chat.pk}'] .chat-preview")
        == "carol: who brings snacks"
    )
    post(server, user, chat, "deal")
    alice.wait_for_selector(f"[data-chat-id='{chat.pk}'] .chat-preview:has-text('You: deal')")


@WIDTHS
def test_the_connection_status_text_has_at_least_4_5_to_1_contrast(
    open_page, server, user, viewport
):
    alice = open_page(server, user, viewport=viewport)

    assert_accessible(alice, "connected")
    color = alice.eval_on_selector("#connection", "e => getComputedStyle(e).color")
    assert color == "rgb(21, 128, 61)"  # #15803d: 5.0:1 on white


# ---------------------------------------------------------------- keyboard


@WIDTHS
def test_every_control_works_from_the_keyboard(open_page, server, user, other_user, chat, viewport):
    services.send_message(sender=other_user, chat_id=chat.pk, text="hello there")
    alice = open_page(server, user, viewport=viewport)
    alice.wait_for_selector(".chat-item")

    alice.focus(f".chat-item[data-chat-id='{chat.pk}']")
    outline = alice.eval_on_selector(
        ".chat-item",
        "e => getComputedStyle(e).outlineStyle + ' ' + getComputedStyle(e).outlineWidth",
    )
    assert outline.startswith("solid") and outline != "solid 0px", outline
    alice.keyboard.press("Enter")
    alice.wait_for_selector("#message-list li:has-text('hello there')")

    alice.focus("#composer-text")
    alice.keyboard.type("sent with Enter")
    alice.keyboard.press("Enter")
    alice.wait_for_selector("#message-list li:has-text('sent with Enter')")

    alice.focus("#chat-menu-button")
    alice.keyboard.press("Enter")
    alice.wait_for_selector("#chat-menu", state="visible")
    assert alice.evaluate("document.activeElement.id") == "menu-mute"
    alice.keyboard.press("ArrowDown")
    assert alice.evaluate("document.activeElement.id") == "menu-members"
    alice.keyboard.press("Escape")
    alice.wait_for_selector("#chat-menu", state="hidden")
    assert alice.evaluate("document.activeElement.id") == "chat-menu-button"

    alice.focus("#message-list li.message .menu-button")
    alice.keyboard.press("Enter")
    alice.wait_for_selector(".message-menu")
    alice.keyboard.press("Escape")
    alice.wait_for_selector(".message-menu", state="detached")

    if is_phone(viewport):  # back to the list, from the keyboard too
        alice.focus("#back")
        alice.keyboard.press("Enter")
        alice.wait_for_selector("#new-group", state="visible")
    alice.focus("#new-group")
    alice.keyboard.press("Enter")
    alice.wait_for_selector("#group-dialog[open]")
    alice.keyboard.press("Escape")
    alice.wait_for_selector("#group-dialog", state="hidden")
    assert alice.evaluate("document.activeElement.id") == "new-group"


# ---------------------------------------------------------------- axe-core audits


@WIDTHS
def test_the_login_and_register_pages_pass_axe(open_page, server, viewport):
    page = open_page(server, path="/login/", viewport=viewport)
    assert_accessible(page, "login")
    page.goto(server.url + "/register/")
    assert_accessible(page, "register")
    page.fill("#id_username", "x")
    page.fill("#id_password1", "short")
    page.fill("#id_password2", "other")
    page.click("button[type=submit]")
    page.wait_for_selector(".errors")
    assert_accessible(page, "register with errors")


@WIDTHS
def test_the_chat_page_passes_axe_with_a_chat_a_menu_and_a_dialog_open(
    open_page, server, user, other_user, chat, viewport
):
    message, _ = services.send_message(sender=other_user, chat_id=chat.pk, text="audit me")
    services.react(user=user, chat_id=chat.pk, message_id=message.pk, emoji="👍")
    services.send_message(sender=user, chat_id=chat.pk, text="and me", reply_to=message.pk)
    alice = open_page(server, user, viewport=viewport)
    assert_accessible(alice, "chat list")

    open_chat(alice, chat)
    alice.wait_for_selector("#message-list li:has-text('and me')")
    assert_accessible(alice, "open chat")

    alice.click("#message-list li.message .menu-button")
    alice.wait_for_selector(".message-menu")
    assert_accessible(alice, "message menu")
    alice.keyboard.press("Escape")

    alice.click("#chat-menu-button")
    assert_accessible(alice, "chat menu")
    alice.click("#menu-leave")
    alice.wait_for_selector("#leave-dialog[open]")
    assert_accessible(alice, "leave dialog")
    keep_screenshot(alice, f"leave-dialog-{viewport['width']}")


def test_axe_itself_is_installed_and_finds_a_planted_violation(open_page, server, user):
    """The audits above could not pass by finding nothing: axe reports a button with no name."""
    alice = open_page(server, user)
    alice.evaluate(
        "document.body.append(Object.assign(document.createElement('button'), {id: 'x'}))"
    )

    assert [v["id"] for v in axe_violations(alice)] == ["button-name"]
    assert Path(AXE).is_file()
