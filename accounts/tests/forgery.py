"""Forged access tokens, built from a real one: what an attacker can make without `SECRET_KEY`.

Each keeps the real token's claims (type, expiry, jti, user id) unless it says otherwise, so
the only thing wrong with it is the forgery itself. Shared by the socket and REST tests.
"""

import base64
import hashlib
import hmac
import json

import jwt
from django.conf import settings


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_json(value: dict) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims_of(token: str) -> dict:
    """The payload of a token, read without checking its signature."""
    return jwt.decode(token, options={"verify_signature": False})


def unsigned(token: str) -> str:
    """`alg: none`: the real token's claims under an unsigned header, with an empty signature."""
    header = b64url_json({"alg": "none", "typ": "JWT"})
    payload = token.split(".")[1]
    return f"{header}.{payload}."


def signed_with_another_key(token: str) -> str:
    """The real token's claims, signed HS256 with a key that is not the server's."""
    return jwt.encode(claims_of(token), "another-secret-of-another-deployment", algorithm="HS256")


def with_algorithm(token: str, algorithm: str) -> str:
    """The real token's claims under a header naming `algorithm`, carrying a signature the
    server's own key would verify if it trusted the header: HS512 signed with `SECRET_KEY`
    (a genuine HS512 token), or an RS256 header over an HMAC-SHA256 signature made with
    `SECRET_KEY` (the algorithm-confusion attack)."""
    if algorithm.startswith("HS"):
        return jwt.encode(claims_of(token), settings.SECRET_KEY, algorithm=algorithm)
    signing_input = f"{b64url_json({'alg': algorithm, 'typ': 'JWT'})}.{token.split('.')[1]}"
    signature = hmac.new(
        settings.SECRET_KEY.encode(), signing_input.encode(), hashlib.sha256
    ).digest()
    return f"{signing_input}.{b64url(signature)}"


def with_user_id(token: str, user_id) -> str:
    """The real token with its `user_id` claim changed and its original header and signature."""
    header, _, signature = token.split(".")
    claims = {**claims_of(token), "user_id": str(user_id)}
    return f"{header}.{b64url_json(claims)}.{signature}"
