"""The API docs pages (Swagger UI, Redoc) in Chromium: they render the OpenAPI document and
nothing they do reaches another host."""

from urllib.parse import urlparse

import pytest

from messaging.tests.test_browser import browser, server, start_server  # noqa: F401 (fixtures)

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
