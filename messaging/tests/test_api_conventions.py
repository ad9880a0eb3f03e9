"""The REST API as a Django REST framework user expects it: paths with or without their slash and
never a method-changing redirect, the browsable API, form and multipart bodies, SimpleJWT's own
token error codes, cursor pagination, the user search minimum, error answers in the OpenAPI
document, and API docs that load nothing from another host."""

import json
import re
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlparse

import pytest
from django.test import Client, override_settings
from drf_spectacular.generators import SchemaGenerator
from rest_framework_simplejwt.tokens import AccessToken

from conftest import make_user
from messaging import services
from messaging.models import Chat

ERRORS = {"400", "401", "403", "404", "429"}


def relative(url: str) -> str:
    parts = urlparse(url)
    return f"{parts.path}?{parts.query}"


# ---------------------------------------------------------------- paths and redirects


def test_a_post_without_the_trailing_slash_creates_the_chat_and_never_redirects(
    api_client, user, other_user
):
    client = api_client.as_user(user)

    response = client.post("/api/chats", {"title": "No slash", "memberIds": []}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["title"] == "No slash"
    assert Chat.objects.filter(title="No slash").count() == 1
    listed = client.get("/api/chats")
    assert listed.status_code == 200
    assert [c["title"] for c in listed.json()["results"]] == ["No slash"]


def test_every_method_is_served_without_the_slash_as_with_it(api_client, user, group_chat):
    client = api_client.as_user(user)

    renamed = client.patch(f"/api/chats/{group_chat.pk}", {"title": "Renamed"}, format="json")
    sent = client.post(f"/api/chats/{group_chat.pk}/messages", {"text": "hi"}, format="json")
    muted = client.put(f"/api/chats/{group_chat.pk}/notifications", {"muted": True}, format="json")

    assert (renamed.status_code, sent.status_code, muted.status_code) == (200, 201, 200)


def test_no_api_path_without_its_slash_answers_a_redirect_whatever_the_method(
    api_client, user, chat
):
    paths = [*schema_as_served(api_client)["paths"], "/api/schema/", "/api/docs/", "/api/redoc/"]
    client = api_client.as_user(user)

    answers = {
        f"{method} {path}": getattr(client, method)(
            re.sub(r"\{[a-z_]+\}", str(chat.pk), path).rstrip("/"), {}, format="json"
        ).status_code
        for path in paths
        for method in ("get", "post", "put", "patch", "delete")
    }

    assert {name: code for name, code in answers.items() if 300 <= code < 400} == {}
    assert answers["post /api/chats/"] == 400  # served as POST /api/chats/, refusing the body


def test_an_unknown_api_path_is_a_json_404_not_a_redirect(api_client, user):
    client = api_client.as_user(user)

    for path in ("/api/nothing", "/api/nothing/", "/api/chats/1/nothing"):
        response = client.post(path, {}, format="json")
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"


# ---------------------------------------------------------------- renderers and parsers


def test_the_browsable_api_renders_for_a_logged_in_user(user, chat):
    browser = Client()
    browser.force_login(user)

    response = browser.get("/api/chats/", HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Django REST framework" in page
    assert str(chat.pk) in page


def test_the_browsable_api_posts_with_the_session_and_its_csrf_token(user, other_user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    page = browser.get("/api/chats/", HTTP_ACCEPT="text/html").content.decode()
    # What the page's own script (rest_framework/js/csrf.js) sends its POST form's content with.
    drf_csrf = json.loads(re.search(r'id="drf_csrf">(.*?)</script>', page, re.DOTALL).group(1))
    body = {"title": "From the page", "memberIds": [str(other_user.pk)]}

    forged = browser.post("/api/chats/", body, content_type="application/json")
    posted = browser.post(
        "/api/chats/",
        body,
        content_type="application/json",
        headers={drf_csrf["csrfHeaderName"]: drf_csrf["csrfToken"]},
    )

    assert (forged.status_code, forged.json()["code"]) == (403, "forbidden")
    assert posted.status_code == 201, posted.content
    assert Chat.objects.get().title == "From the page"


def test_json_is_still_the_default_answer(api_client, user):
    response = api_client.as_user(user).get("/api/me/", HTTP_ACCEPT="*/*")

    assert response["Content-Type"] == "application/json"


def test_form_and_multipart_posts_create_chats(api_client, user, other_user, third_user):
    client = api_client.as_user(user)

    form = client.post(
        "/api/chats/",
        f"title=Form&memberIds={other_user.pk}&memberIds={third_user.pk}",
        content_type="application/x-www-form-urlencoded",
    )
    multipart = client.post(
        "/api/chats/", {"title": "Multipart", "memberIds": [other_user.pk]}, format="multipart"
    )

    assert (form.status_code, multipart.status_code) == (201, 201), (
        form.content,
        multipart.content,
    )
    assert len(form.json()["members"]) == 3
    assert len(multipart.json()["members"]) == 2


# ---------------------------------------------------------------- SimpleJWT's codes


def test_an_expired_access_token_answers_simplejwts_token_not_valid(api_client, user):
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    response = api_client.get("/api/me/")

    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_wrong_credentials_at_the_token_endpoint_answer_no_active_account(api_client, user):
    response = api_client.post(
        "/api/auth/token/", {"username": user.username, "password": "wrong"}, format="json"
    )

    assert response.status_code == 401
    assert response.json()["code"] == "no_active_account"


def test_a_request_without_credentials_still_answers_unauthorized(api_client):
    response = api_client.get("/api/me/")

    assert (response.status_code, response.json()["code"]) == (401, "unauthorized")


# ---------------------------------------------------------------- pagination


def test_the_chat_list_pages_with_cursor_links_each_chat_once_newest_first(api_client, user):
    chats = []
    for n in range(7):
        friend = make_user(f"friend{n}")
        chat, _ = services.create_chat(creator=user, member_ids=[friend.pk])
        services.send_message(sender=friend, chat_id=chat.pk, text=f"hello {n}")
        chats.append(chat)
    client = api_client.as_user(user)

    seen, pages, path = [], [], "/api/chats/?limit=3"
    while path:
        page = client.get(path).json()
        pages.append(page)
        seen += [c["id"] for c in page["results"]]
        path = page["next"] and relative(page["next"])

    assert seen == [str(chat.pk) for chat in reversed(chats)]
    assert [len(p["results"]) for p in pages] == [3, 3, 1]
    assert pages[0]["previous"] is None
    back = client.get(relative(pages[1]["previous"])).json()
    assert [c["id"] for c in back["results"]] == seen[:3]


def test_the_chat_list_page_size_is_capped_at_200(api_client, user, chat):
    page = api_client.as_user(user).get("/api/chats/?limit=100000").json()

    assert [c["id"] for c in page["results"]] == [str(chat.pk)]
    assert page["next"] is None


def test_history_links_to_the_older_and_newer_pages(api_client, user, other_user, chat):
    for n in range(1, 8):
        services.send_message(sender=other_user, chat_id=chat.pk, text=f"m{n}")
    client = api_client.as_user(user)

    latest = client.get(f"/api/chats/{chat.pk}/messages/?limit=3").json()
    assert [m["seq"] for m in latest["results"]] == ["5", "6", "7"]
    assert latest["next"] is None and latest["hasMore"] is True
    assert parse_qs(urlparse(latest["previous"]).query) == {"before": ["5"], "limit": ["3"]}

    older = client.get(relative(latest["previous"])).json()
    assert [m["seq"] for m in older["results"]] == ["2", "3", "4"]
    oldest = client.get(relative(older["previous"])).json()
    assert [m["seq"] for m in oldest["results"]] == ["1"]
    assert oldest["previous"] is None

    newer = client.get(relative(oldest["next"])).json()
    assert [m["seq"] for m in newer["results"]] == ["2", "3", "4"]
    assert parse_qs(urlparse(oldest["next"]).query) == {"after": ["1"], "limit": ["3"]}


def test_history_links_lead_on_from_a_page_bounded_on_both_sides(
    api_client, user, other_user, chat
):
    for n in range(1, 21):
        services.send_message(sender=other_user, chat_id=chat.pk, text=f"m{n}")
    client = api_client.as_user(user)

    gap = client.get(f"/api/chats/{chat.pk}/messages/?after=10&before=15").json()
    clamped = client.get(f"/api/chats/{chat.pk}/messages/?before=3&limit=1000").json()

    assert ([m["seq"] for m in gap["results"]], gap["hasMore"]) == (["11", "12", "13", "14"], False)
    assert parse_qs(urlparse(gap["next"]).query) == {"after": ["14"], "limit": ["50"]}
    assert parse_qs(urlparse(gap["previous"]).query) == {"before": ["11"], "limit": ["50"]}
    newer = client.get(relative(gap["next"])).json()
    assert [m["seq"] for m in newer["results"]] == [str(n) for n in range(15, 21)]
    assert newer["next"] is None
    assert [m["seq"] for m in clamped["results"]] == ["1", "2"]
    assert (clamped["previous"], parse_qs(urlparse(clamped["next"]).query)["limit"]) == (
        None,
        ["200"],
    )


def test_an_empty_history_page_has_no_links(api_client, user, chat):
    page = api_client.as_user(user).get(f"/api/chats/{chat.pk}/messages/").json()

    assert page == {"results": [], "hasMore": False, "next": None, "previous": None}


# ---------------------------------------------------------------- the OpenAPI document


def schema_as_served(client) -> dict:
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return json.loads(response.content)


def test_the_schema_documents_the_error_answers_of_every_operation(client):
    schema = schema_as_served(client)

    operations = [
        (path, method, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]
    assert len(operations) > 20
    for path, method, operation in operations:
        assert set(operation["responses"]) >= ERRORS, (method, path)
        error = operation["responses"]["404"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/Error"}
    assert schema["components"]["schemas"]["Error"]["required"] == ["detail", "code"]


def test_the_error_answers_are_documented_whatever_the_throttle_settings(settings):
    with_throttles = SchemaGenerator().get_schema(request=None, public=True)
    unthrottled = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}
    with override_settings(REST_FRAMEWORK=unthrottled):
        without = SchemaGenerator().get_schema(request=None, public=True)

    assert json.dumps(with_throttles, sort_keys=True) == json.dumps(without, sort_keys=True)


class Resources(HTMLParser):
    """What an HTML page makes a browser fetch: the URLs of its elements, its inline styles and
    scripts (kept as text, to be searched like the files they load)."""

    def __init__(self):
        super().__init__()
        self.urls, self.inline, self._in_text = [], [], False

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in FETCHING_ATTRIBUTES and value]
        self._in_text = tag in ("script", "style")

    def handle_endtag(self, tag):
        self._in_text = False

    def handle_data(self, data):
        if self._in_text:
            self.inline.append(data)


FETCHING_ATTRIBUTES = {"src", "href", "srcset", "spec-url", "data", "poster", "action"}
CSS_FETCHES = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""")
FONT_URL = re.compile(
    r"https?://[^\s'\"`)]*(?:fonts\.googleapis|fonts\.gstatic|typekit|fontawesome|"
    r"\.woff2?\b|\.ttf\b|\.otf\b|\.eot\b)",
    re.IGNORECASE,
)
CSP_SOURCES_ALLOWED = {"'self'", "'unsafe-inline'", "'none'", "data:", "blob:"}


def another_host(url: str) -> bool:
    parts = urlparse(url)
    return parts.scheme not in ("", "data", "blob") or parts.netloc not in ("", "testserver")


def served(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return body.decode()


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_docs_pages_load_nothing_from_another_host(client, path):
    response = client.get(path)
    page = Resources()
    page.feed(response.content.decode())
    assets = {url: served(client, url) for url in page.urls if url.endswith((".js", ".css"))}
    css = [text for url, text in assets.items() if url.endswith(".css")] + page.inline
    policy = dict(
        (directive.split()[0], directive.split()[1:])
        for directive in response["Content-Security-Policy"].split(";")
        if directive.strip()
    )

    assert response.status_code == 200
    assert [url for url in page.urls if another_host(url)] == []
    assert any("/static/drf_spectacular_sidecar/" in url for url in assets)
    fetched_by_css = [
        next(filter(None, match)) for text in css for match in CSS_FETCHES.findall(text)
    ]
    assert [url for url in fetched_by_css if another_host(url)] == []
    texts = {path: response.content.decode(), **assets}
    assert [(url, font) for url, text in texts.items() for font in FONT_URL.findall(text)] == []
    # What a bundle has hard-coded (Redoc's logo from its CDN) the browser may not fetch.
    assert policy["default-src"] == ["'self'"]
    assert {source for sources in policy.values() for source in sources} <= CSP_SOURCES_ALLOWED


def test_a_user_searching_less_than_two_characters_gets_400(api_client, user, other_user):
    response = api_client.as_user(user).get("/api/users/?search=b")

    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"
