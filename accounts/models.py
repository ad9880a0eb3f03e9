"""The user model: Django's, owned by the project so it can grow without a migration dance."""

from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """A Biogram user."""

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        ordering = ["id"]
        permissions = [("ban_user", "Can ban a user (deactivate and close their sockets)")]

    def __str__(self):
        return self.username
