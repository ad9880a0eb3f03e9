"""Chats, their members, their messages, edits, reactions and read positions, with the constraints that keep them whole."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class ChatQuerySet(models.QuerySet):
    def for_user(self, user):
        """The chats `user` is a member of: any other chat does not exist for them."""
        return self.filter(memberships__user=user)


class Chat(models.Model):
    title = models.CharField(max_length=200, blank=True)
    is_direct = models.BooleanField(default=False)
    # "lowid:highid" for a direct chat, so the database makes the pair unique.
    direct_key = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # The seq of the newest message; send_message increments it under the row lock.
    last_seq = models.BigIntegerField(default=0)
    # The rev of the chat's latest change (a new message, an edit, a deletion, a restore, a
    # reaction); every change increments it under the same row lock, in its own transaction.
    last_rev = models.BigIntegerField(default=0)
    last_message_at = models.DateTimeField(null=True, blank=True)

    objects = ChatQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return self.title or f"Chat {self.pk}"


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    muted = models.BooleanField(default=False)
    # A mute with a duration ends by itself at this time; null: until a moderator unmutes.
    muted_until = models.DateTimeField(null=True, blank=True)
    # The member's own choice not to be notified of this chat (not the moderation mute above).
    notifications_muted = models.BooleanField(default=False)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chat", "user"], name="membership_unique_chat_user")
        ]
        ordering = ["joined_at", "id"]
        permissions = [("moderate_membership", "Can mute, unmute and remove members")]

    def __str__(self):
        return f"{self.user} in {self.chat}"


class MessageQuerySet(models.QuerySet):
    def with_reply_to_seq(self, *chat_ids):
        """Messages of these chats, each with the seq of the message it answers
        (`reply_to_seq`), read in the same chat: a subquery by (chat, id), not a join by id."""
        replied = (
            Message.objects.filter(chat_id__in=chat_ids)
            .filter(chat_id=models.OuterRef("chat_id"), pk=models.OuterRef("reply_to_id"))
            .order_by()
        )
        return self.filter(chat_id__in=chat_ids).annotate(
            reply_to_seq=models.Subquery(replied.values("seq")[:1])
        )

    def framed(self, *chat_ids):
        """Messages of these chats with what their protocol object needs besides their row: the
        seq of the message each answers (`reply_to_seq`) and their reactions (`reaction_rows`,
        by id).

        Every read names its chats, so that on PostgreSQL the messages, the messages replied
        to and the reactions are each read from the chats' partitions alone
        (docs/architecture.md, "Storage partitioned by chat").
        """
        return self.with_reply_to_seq(*chat_ids).prefetch_related(
            models.Prefetch(
                "reactions",
                queryset=Reaction.objects.filter(chat_id__in=chat_ids)
                .order_by("id")
                .only("message", "emoji", "user"),
                to_attr="reaction_rows",
            )
        )


class Message(models.Model):
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="messages")
    seq = models.BigIntegerField()
    # The chat's rev at this message's latest change: it moves, so it is indexed, not unique.
    rev = models.BigIntegerField()
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="messages"
    )
    text = models.TextField()
    client_message_id = models.CharField(max_length=64, null=True, blank=True)
    created_at = models.DateTimeField()
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Deleted by its author (final), not by a moderator (who may restore it).
    deleted_by_author = models.BooleanField(default=False)
    edited_at = models.DateTimeField(null=True, blank=True)
    # The message this one answers, in the same chat (the service checks); a deleted original
    # stays referenced. On PostgreSQL the database's constraint is the composite
    # (chat_id, reply_to_id) -> (chat_id, id) of migration 0010, hence no single-column one.
    reply_to = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
    )

    objects = MessageQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["chat", "rev"], name="message_chat_rev")]
        constraints = [
            # Also the index that history and sync read by.
            models.UniqueConstraint(fields=["chat", "seq"], name="message_unique_chat_seq"),
            # Idempotency is per chat: every unique key includes the chat (partitioning).
            models.UniqueConstraint(
                fields=["chat", "sender", "client_message_id"],
                condition=Q(client_message_id__isnull=False),
                name="message_unique_chat_sender_client_id",
            ),
        ]
        ordering = ["chat", "seq"]
        permissions = [("moderate_message", "Can delete and restore messages")]

    def __str__(self):
        return f"#{self.seq} in chat {self.chat_id}"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None


class MessageEdit(models.Model):
    """A text a message had before an edit replaced it."""

    # (chat, message) is a composite foreign key on PostgreSQL (migration 0010).
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="edits", db_constraint=False
    )
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="+")
    text = models.TextField()
    # When this text was set: the message's creation for the original, else the edit before.
    edited_at = models.DateTimeField()

    class Meta:
        ordering = ["message", "id"]

    def __str__(self):
        return f"earlier text of {self.message}"


class Reaction(models.Model):
    """One member's emoji on a message; a message's emoji come in order of first use (by id)."""

    # (chat, message) is a composite foreign key on PostgreSQL (migration 0010).
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="reactions", db_constraint=False
    )
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    emoji = models.CharField(max_length=64)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["chat", "message", "user", "emoji"],
                name="reaction_unique_chat_message_user_emoji",
            )
        ]
        ordering = ["message", "id"]

    def __str__(self):
        return f"{self.emoji} by {self.user_id} on {self.message}"


class ReadReceipt(models.Model):
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="read_receipts")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="read_receipts"
    )
    # (chat, message) is a composite foreign key on PostgreSQL (migration 0010).
    message = models.ForeignKey(
        Message, null=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    seq = models.BigIntegerField(default=0)
    read_at = models.DateTimeField(null=True, blank=True)
    # Up to which seq one of the member's devices holds the chat; never behind `seq`.
    delivered_seq = models.BigIntegerField(default=0)
    # Up to which seq the member was notified of (or did not need to be) by push and webhook
    # (messaging/notifications.py). Here rather than on Membership: the storing transaction
    # share-locks the sender's membership row, and a claim must never make a sender wait.
    notified_seq = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chat", "user"], name="readreceipt_unique_chat_user")
        ]

    def __str__(self):
        return f"{self.user} read {self.chat} up to #{self.seq}"


class AccessChange(models.Model):
    """A change of who may see what, recorded in the transaction that makes it.

    Live events tell sockets at once, but a live event can be lost (Redis away);
    every process also reads these rows every second (`realtime/access.py`) and
    has the sockets of the users concerned re-check their standing in the database.
    """

    class Kind(models.TextChoices):
        ADDED = "added"
        REMOVED = "removed"
        BANNED = "banned"
        LOGGED_OUT = "logged_out"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    chat_id = models.BigIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.kind} user {self.user_id} chat {self.chat_id}"


class Exclusion(models.Model):
    """A member a moderator removed from a chat: they cannot come back (by re-creating the direct
    chat or being added again) until a moderator lets them back."""

    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="exclusions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    moderator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["chat", "user"], name="exclusion_unique_chat_user")
        ]
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.user} removed from {self.chat}"


class PushSubscription(models.Model):
    """A browser's Web Push subscription (its `PushSubscription` JSON) for one user."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="push_subscriptions"
    )
    # The push service's URL for this browser: unique, a browser belongs to whoever subscribed last.
    endpoint = models.CharField(max_length=1000, unique=True)
    p256dh = models.CharField(max_length=100)  # the browser's P-256 public key, base64url
    auth = models.CharField(max_length=50)  # its 16-byte authentication secret, base64url
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["user", "id"]

    def __str__(self):
        return f"push subscription {self.pk} of {self.user_id}"


class Notification(models.Model):
    """One notification of a chat's new messages to the members it names, decided once.

    `message_ids` are the messages folded into it; those deleted by the time it goes out are
    left out (all of them: nothing goes out). `payload` is what goes out, fixed at the first
    attempt so that retries carry the same fields; `{}` when nothing goes out.
    """

    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="+")
    message_ids = models.JSONField()
    user_ids = models.JSONField()
    payload = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"notification {self.pk} of chat {self.chat_id}"


class NotificationDispatch(models.Model):
    """The outbox: one push to one subscription, or the one webhook call, of a notification.

    Due when `next_attempt_at` has passed and it is not done; taking it moves
    `next_attempt_at` a lease ahead, so no other process sends it meanwhile.
    """

    class Kind(models.TextChoices):
        PUSH = "push"
        WEBHOOK = "webhook"

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="dispatches"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # A subscription deleted (unsubscribed, or gone at the push service) takes its pushes along.
    subscription = models.ForeignKey(
        PushSubscription, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    user_id = models.BigIntegerField(null=True, blank=True)  # whose subscription
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    done_at = models.DateTimeField(null=True, blank=True)
    # sent, dropped (nothing to say any more), gone, rejected (4xx), refused (address), failed
    outcome = models.CharField(max_length=16, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(done_at__isnull=True),
                name="dispatch_due",
            )
        ]
        ordering = ["id"]

    def __str__(self):
        return f"{self.kind} of {self.notification_id}"
