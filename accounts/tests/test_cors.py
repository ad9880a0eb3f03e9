"""CORS on the REST API: only the origins in CORS_ALLOWED_ORIGINS get an answer a browser lets
their page read (django-cors-headers reads the setting on each request)."""

import os

import pytest

ALLOWED = "https://app.example.com"
FOREIGN = "https://evil.example"


@pytest.fixture
def app_origin_allowed(settings):
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED]


def preflight(client, origin: str):
    return client.options(
        "/api/me/",
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization",
    )


def test_preflight_from_an_allowed_origin_is_answered_with_that_origin(
    api_client, transactional_db, app_origin_allowed
):
    response = preflight(api_client, ALLOWED)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    assert "GET" in response["Access-Control-Allow-Methods"]
    assert "authorization" in response["Access-Control-Allow-Headers"]


def test_request_from_an_allowed_origin_is_answered_with_that_origin(
    api_client, user, app_origin_allowed
):
    response = api_client.as_user(user).get("/api/me/", HTTP_ORIGIN=ALLOWED)

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED


def test_preflight_and_request_from_another_origin_get_no_cors_headers(
    api_client, user, app_origin_allowed
):
    answers = [
        preflight(api_client, FOREIGN),
        api_client.as_user(user).get("/api/me/", HTTP_ORIGIN=FOREIGN),
    ]

    assert [response.has_header("Access-Control-Allow-Origin") for response in answers] == [
        False,
        False,
    ]
    assert not answers[0].has_header("Access-Control-Allow-Methods")


@pytest.mark.skipif(
    bool(os.environ.get("CORS_ALLOWED_ORIGINS")), reason="CORS_ALLOWED_ORIGINS is set here"
)
def test_no_origin_is_allowed_by_default(api_client, user):
    response = api_client.as_user(user).get("/api/me/", HTTP_ORIGIN=ALLOWED)

    assert response.status_code == 200
    assert not response.has_header("Access-Control-Allow-Origin")
