"""Accounts over REST: registration, JWT tokens and their refresh, the current user, the user directory."""

import pytest
from django.contrib.auth import get_user_model

from accounts.tests import forgery
from conftest import PASSWORD, make_user, token_for


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str)
    assert body["detail"]


def refusal_of(response) -> tuple[int, str, list[str]]:
    """(status, code, fields named in `errors`) of a refused request."""
    body = response.json()
    return response.status_code, body.get("code"), sorted(body.get("errors", {}), reverse=True)


def obtain_tokens(client, username: str, password: str = PASSWORD):
    return client.post(
        "/api/auth/token/", {"username": username, "password": password}, format="json"
    )


def me_with_bearer(client, token: str):
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/api/me/")


# ---------------------------------------------------------------- registration


def test_register_creates_the_user_and_answers_201(api_client, transactional_db):
    response = api_client.post(
        "/api/auth/register/", {"username": "dave", "password": PASSWORD}, format="json"
    )

    assert response.status_code == 201
    created = get_user_model().objects.get(username="dave")
    assert response.json() == {"id": str(created.pk), "username": "dave"}
    assert created.check_password(PASSWORD)
    assert obtain_tokens(api_client, "dave").status_code == 200


@pytest.mark.parametrize("username", ["alice", "ALICE"])
def test_register_with_a_taken_username_is_400(api_client, user, username):
    response = api_client.post(
        "/api/auth/register/", {"username": username, "password": PASSWORD}, format="json"
    )

    assert_error(response, 400, "bad_request")
    assert "username" in response.json()["errors"]
    assert get_user_model().objects.count() == 1


def test_register_with_a_weak_password_is_400(api_client, transactional_db):
    passwords = {
        "too short": "short1",
        "common": "password123",
        "only digits": "12345678901",
        "like the username": "dave-the-user",
    }

    answers = {
        name: refusal_of(
            api_client.post(
                "/api/auth/register/",
                {"username": "dave-the-user", "password": password},
                format="json",
            )
        )
        for name, password in passwords.items()
    }

    assert answers == dict.fromkeys(passwords, (400, "bad_request", ["password"]))
    assert not get_user_model().objects.exists()


def test_register_with_missing_or_invalid_fields_is_400(api_client, transactional_db):
    bodies = {
        "empty": ({}, ["username", "password"]),
        "no password": ({"username": "dave"}, ["password"]),
        "no username": ({"password": PASSWORD}, ["username"]),
        "invalid username": ({"username": "no spaces!", "password": PASSWORD}, ["username"]),
    }

    answers = {
        name: refusal_of(api_client.post("/api/auth/register/", body, format="json"))
        for name, (body, _) in bodies.items()
    }

    assert answers == {name: (400, "bad_request", fields) for name, (_, fields) in bodies.items()}
    assert not get_user_model().objects.exists()


def test_register_when_registration_is_closed_is_403(api_client, transactional_db, settings):
    settings.REGISTRATION_OPEN = False

    response = api_client.post(
        "/api/auth/register/", {"username": "dave", "password": PASSWORD}, format="json"
    )

    assert_error(response, 403, "forbidden")
    assert not get_user_model().objects.exists()


def test_register_ignores_a_stale_authorization_header(api_client, transactional_db):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer expired-or-garbage")

    response = api_client.post(
        "/api/auth/register/", {"username": "dave", "password": PASSWORD}, format="json"
    )

    assert response.status_code == 201


# ---------------------------------------------------------------- tokens


def test_token_pair_is_issued_for_right_credentials(api_client, user):
    response = obtain_tokens(api_client, "alice")

    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"access", "refresh"}
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert api_client.get("/api/me/").json()["username"] == "alice"


@pytest.mark.parametrize(("username", "password"), [("alice", "wrong"), ("nobody", PASSWORD)])
def test_token_for_wrong_credentials_is_401(api_client, user, username, password):
    response = obtain_tokens(api_client, username, password)

    assert_error(response, 401, "no_active_account")


def test_token_for_a_deactivated_user_is_401(api_client, user):
    user.is_active = False
    user.save(update_fields=["is_active"])

    response = obtain_tokens(api_client, "alice")

    assert_error(response, 401, "no_active_account")


def test_token_without_credentials_is_400(api_client, transactional_db):
    response = api_client.post("/api/auth/token/", {}, format="json")

    assert_error(response, 400, "bad_request")


def test_refresh_gives_a_working_access_token_and_a_rotated_refresh(api_client, user):
    refresh = obtain_tokens(api_client, "alice").json()["refresh"]

    response = api_client.post("/api/auth/token/refresh/", {"refresh": refresh}, format="json")

    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"access", "refresh"}
    assert tokens["refresh"] != refresh
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert api_client.get("/api/me/").status_code == 200


def test_refresh_token_used_once_is_refused_after_rotation(api_client, user):
    refresh = obtain_tokens(api_client, "alice").json()["refresh"]
    api_client.post("/api/auth/token/refresh/", {"refresh": refresh}, format="json")

    response = api_client.post("/api/auth/token/refresh/", {"refresh": refresh}, format="json")

    assert_error(response, 401, "token_not_valid")


def test_refresh_with_a_malformed_token_is_401(api_client, transactional_db):
    response = api_client.post("/api/auth/token/refresh/", {"refresh": "garbage"}, format="json")

    assert_error(response, 401, "token_not_valid")


def test_refresh_without_a_token_is_400(api_client, transactional_db):
    response = api_client.post("/api/auth/token/refresh/", {}, format="json")

    assert_error(response, 400, "bad_request")


def test_access_token_is_not_accepted_as_a_refresh_token(api_client, user):
    access = obtain_tokens(api_client, "alice").json()["access"]

    response = api_client.post("/api/auth/token/refresh/", {"refresh": access}, format="json")

    assert_error(response, 401, "token_not_valid")


def test_refresh_token_is_not_accepted_as_an_access_token(api_client, user):
    refresh = obtain_tokens(api_client, "alice").json()["refresh"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {refresh}")

    response = api_client.get("/api/me/")

    assert_error(response, 401, "token_not_valid")


# ---------------------------------------------------------------- forged access tokens


def test_unsigned_access_token_with_alg_none_is_401(api_client, user):
    forged = forgery.unsigned(token_for(user))

    response = me_with_bearer(api_client, forged)

    assert_error(response, 401, "token_not_valid")


def test_access_token_signed_with_another_key_is_401(api_client, user):
    forged = forgery.signed_with_another_key(token_for(user))

    response = me_with_bearer(api_client, forged)

    assert_error(response, 401, "token_not_valid")


@pytest.mark.parametrize("algorithm", ["HS512", "RS256"])
def test_access_token_whose_header_names_another_algorithm_is_401(api_client, user, algorithm):
    forged = forgery.with_algorithm(token_for(user), algorithm)

    response = me_with_bearer(api_client, forged)

    assert_error(response, 401, "token_not_valid")


def test_access_token_with_a_tampered_user_id_is_401(api_client, user, other_user):
    genuine = token_for(user)
    forged = forgery.with_user_id(genuine, other_user.pk)

    response = me_with_bearer(api_client, forged)

    assert_error(response, 401, "token_not_valid")
    assert me_with_bearer(api_client, genuine).json()["id"] == str(user.pk)


# ---------------------------------------------------------------- me and users


def test_me_is_the_authenticated_user(api_client, user):
    response = api_client.as_user(user).get("/api/me/")

    assert response.status_code == 200
    assert response.json() == {"id": str(user.pk), "username": "alice"}


def test_me_without_credentials_is_401(api_client, transactional_db):
    response = api_client.get("/api/me/")

    assert_error(response, 401, "unauthorized")


def test_users_search_lists_active_others_by_username(api_client, user, other_user):
    rob = make_user("rob")
    make_user("zob", is_active=False)

    response = api_client.as_user(user).get("/api/users/?search=ob")

    assert response.status_code == 200
    assert response.json() == [
        {"id": str(other_user.pk), "username": "bob"},
        {"id": str(rob.pk), "username": "rob"},
    ]


def test_users_search_needs_two_non_blank_characters(api_client, user, other_user):
    client = api_client.as_user(user)

    for query in ("", "?search=", "?search=b", "?search=%20%20", "?search=%20b%20"):
        response = client.get(f"/api/users/{query}")
        assert_error(response, 400, "bad_request")
        assert "at least 2 characters" in response.json()["detail"], query


def test_users_search_matches_part_of_the_username_ignoring_case(
    api_client, user, other_user, third_user
):
    rob = make_user("rob")

    response = api_client.as_user(user).get("/api/users/?search=OB")

    assert [entry["id"] for entry in response.json()] == [str(other_user.pk), str(rob.pk)]


def test_users_search_never_finds_the_caller(api_client, user):
    response = api_client.as_user(user).get("/api/users/?search=alice")

    assert response.json() == []


def test_users_search_with_a_nul_character_is_400(api_client, user, other_user):
    # Found by the schema fuzzer (messaging/tests/test_api_fuzz.py): PostgreSQL refused the
    # query and the API answered 503 `unavailable`.
    response = api_client.as_user(user).get("/api/users/?search=b%00")

    assert_error(response, 400, "bad_request")
    assert refusal_of(response)[2] == ["search"]
