"""The web pages' accounts: log in, register, log out, the page's token, and the session socket."""

import json

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.test import Client

from accounts.auth import verify_token
from accounts.views import REGISTRATION_CLOSED
from conftest import PASSWORD


@pytest.fixture
def browser_client():
    """A Django test client that checks CSRF like a real browser request."""
    return Client(enforce_csrf_checks=True)


def csrf_of(client, path: str) -> str:
    client.get(path)
    return client.cookies[settings.CSRF_COOKIE_NAME].value


def logged_in_user_id(client):
    return client.session.get(SESSION_KEY)


# ---------------------------------------------------------------- pages


def test_messages_page_sends_an_anonymous_visitor_to_the_login_page(client, transactional_db):
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_login_page_logs_in_and_goes_to_the_messages_page(browser_client, user):
    token = csrf_of(browser_client, "/login/")

    response = browser_client.post(
        "/login/",
        {"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token, "next": "/"},
    )

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert logged_in_user_id(browser_client) == str(user.pk)
    page = browser_client.get("/")
    assert page.status_code == 200
    assert b"biogram-page.js" in page.content


def test_login_with_a_wrong_password_shows_the_form_again(client, user):
    response = client.post("/login/", {"username": "alice", "password": "wrong"})

    assert response.status_code == 200
    assert b"Please enter a correct username and password" in response.content
    assert logged_in_user_id(client) is None


def test_login_form_without_its_csrf_token_is_refused(browser_client, user):
    response = browser_client.post("/login/", {"username": "alice", "password": PASSWORD})

    assert response.status_code == 403
    assert logged_in_user_id(browser_client) is None


def test_messages_page_hands_the_script_the_user_as_json(client, user):
    client.force_login(user)

    response = client.get("/")

    boot = response.content.split(b'id="biogram-boot" type="application/json">')[1]
    boot = json.loads(boot.split(b"</script>")[0])
    assert boot == {
        "userId": str(user.pk),
        "username": "alice",
        "messageMaxLength": settings.MESSAGE_MAX_LENGTH,
    }


def test_register_page_creates_the_account_and_logs_it_in(browser_client, transactional_db):
    token = csrf_of(browser_client, "/register/")

    response = browser_client.post(
        "/register/",
        {
            "username": "dave",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "csrfmiddlewaretoken": token,
        },
    )

    assert response.status_code == 302
    assert response["Location"] == "/"
    dave = get_user_model().objects.get(username="dave")
    assert dave.check_password(PASSWORD)
    assert logged_in_user_id(browser_client) == str(dave.pk)


@pytest.mark.parametrize("username", ["alice", "ALICE"])
def test_register_page_refuses_a_taken_username_in_any_case(client, user, username):
    response = client.post(
        "/register/", {"username": username, "password1": PASSWORD, "password2": PASSWORD}
    )

    assert response.status_code == 200
    assert b"A user with that username already exists." in response.content
    assert get_user_model().objects.count() == 1


def test_register_page_refuses_a_weak_password(client, transactional_db):
    response = client.post(
        "/register/", {"username": "dave", "password1": "12345678", "password2": "12345678"}
    )

    assert response.status_code == 200
    assert not get_user_model().objects.filter(username="dave").exists()


def test_register_page_is_403_when_registration_is_closed(client, settings, transactional_db):
    settings.REGISTRATION_OPEN = False

    page = client.get("/register/")
    posted = client.post(
        "/register/", {"username": "dave", "password1": PASSWORD, "password2": PASSWORD}
    )

    assert page.status_code == posted.status_code == 403
    assert REGISTRATION_CLOSED.encode() in page.content
    assert not get_user_model().objects.filter(username="dave").exists()
    assert b"Create an account" not in client.get("/login/").content


def test_logout_takes_a_post_with_csrf_and_ends_the_session(browser_client, user):
    browser_client.force_login(user)
    token = csrf_of(browser_client, "/")

    refused_get = browser_client.get("/logout/")
    refused_without_csrf = browser_client.post("/logout/")
    still_in = logged_in_user_id(browser_client)
    response = browser_client.post("/logout/", {"csrfmiddlewaretoken": token})

    assert refused_get.status_code == 405
    assert refused_without_csrf.status_code == 403
    assert still_in == str(user.pk)
    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert logged_in_user_id(browser_client) is None


# ---------------------------------------------------------------- the page's token


def test_session_token_is_an_access_token_of_the_logged_in_user(browser_client, user):
    browser_client.force_login(user)
    token = csrf_of(browser_client, "/")

    response = browser_client.post(
        "/api/session/token/", content_type="application/json", HTTP_X_CSRFTOKEN=token
    )

    assert response.status_code == 200
    body = response.json()
    user_id, expires_at, _ = verify_token(body["access"])
    assert str(user_id) == str(user.pk)
    assert body["expiresAt"] == expires_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_session_token_without_a_session_is_401(browser_client, transactional_db):
    response = browser_client.post("/api/session/token/", content_type="application/json")

    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_session_token_without_the_csrf_token_is_refused(browser_client, user):
    browser_client.force_login(user)

    response = browser_client.post("/api/session/token/", content_type="application/json")

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


def test_session_token_cannot_be_minted_with_a_bearer_token(api_client, user):
    response = api_client.as_user(user).post("/api/session/token/")

    assert response.status_code == 401


# ---------------------------------------------------------------- the session-authenticated socket


@pytest.fixture
def session_cookie(user):
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


async def open_session_socket(cookie: str, origin: bytes):
    from biogram.asgi import application

    communicator = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"cookie", cookie.encode()), (b"origin", origin)]
    )
    accepted, code = await communicator.connect()
    return communicator, accepted, code


async def test_session_socket_from_the_pages_own_origin_connects_without_token_expiry(
    user, session_cookie
):
    communicator, accepted, _ = await open_session_socket(session_cookie, b"http://localhost")

    frame = await communicator.receive_json_from(timeout=3)
    await communicator.disconnect()

    assert accepted
    assert frame["type"] == "connect"
    assert frame["data"]["userId"] == str(user.pk)
    assert frame["data"]["tokenExpiresAt"] is None


@pytest.mark.parametrize("origin", [b"http://evil.example", b"null"])
async def test_session_socket_from_a_foreign_origin_is_refused_at_the_handshake(
    user, session_cookie, origin
):
    communicator, accepted, _ = await open_session_socket(session_cookie, origin)

    assert not accepted
    await communicator.disconnect()


async def test_socket_without_session_or_token_is_closed_with_4001(transactional_db):
    communicator, accepted, _ = await open_session_socket("sessionid=nothing", b"http://localhost")

    frame = await communicator.receive_json_from(timeout=3)
    closed = await communicator.receive_output(timeout=3)

    assert accepted
    assert frame["data"]["code"] == "unauthorized"
    assert closed == {"type": "websocket.close", "code": 4001}
