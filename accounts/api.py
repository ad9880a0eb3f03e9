"""REST views of accounts: registration, the current user, the user directory, the page's token."""

import contextlib
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import authentication, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from accounts import logins
from accounts.tokens import verified_refresh_claims
from messaging import protocol
from messaging.errors import Forbidden

USER_SEARCH_LIMIT = 50


class RegisterInput(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, trim_whitespace=False)

    def validate_username(self, value):
        field = get_user_model()._meta.get_field("username")
        for validator in field.validators:
            try:
                validator(value)
            except DjangoValidationError as exc:
                raise serializers.ValidationError(list(exc.messages)) from None
        if get_user_model().objects.filter(username__iexact=value).exists():
            raise serializers.ValidationError("This username is taken.")
        return value

    def validate(self, attrs):
        candidate = get_user_model()(username=attrs["username"])
        try:
            password_validation.validate_password(attrs["password"], candidate)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": list(exc.messages)}) from None
        return attrs


USER_SEARCH_MIN = 2


class UserSearchQuery(serializers.Serializer):
    # A CharField refuses NUL (400), which PostgreSQL cannot take even in a LIKE pattern; it
    # trims, so blanks do not count toward the minimum: the directory is searched, not listed.
    search = serializers.CharField(
        min_length=USER_SEARCH_MIN,
        error_messages={
            "required": f"Give a search term of at least {USER_SEARCH_MIN} characters.",
            "blank": f"Give a search term of at least {USER_SEARCH_MIN} characters.",
            "min_length": f"Give a search term of at least {USER_SEARCH_MIN} characters.",
        },
    )


class UserOutput(serializers.Serializer):
    id = serializers.CharField()
    username = serializers.CharField()


def user_data(user) -> dict:
    return {"id": str(user.pk), "username": user.username}


class RegisterView(APIView):
    """Open registration (REGISTRATION_OPEN); answers the new user."""

    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(request=RegisterInput, responses={201: UserOutput})
    def post(self, request):
        if not settings.REGISTRATION_OPEN:
            raise Forbidden("Registration is closed.")
        serializer = RegisterInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = get_user_model().objects.create_user(
            username=serializer.validated_data["username"],
            password=serializer.validated_data["password"],
        )
        return Response(user_data(user), status=status.HTTP_201_CREATED)


class MeView(APIView):
    """The authenticated user."""

    @extend_schema(responses=UserOutput)
    def get(self, request):
        return Response(user_data(request.user))


class UserListView(APIView):
    """Active users to start a chat with whose username contains the search term."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "search",
                {"type": "string", "minLength": USER_SEARCH_MIN},
                required=True,
                description=f"Part of a username, at least {USER_SEARCH_MIN} non-blank characters.",
            )
        ],
        responses=UserOutput(many=True),
    )
    def get(self, request):
        query = UserSearchQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        search = query.validated_data["search"]
        users = (
            get_user_model()
            .objects.filter(is_active=True, username__icontains=search[:150])
            .exclude(pk=request.user.pk)
        )
        users = users.order_by("username")[:USER_SEARCH_LIMIT]
        return Response([user_data(user) for user in users])


class SessionTokenOutput(serializers.Serializer):
    access = serializers.CharField()
    expiresAt = serializers.DateTimeField()  # noqa: N815


class SessionTokenView(APIView):
    """An access token for the logged-in user of the built-in page, for its socket.

    Only the session (with its CSRF check) is accepted here: a Bearer token must
    not be able to mint itself successors, that is the refresh token's job.
    """

    authentication_classes = [authentication.SessionAuthentication]

    def get_authenticate_header(self, request):
        # A WWW-Authenticate header makes a missing session a 401, as everywhere in the API.
        return 'Session realm="api"'

    @extend_schema(request=None, responses=SessionTokenOutput)
    def post(self, request):
        if not request.session.session_key:
            request.session.save()
        login = logins.session_login(request.user, request.session.session_key)
        token = logins.refresh_token_for(login).access_token
        expires_at = datetime.fromtimestamp(int(token["exp"]), tz=UTC)
        return Response({"access": str(token), "expiresAt": protocol.format_time(expires_at)})


class LogoutInput(serializers.Serializer):
    refresh = serializers.CharField()


class LogoutView(APIView):
    """End the login a refresh token belongs to (any of its refresh tokens, even a rotated one):
    every token of it is refused and its sockets close, on every process."""

    permission_classes = [AllowAny]
    authentication_classes = []

    def get_authenticate_header(self, request):
        # An invalid token is a 401 (with this header), as everywhere in the API, not a 403.
        return 'Bearer realm="api"'

    @extend_schema(request=LogoutInput, responses={204: None})
    def post(self, request):
        serializer = LogoutInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        raw = serializer.validated_data["refresh"]
        try:
            claims = verified_refresh_claims(raw)
        except TokenError as exc:
            raise InvalidToken(str(exc)) from None
        login_id = claims.get(logins.SID_CLAIM)
        if login_id is not None:
            logins.end_login(login_id)
        with contextlib.suppress(TokenError):  # already blacklisted (rotated): ended anyway
            RefreshToken(raw).blacklist()
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutAllView(APIView):
    """Log out everywhere: every login of the caller, every token, every Django session."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request):
        logins.end_all_logins(request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
