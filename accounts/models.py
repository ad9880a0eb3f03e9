"""The user model and its logins: Django's user, owned by the project so it can grow."""

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils.crypto import salted_hmac


class User(AbstractUser):
    """A Biogram user."""

    # "Log out everywhere": every token issued before this moment is refused, every
    # Django session of the user ends (it is part of the session hash below).
    logins_ended_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        ordering = ["id"]
        permissions = [
            ("ban_user", "Can ban a user (deactivate and close their sockets)"),
            ("unban_user", "Can unban a user (activate again)"),
        ]

    def __str__(self):
        return self.username

    def _get_session_auth_hash(self, secret=None):
        # Django ends a session whose stored hash no longer matches: the password's,
        # and once the user logged out everywhere, that moment's too.
        value = self.password
        if self.logins_ended_at is not None:
            value = f"{value}|{self.logins_ended_at.isoformat()}"
        return salted_hmac(
            "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash",
            value,
            secret=secret,
            algorithm="sha256",
        ).hexdigest()


class Login(models.Model):
    """One sign-in: every token issued from it (refreshes and their access tokens) carries its
    id in the `sid` claim, and ending it refuses them all."""

    id = models.CharField(max_length=32, primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="logins"
    )
    # The built-in page's login belongs to its Django session: logging out of the page ends it.
    session_key = models.CharField(max_length=40, null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"login {self.id} of user {self.user_id}"
