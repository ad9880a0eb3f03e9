"""JWT authentication for sockets: the `token` query parameter, else the Django session."""

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken


class InvalidToken(Exception):
    """The token is missing, malformed, expired, revoked, or names no active user."""


@dataclass(frozen=True)
class TokenIdentity:
    user: object
    expires_at: datetime


def authenticate_token(raw: str) -> TokenIdentity:
    """Verify an access token (signature, pinned algorithm, expiry, type) and load its user."""
    if not raw or len(raw) > 4096:
        raise InvalidToken("missing or oversized token")
    try:
        token = AccessToken(raw)
        user_id = token[api_settings.USER_ID_CLAIM]
        expires_at = datetime.fromtimestamp(int(token["exp"]), tz=UTC)
    except (TokenError, KeyError, TypeError, ValueError) as exc:
        raise InvalidToken(str(exc)) from exc
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise InvalidToken("no active user for this token")
    return TokenIdentity(user=user, expires_at=expires_at)


def query_param(scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


class TokenAuthMiddleware:
    """Puts the token's user in `scope["user"]`; a bad token leaves `scope["auth_error"]`.

    Without a token the user found by the session middleware stays. The consumer,
    not this middleware, refuses: the protocol wants an `error` frame before 4001.
    """

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        scope = dict(scope, token_expires_at=None, auth_error=None)
        raw = query_param(scope, "token")
        if raw is not None:
            try:
                identity = await database_sync_to_async(authenticate_token)(raw)
            except InvalidToken:
                scope["user"] = AnonymousUser()
                scope["auth_error"] = "invalid token"
            else:
                scope["user"] = identity.user
                scope["token_expires_at"] = identity.expires_at
        elif not getattr(scope.get("user"), "is_active", False):
            scope["user"] = AnonymousUser()
        return await self.inner(scope, receive, send)


def TokenAuthMiddlewareStack(inner):  # noqa: N802 - named like Channels' AuthMiddlewareStack
    return AuthMiddlewareStack(TokenAuthMiddleware(inner))
