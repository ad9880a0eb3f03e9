"""JWT authentication for sockets: the `token` query parameter, else the Django session."""

import base64
import functools
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs

import orjson
from channels.auth import AuthMiddlewareStack
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from rest_framework_simplejwt import settings as simplejwt_settings
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from accounts import logins
from messaging.realtime.batching import BatchRunner
from messaging.storage import placeholders


class InvalidToken(Exception):
    """The token is missing, malformed, expired, revoked, or names no active user."""


@dataclass(frozen=True)
class TokenIdentity:
    user: object
    expires_at: datetime
    claims: dict  # the token's claims: its login (`sid`) and issue time, re-checked later

    @property
    def login_id(self) -> str | None:
        return self.claims.get(logins.SID_CLAIM)


def verify_token(raw: str) -> tuple[object, datetime, dict]:
    """Check an access token (signature, pinned algorithm, expiry, type): (user id, expiry, claims).

    A token of the shape this server issues is checked here, in a few microseconds (a burst of
    handshakes spent a tenth of its time in SimpleJWT and PyJWT, docs/benchmarks.md); anything
    else, a bad signature included, gets SimpleJWT's full verification and its answer."""
    if not raw or len(raw) > 4096:
        raise InvalidToken("missing or oversized token")
    checked = _issued_access_token(raw)
    if checked is not None:
        return checked
    try:
        token = AccessToken(raw)
        user_id = token[simplejwt_settings.api_settings.USER_ID_CLAIM]
        expires_at = datetime.fromtimestamp(int(token["exp"]), tz=UTC)
    except (TokenError, KeyError, TypeError, ValueError) as exc:
        raise InvalidToken(str(exc)) from exc
    return user_id, expires_at, token.payload


# The header of every token SimpleJWT signs with HS256: a token with any other header (another
# algorithm, "none", a key id) is not one of ours and gets the full verification.
_ISSUED_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
# Claims whose checks PyJWT makes and the quick path does not: a token carrying one is verified
# in full.
_CLAIMS_CHECKED_IN_FULL = ("nbf", "aud", "iss", "sub")


def _issued_access_token(raw: str) -> tuple[object, datetime, dict] | None:
    """(user id, expiry, claims) when `raw` is a live access token as this server signs them
    (HS256, its signing key, canonical encoding, an integer `exp` ahead, `iat` not ahead, the
    access type, a string `jti`, a user id); None when anything differs, for the full check.

    It accepts only tokens SimpleJWT accepts (`test_token_verification.py` compares the two on
    valid, expired, tampered and malformed tokens); it may pass on a valid one it does not
    recognise, never the other way round."""
    api_settings = simplejwt_settings.api_settings  # replaced when SIMPLE_JWT changes
    if (
        api_settings.ALGORITHM != "HS256"
        or api_settings.AUDIENCE is not None
        or api_settings.ISSUER is not None
        or api_settings.JWK_URL
        or api_settings.LEEWAY
    ):
        return None
    header, _, rest = raw.partition(".")
    payload_b64, _, signature = rest.partition(".")
    if header != _ISSUED_HEADER or not payload_b64 or not signature or "." in signature:
        return None
    try:
        mac = _keyed_hmac(api_settings.SIGNING_KEY).copy()
        mac.update(f"{header}.{payload_b64}".encode())
        mac = mac.digest()
        if not hmac.compare_digest(
            base64.urlsafe_b64encode(mac).rstrip(b"="), signature.encode("ascii")
        ):
            return None
        claims = orjson.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    except (ValueError, UnicodeError, orjson.JSONDecodeError):
        return None
    if not isinstance(claims, dict) or any(name in claims for name in _CLAIMS_CHECKED_IN_FULL):
        return None
    now = time.time()
    exp, iat = claims.get("exp"), claims.get("iat", 0)
    if (
        type(exp) is not int
        or exp <= now
        or type(iat) is not int
        or iat > now
        or claims.get(api_settings.TOKEN_TYPE_CLAIM) != AccessToken.token_type
        or type(claims.get(api_settings.JTI_CLAIM)) is not str
        or api_settings.USER_ID_CLAIM not in claims
    ):
        return None
    return claims[api_settings.USER_ID_CLAIM], datetime.fromtimestamp(exp, tz=UTC), claims


@functools.lru_cache(maxsize=4)
def _keyed_hmac(signing_key: str):
    """An HMAC-SHA256 with the signing key set up (its inner and outer pads hashed), copied for
    each token instead of set up again: a tenth of the quick check's time."""
    return hmac.new(signing_key.encode(), digestmod=hashlib.sha256)


# What a socket needs of its user; other fields load on first use (Django's deferred fields).
_SOCKET_USER_FIELDS = ("id", "username", "is_active", "is_staff", "is_superuser", "logins_ended_at")


def _token_users(tokens: list[tuple[object, dict]]) -> list:
    """For each (user id, claims): the token's active user if its login is live, else None.

    Two plain queries per batch of handshakes, whatever its size."""
    users = _active_users([user_id for user_id, _ in tokens])
    live = logins.live_login_ids(claims.get(logins.SID_CLAIM) for _, claims in tokens)
    return [
        user
        if user is not None and logins.token_is_live(claims, user.logins_ended_at, live)
        else None
        for user, (_, claims) in zip(users, tokens, strict=True)
    ]


def _active_users(user_ids: list) -> list:
    """The active users with these ids (None where there is none), in one plain query: a burst of
    handshakes runs it per batch, and the ORM's per-query cost was most of the batch's time."""
    user_model = get_user_model()
    pks = {pk for pk in map(_as_pk, user_ids) if isinstance(pk, int) and 0 < pk < 2**63}
    found = {}
    if pks:
        fields = [user_model._meta.get_field(name) for name in _SOCKET_USER_FIELDS]
        quote = connection.ops.quote_name
        columns = ", ".join(quote(field.column) for field in fields)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {columns} FROM {quote(user_model._meta.db_table)}"
                f" WHERE {quote(fields[0].column)} IN ({placeholders(pks)}) AND {quote(fields[2].column)} = %s",
                [*pks, True],
            )
            for pk, username, is_active, is_staff, is_superuser, ended in cursor.fetchall():
                found[pk] = user_model.from_db(
                    connection.alias,
                    _SOCKET_USER_FIELDS,
                    (
                        pk,
                        username,
                        bool(is_active),
                        bool(is_staff),
                        bool(is_superuser),
                        _as_datetime(ended),
                    ),
                )
    return [found.get(_as_pk(user_id)) for user_id in user_ids]


def _as_datetime(value):
    """A timestamp column read by a raw query (SQLite hands back text)."""
    if value is None or isinstance(value, datetime):
        return value
    return connection.ops.convert_datetimefield_value(value, None, connection)


def _as_pk(user_id):
    try:
        return int(user_id)
    except (TypeError, ValueError):
        return user_id


# Connection bursts look their users up many at a time (one query per batch).
_user_loader = BatchRunner(_token_users, name="token-users", max_batch=500)


async def authenticate_token_async(raw: str) -> TokenIdentity:
    """Verify an access token and load its active user: the signature is checked in the event
    loop (it is quick), the user is looked up in a batch with the other handshakes."""
    user_id, expires_at, claims = verify_token(raw)
    try:
        user = await _user_loader.submit((_as_pk(user_id), claims))
    except ValueError as exc:  # a user id claim of the wrong type
        raise InvalidToken(str(exc)) from exc
    if user is None:
        raise InvalidToken("no active user for this token, or its login has ended")
    return TokenIdentity(user=user, expires_at=expires_at, claims=claims)


def query_param(scope, name: str) -> str | None:
    values = _parsed_query(scope.get("query_string", b"")).get(name)
    return values[0] if values else None


@functools.lru_cache(maxsize=256)
def _parsed_query(query_string: bytes) -> dict[str, list[str]]:
    """A socket's query string parsed once for its handshake's two lookups (`token`, then the
    consumer's `userId`); callers only read the result."""
    return parse_qs(query_string.decode("latin-1"))


class TokenAuthMiddleware:
    """Puts the token's user in `scope["user"]`; a bad token leaves `scope["auth_error"]`.

    A socket with `?token=` skips the session and cookie middleware (and their
    database round trip). Without a token the session's user stays, as for
    the built-in web page. The consumer, not this middleware, refuses: the
    protocol wants an `error` frame before 4001.
    """

    def __init__(self, inner):
        self.inner = inner
        self.session_stack = AuthMiddlewareStack(_SessionUser(inner))

    async def __call__(self, scope, receive, send):
        raw = query_param(scope, "token")
        if raw is None:
            return await self.session_stack(scope, receive, send)
        scope = dict(scope, token_expires_at=None, auth_error=None)
        try:
            identity = await authenticate_token_async(raw)
        except InvalidToken:
            scope["user"] = AnonymousUser()
            scope["auth_error"] = "invalid token"
        except Exception:  # the database is down: the consumer answers `unavailable`
            scope["user"] = AnonymousUser()
            scope["auth_error"] = "unavailable"
        else:
            scope["user"] = identity.user
            scope["token_expires_at"] = identity.expires_at
            scope["token_claims"] = identity.claims
        return await self.inner(scope, receive, send)


class _SessionUser:
    """After Channels' session middleware: an inactive session user counts as anonymous."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        scope = dict(scope, token_expires_at=None, auth_error=None)
        if not getattr(scope.get("user"), "is_active", False):
            scope["user"] = AnonymousUser()
        return await self.inner(scope, receive, send)


def TokenAuthMiddlewareStack(inner):  # noqa: N802 - named like Channels' AuthMiddlewareStack
    return TokenAuthMiddleware(inner)
