"""DRF throttles on the REST API: per IP when anonymous, per user when authenticated, answered
429 `rate_limited` with `retryAfterMs` and a `Retry-After` header."""

import pytest
from rest_framework.throttling import SimpleRateThrottle

from conftest import PASSWORD

ANON_RATE = 3
USER_RATE = 5


@pytest.fixture(autouse=True)
def low_throttle_rates(monkeypatch):
    """THROTTLE_ANON=3/min, THROTTLE_USER=5/min. DRF copies DEFAULT_THROTTLE_RATES onto the
    throttle class when it is imported, so overriding REST_FRAMEWORK would not reach it."""
    monkeypatch.setattr(
        SimpleRateThrottle,
        "THROTTLE_RATES",
        {"anon": f"{ANON_RATE}/min", "user": f"{USER_RATE}/min"},
    )


def log_in(client, password: str):
    return client.post(
        "/api/auth/token/", {"username": "alice", "password": password}, format="json"
    )


def assert_rate_limited(response, period_ms: int = 60_000):
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["code"] == "rate_limited"
    assert isinstance(body["detail"], str) and body["detail"]
    assert 0 < body["retryAfterMs"] <= period_ms
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= period_ms // 1000
    assert abs(retry_after * 1000 - body["retryAfterMs"]) <= 1000


def test_password_guessing_past_the_anonymous_rate_is_429_with_retry_after(api_client, user):
    guesses = [log_in(api_client, f"guess-{n}") for n in range(ANON_RATE + 1)]
    right_password = log_in(api_client, PASSWORD)

    assert [response.status_code for response in guesses[:ANON_RATE]] == [401] * ANON_RATE
    assert_rate_limited(guesses[ANON_RATE])
    assert_rate_limited(right_password)


def test_authenticated_requests_past_the_user_rate_are_429_with_retry_after(
    api_client, user, other_user
):
    client = api_client.as_user(user)

    answers = [client.get("/api/me/") for _ in range(USER_RATE + 1)]

    assert [response.status_code for response in answers[:USER_RATE]] == [200] * USER_RATE
    assert_rate_limited(answers[USER_RATE])
    # Counted per user: another user from the same address still gets through.
    assert api_client.as_user(other_user).get("/api/me/").status_code == 200
