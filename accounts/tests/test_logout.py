"""Logout ends a login everywhere: its tokens on REST and the refresh endpoint, and its sockets."""

import pytest
from django.conf import settings
from django.test import Client as PageClient
from rest_framework.test import APIClient

from accounts.tests.test_accounts_api import obtain_tokens
from conftest import PASSWORD, db_call

pytestmark = pytest.mark.django_db(transaction=True)

# The access watch re-checks sockets every second; allow for a busy machine.
CLOSED_WITHIN = 3.0


def sign_in(username: str) -> dict:
    """A new login over REST: {access, refresh}."""
    response = obtain_tokens(APIClient(), username)
    assert response.status_code == 200, response.content
    return response.json()


def me(access: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client.get("/api/me/").status_code


def refresh(token: str):
    return APIClient().post("/api/auth/token/refresh/", {"refresh": token}, format="json")


def logout(token: str):
    return APIClient().post("/api/auth/logout/", {"refresh": token}, format="json")


def test_logout_refuses_the_logins_access_tokens_and_answers_204(user):
    login = sign_in("alice")
    assert me(login["access"]) == 200

    response = logout(login["refresh"])

    assert response.status_code == 204
    assert me(login["access"]) == 401


def test_logout_refuses_every_refresh_token_of_the_login(user):
    login = sign_in("alice")
    rotated = refresh(login["refresh"]).json()

    logout(login["refresh"])  # the first refresh token, already rotated

    assert refresh(rotated["refresh"]).status_code == 401
    assert me(rotated["access"]) == 401


def test_logout_with_a_rotated_refresh_token_still_ends_the_login(user):
    login = sign_in("alice")
    rotated = refresh(login["refresh"]).json()

    response = logout(login["refresh"])

    assert response.status_code == 204
    assert me(rotated["access"]) == 401


def test_logout_leaves_the_users_other_logins_alone(user):
    phone, laptop = sign_in("alice"), sign_in("alice")

    logout(phone["refresh"])

    assert me(phone["access"]) == 401
    assert me(laptop["access"]) == 200
    assert refresh(laptop["refresh"]).status_code == 200


@pytest.mark.parametrize("token", ["not-a-token", "a.b.c"])
def test_logout_with_an_invalid_token_is_401(user, token):
    response = logout(token)

    assert response.status_code == 401


def test_logout_with_an_access_token_instead_of_a_refresh_token_is_401(user):
    login = sign_in("alice")

    response = logout(login["access"])

    assert response.status_code == 401
    assert me(login["access"]) == 200


def test_logout_all_ends_every_login_and_the_django_sessions(user):
    phone, laptop = sign_in("alice"), sign_in("alice")
    page = PageClient()
    page.login(username="alice", password=PASSWORD)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {phone['access']}")

    response = client.post("/api/auth/logout-all/")

    assert response.status_code == 204
    assert me(phone["access"]) == 401
    assert me(laptop["access"]) == 401
    assert refresh(laptop["refresh"]).status_code == 401
    assert page.get("/").status_code == 302  # back to the login page
    assert me(sign_in("alice")["access"]) == 200  # signing in again works


def test_logout_all_needs_credentials(transactional_db):
    assert APIClient().post("/api/auth/logout-all/").status_code == 401


async def test_logout_closes_that_logins_sockets_and_no_other(user, connect):
    phone, laptop = await db_call(sign_in)("alice"), await db_call(sign_in)("alice")
    on_phone = await connect(user, token=phone["access"])
    on_laptop = await connect(user, token=laptop["access"])
    assert (await on_phone.receive())["type"] == "connect"
    assert (await on_laptop.receive())["type"] == "connect"

    await db_call(logout)(phone["refresh"])

    goodbye = await on_phone.receive_type("disconnect", timeout=CLOSED_WITHIN)
    assert goodbye["data"] == {"userId": str(user.pk), "reason": "logged_out"}
    assert await on_phone.closed_with() == 4001
    await on_laptop.send("ping")
    assert (await on_laptop.receive_type("pong"))["type"] == "pong"


async def test_a_socket_with_a_token_of_an_ended_login_is_refused(user, connect):
    login = await db_call(sign_in)("alice")
    await db_call(logout)(login["refresh"])

    socket = await connect(user, token=login["access"])

    frame = await socket.receive()
    assert (frame["type"], frame["data"]["code"]) == ("error", "unauthorized")
    assert await socket.closed_with() == 4001


async def test_auth_with_a_token_of_an_ended_login_is_refused_and_the_old_one_stays(user, connect):
    current, ended = await db_call(sign_in)("alice"), await db_call(sign_in)("alice")
    socket = await connect(user, token=current["access"])
    await socket.receive()
    await db_call(logout)(ended["refresh"])

    await socket.send("auth", token=ended["access"])

    frame = await socket.receive_type("error")
    assert frame["data"]["code"] == "unauthorized"
    await socket.send("ping")
    assert (await socket.receive_type("pong"))["type"] == "pong"


async def test_the_page_logout_closes_the_sockets_of_every_tab_of_that_session(user, connect):
    page = PageClient(enforce_csrf_checks=True)
    await db_call(page.force_login)(user)

    def session_token():
        page.get("/")
        csrf = page.cookies[settings.CSRF_COOKIE_NAME].value
        response = page.post(
            "/api/session/token/", content_type="application/json", HTTP_X_CSRFTOKEN=csrf
        )
        return response.json()["access"], csrf

    (first, csrf), (second, _) = await db_call(session_token)(), await db_call(session_token)()
    tabs = [await connect(user, token=first), await connect(user, token=second)]
    for tab in tabs:
        assert (await tab.receive())["type"] == "connect"

    await db_call(page.post)("/logout/", HTTP_X_CSRFTOKEN=csrf)

    for tab in tabs:
        goodbye = await tab.receive_type("disconnect", timeout=CLOSED_WITHIN)
        assert goodbye["data"]["reason"] == "logged_out"
        assert await tab.closed_with() == 4001
