"""SimpleJWT, taught about logins: tokens carry their login (`sid`), and an ended login's are refused."""

from django.contrib.auth import get_user_model
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenBackendError, TokenError
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import RefreshToken

from accounts import logins

LOGIN_ENDED = "This login has ended (logged out); sign in again."


class LoginTokenObtainSerializer(TokenObtainPairSerializer):
    """`POST /api/auth/token/`: a new login, and its first refresh and access tokens."""

    @classmethod
    def get_token(cls, user):
        return logins.refresh_token_for(logins.start_login(user))


class LoginTokenRefreshSerializer(TokenRefreshSerializer):
    """`POST /api/auth/token/refresh/`: refused once the token's login has ended."""

    def validate(self, attrs):
        refresh = RefreshToken(attrs["refresh"])  # signature, expiry, blacklist
        user_id = refresh.payload.get(api_settings.USER_ID_CLAIM)
        user = get_user_model().objects.filter(pk=user_id).first()
        live = logins.live_login_ids([refresh.payload.get(logins.SID_CLAIM)])
        if user is not None and not logins.token_is_live(
            refresh.payload, user.logins_ended_at, live
        ):
            raise InvalidToken(LOGIN_ENDED)
        return super().validate(attrs)


class LoginJWTAuthentication(JWTAuthentication):
    """SimpleJWT's authentication, refusing the access tokens of an ended login (401)."""

    def get_user(self, validated_token):
        user = super().get_user(validated_token)
        live = logins.live_login_ids([validated_token.payload.get(logins.SID_CLAIM)])
        if not logins.token_is_live(validated_token.payload, user.logins_ended_at, live):
            raise InvalidToken(LOGIN_ENDED)
        return user


def verified_refresh_claims(raw: str) -> dict:
    """A refresh token's claims: signature and expiry checked, a rotated (blacklisted) one
    accepted, since any refresh token of a login may end it. Raises TokenError."""
    from rest_framework_simplejwt.state import token_backend

    try:
        claims = token_backend.decode(raw, verify=True)
    except TokenBackendError as exc:
        raise TokenError(str(exc)) from exc
    if claims.get(api_settings.TOKEN_TYPE_CLAIM) != RefreshToken.token_type:
        raise TokenError("not a refresh token")
    return claims


class LoginJWTScheme(SimpleJWTScheme):
    """The OpenAPI document describes LoginJWTAuthentication as SimpleJWT's bearer scheme."""

    target_class = "accounts.tokens.LoginJWTAuthentication"
