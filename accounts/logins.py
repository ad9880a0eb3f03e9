"""Logins: one sign-in and every token issued from it, and the ways a login ends.

Every refresh token carries its login's id in the `sid` claim; the access
tokens made from it and the refresh tokens rotated from it copy the claim
(SimpleJWT copies custom claims), so ending the login refuses them all, on
REST, on the refresh endpoint and on sockets. "Log out everywhere" ends every
login of the user and stamps `User.logins_ended_at`, which refuses any token
issued before it (also one without `sid`) and ends the user's Django sessions.
"""

import secrets
from datetime import UTC, datetime

from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Login
from messaging import events
from messaging.models import AccessChange

SID_CLAIM = "sid"


def start_login(user, *, session_key: str | None = None) -> Login:
    return Login.objects.create(id=secrets.token_hex(16), user=user, session_key=session_key)


def session_login(user, session_key: str) -> Login:
    """The login of the built-in page's Django session (one per session)."""
    login = Login.objects.filter(session_key=session_key, user=user, ended_at=None).first()
    return login or start_login(user, session_key=session_key)


def refresh_token_for(login: Login) -> RefreshToken:
    token = RefreshToken.for_user(login.user)
    token[SID_CLAIM] = login.id
    return token


def token_is_live(claims, logins_ended_at, live_logins: set[str]) -> bool:
    """A token's login has not ended: its `sid` is among `live_logins` (when it has one) and
    it was issued after the user last logged out everywhere (`logins_ended_at`)."""
    sid = claims.get(SID_CLAIM)
    if sid is not None and sid not in live_logins:
        return False
    ended = logins_ended_at
    if ended is not None:
        issued = claims.get("iat")
        if issued is None or datetime.fromtimestamp(int(issued), tz=UTC) < ended.replace(
            microsecond=0
        ):
            return False
    return True


def live_login_ids(login_ids) -> set[str]:
    ids = {i for i in login_ids if isinstance(i, str)}
    if not ids:
        return set()
    return set(Login.objects.filter(pk__in=ids, ended_at=None).values_list("pk", flat=True))


def end_login(login_id: str) -> bool:
    """End one login (its tokens and its sockets everywhere); False if it had ended already."""
    with transaction.atomic():
        login = Login.objects.select_for_update().filter(pk=login_id, ended_at=None).first()
        if login is None:
            return False
        login.ended_at = timezone.now()
        login.save(update_fields=["ended_at"])
        _announce_logout(login.user_id)
    return True


def end_session_logins(user, session_key: str | None) -> None:
    """The built-in page logs out: end the logins of its session."""
    if not session_key:
        return
    for login_id in Login.objects.filter(
        user=user, session_key=session_key, ended_at=None
    ).values_list("pk", flat=True):
        end_login(login_id)


def end_all_logins(user) -> None:
    """Log out everywhere: every login, every token issued so far, every Django session."""
    now = timezone.now()
    with transaction.atomic():
        Login.objects.filter(user=user, ended_at=None).update(ended_at=now)
        user.logins_ended_at = now
        user.save(update_fields=["logins_ended_at"])
        _announce_logout(user.pk)


def _announce_logout(user_id) -> None:
    """Recorded in the transaction (sockets re-check within a second); told live after commit."""
    AccessChange.objects.create(
        user_id=user_id, kind=AccessChange.Kind.LOGGED_OUT, created_at=timezone.now()
    )
    events.on_commit(events.notify_logged_out, user_id)
