"""The socket's token check (`accounts.auth.verify_token`) answers as SimpleJWT does, token by
token: its quick path for tokens of the shape this server issues accepts nothing SimpleJWT
refuses, and hands everything else to SimpleJWT."""

import time
from datetime import UTC, datetime

import jwt
import pytest
from django.conf import settings
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts import auth
from accounts.tests import forgery
from conftest import token_for


def simplejwt_answer(raw: str):
    """SimpleJWT's own verdict: (user id, expiry, claims), or "refused"."""
    try:
        token = AccessToken(raw)
        return (
            token["user_id"],
            datetime.fromtimestamp(int(token["exp"]), tz=UTC),
            dict(token.payload),
        )
    except (TokenError, KeyError, TypeError, ValueError):
        return "refused"


def our_answer(raw: str):
    try:
        user_id, expires_at, claims = auth.verify_token(raw)
    except auth.InvalidToken:
        return "refused"
    return user_id, expires_at, dict(claims)


def signed(claims: dict, *, header: dict | None = None) -> str:
    """A token with these claims, signed with the server's key (what only the server can make)."""
    return jwt.encode(claims, settings.SECRET_KEY, algorithm="HS256", headers=header)


def issued_claims(user) -> dict:
    return forgery.claims_of(token_for(user))


def tokens_to_compare(user) -> dict[str, str]:
    real = token_for(user)
    claims = issued_claims(user)
    now = int(time.time())
    header, payload, signature = real.split(".")
    cases = {
        "issued": real,
        "issued, another user": signed({**claims, "user_id": "999999"}),
        "expired": signed({**claims, "exp": now - 5}),
        "expires this second": signed({**claims, "exp": now}),
        "exp as a string": signed({**claims, "exp": str(now + 600)}),
        "exp as a float": signed({**claims, "exp": now + 600.5}),
        "exp as true": signed({**claims, "exp": True}),
        "no exp": signed({k: v for k, v in claims.items() if k != "exp"}),
        "issued in the future": signed({**claims, "iat": now + 600}),
        "iat as a string": signed({**claims, "iat": "yesterday"}),
        "no iat": signed({k: v for k, v in claims.items() if k != "iat"}),
        "not before the future": signed({**claims, "nbf": now + 600}),
        "not before the past": signed({**claims, "nbf": now - 600}),
        "an audience": signed({**claims, "aud": "elsewhere"}),
        "an issuer": signed({**claims, "iss": "elsewhere"}),
        "a subject that is a number": signed({**claims, "sub": 5}),
        "a refresh token": str(RefreshToken.for_user(user)),
        "wrong type": signed({**claims, "token_type": "refresh"}),
        "no type": signed({k: v for k, v in claims.items() if k != "token_type"}),
        "no jti": signed({k: v for k, v in claims.items() if k != "jti"}),
        "jti a number": signed({**claims, "jti": 7}),
        "no user id": signed({k: v for k, v in claims.items() if k != "user_id"}),
        "a list for claims": signed_list(),
        "header with a key id": signed(claims, header={"kid": "k1"}),
        "alg none": forgery.unsigned(real),
        "another key": forgery.signed_with_another_key(real),
        "HS512 with the server's key": forgery.with_algorithm(real, "HS512"),
        "RS256 header over an HMAC": forgery.with_algorithm(real, "RS256"),
        "user id swapped, signature kept": forgery.with_user_id(real, 999999),
        "signature cut short": f"{header}.{payload}.{signature[:-2]}",
        "signature padded": f"{header}.{payload}.{signature}=",
        "signature empty": f"{header}.{payload}.",
        "four segments": f"{real}.{signature}",
        "two segments": f"{header}.{payload}",
        "not base64 payload": f"{header}.!!!.{signature}",
        "non-ascii signature": f"{header}.{payload}.{signature[:-1]}é",
        "whitespace around": f" {real} ",
        "garbage": "not-a-token",
    }
    return cases


def signed_list() -> str:
    """A signed payload that is JSON but not an object."""
    header = forgery.b64url_json({"alg": "HS256", "typ": "JWT"})
    payload = forgery.b64url(b"[1,2,3]")
    import hashlib
    import hmac

    mac = hmac.new(
        settings.SECRET_KEY.encode(), f"{header}.{payload}".encode(), hashlib.sha256
    ).digest()
    return f"{header}.{payload}.{forgery.b64url(mac)}"


def test_every_token_gets_simplejwts_verdict(user):
    cases = tokens_to_compare(user)
    for name, raw in cases.items():
        assert our_answer(raw) == simplejwt_answer(raw), name
    # The comparison covers both verdicts.
    assert simplejwt_answer(cases["issued"]) != "refused"
    assert simplejwt_answer(cases["expired"]) == "refused"


def test_issued_tokens_take_the_quick_path_and_nothing_else_does(user):
    cases = tokens_to_compare(user)
    quick = {name for name, raw in cases.items() if auth._issued_access_token(raw) is not None}
    assert quick == {"issued", "issued, another user", "no iat"}


def test_the_quick_path_steps_aside_when_settings_leave_its_shape(user, settings):
    real = token_for(user)
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "LEEWAY": 30}
    try:
        assert auth._issued_access_token(real) is None
        assert our_answer(real) == simplejwt_answer(real) != "refused"
    finally:
        settings.SIMPLE_JWT = {k: v for k, v in settings.SIMPLE_JWT.items() if k != "LEEWAY"}
    assert auth._issued_access_token(real) is not None


@pytest.mark.parametrize("raw", ["", "x" * 4097])
def test_missing_or_oversized_tokens_are_refused(raw):
    with pytest.raises(auth.InvalidToken):
        auth.verify_token(raw)
