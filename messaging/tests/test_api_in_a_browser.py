"""The REST API's parts a browser sees, in Chromium: the docs pages (Swagger UI, Redoc) render the
OpenAPI document and nothing they do reaches another host; the messages page follows the chat
list's pages to the end."""

import re
from urllib.parse import urlparse

import pytest

from messaging import services
from messaging.tests.test_browser import (  # noqa: F401 (fixtures)
    VIEWPORT,
    browser,
    open_page,
    server,
    session_cookie,
    start_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.live]

RENDERED = {
    "/api/docs/": ".opblock-summary-path[data-path='/api/chats/']",
    "/api/redoc/": "h2:text-is('chats_list')",
}


@pytest.mark.parametrize("path", RENDERED)
def test_docs_pages_render_and_load_nothing_from_another_host_in_a_browser(
    browser,  # noqa: F811
    server,  # noqa: F811
    path,
):
    context = browser.new_context()
    left_the_browser, stopped_by_policy = [], []
    # A request the page's Content-Security-Policy stops never reaches the network (nor this route).
    context.route(
        "**/*", lambda route: (left_the_browser.append(route.request.url), route.continue_())
    )
    page = context.new_page()
    page.on("requestfailed", lambda r: r.failure == "csp" and stopped_by_policy.append(r))

    page.goto(server.url + path)
    page.wait_for_selector(RENDERED[path], timeout=15000)
    page.wait_for_load_state("networkidle")
    context.close()

    here = urlparse(server.url).netloc
    assert {urlparse(url).netloc for url in left_the_browser} == {here}
    assert any("/static/drf_spectacular_sidecar/" in url for url in left_the_browser)
    # Only Redoc's hard-coded logo (an <img> from its CDN) is ever tried, and the policy stops it.
    assert [(r.resource_type, urlparse(r.url).netloc) for r in stopped_by_policy] in (
        [],
        [("image", "cdn.redoc.ly")],
    )


def test_the_page_follows_the_chat_lists_pages_to_the_end(
    browser,  # noqa: F811
    open_page,  # noqa: F811
    server,  # noqa: F811
    user,
):
    more_than_a_page = 203  # the page asks for 200 at a time
    ids = {
        str(services.create_chat(creator=user, member_ids=[], title=f"Notes {n}")[0].pk)
        for n in range(more_than_a_page)
    }
    context = browser.new_context(viewport=VIEWPORT)
    context.add_cookies([session_cookie(user, server)])
    asked = []
    context.on("request", lambda request: asked.append(urlparse(request.url)))

    page = open_page(server, user, context=context)
    page.wait_for_function(
        f"document.querySelectorAll('#chat-list .chat-item').length >= {len(ids)}"
    )
    shown = page.eval_on_selector_all(
        "#chat-list .chat-item", "items => items.map(i => i.dataset.chatId)"
    )
    context.close()

    assert sorted(shown) == sorted(ids)
    lists = [url.query for url in asked if url.path == "/api/chats/"]
    assert len(lists) == 2 and lists[0] == "limit=200" and "cursor=" in lists[1]
    assert [url.path for url in asked if re.fullmatch(r"/api/chats/\d+/", url.path)] == []
