"""Input serializers of the REST API, and output ones built on the protocol's shapes."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from messaging import protocol
from messaging.errors import MessagingError

# What an id or a seq looks like on the wire, for the OpenAPI document.
DIGITS = "^[0-9]+$"


@extend_schema_field({"type": "string", "pattern": DIGITS})
class IdField(serializers.Field):
    """An id given as a string of digits (an integer is accepted too)."""

    default_error_messages = {"invalid": "Must be an id string."}

    def to_internal_value(self, data):
        try:
            return protocol.parse_id(data, self.field_name or "id")
        except MessagingError:
            self.fail("invalid")

    def to_representation(self, value):
        return str(value)


class MessageIdField(IdField):
    """A message id in a body: one that names no row is let through as 0, which the
    services answer `not_found`, as on the socket."""

    def to_internal_value(self, data):
        try:
            return protocol.parse_message_id(data, self.field_name or "messageId")
        except MessagingError:
            self.fail("invalid")


class SeqField(IdField):
    default_error_messages = {"invalid": "Must be a seq: a string of digits."}

    def to_internal_value(self, data):
        try:
            return protocol.parse_seq(data, self.field_name or "seq")
        except MessagingError:
            self.fail("invalid")


# ---------------------------------------------------------------- input


class ChatCreateInput(serializers.Serializer):
    memberIds = serializers.ListField(child=IdField(), max_length=1000)  # noqa: N815
    title = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")


class ChatRenameInput(serializers.Serializer):
    title = serializers.CharField(min_length=1, max_length=100)


class NotificationsInput(serializers.Serializer):
    muted = serializers.BooleanField()


class NotificationsOutput(serializers.Serializer):
    muted = serializers.BooleanField()


class MemberAddInput(serializers.Serializer):
    userId = IdField()  # noqa: N815


class MessageSendInput(serializers.Serializer):
    # Blank text is let through to `protocol.parse_text`, whose refusal the socket gives too.
    text = serializers.CharField(trim_whitespace=False, allow_blank=True, min_length=1)
    clientMessageId = serializers.CharField(  # noqa: N815
        required=False, allow_null=True, max_length=protocol.CLIENT_MESSAGE_ID_MAX
    )
    replyTo = MessageIdField(required=False, allow_null=True)  # noqa: N815


class MessageEditInput(serializers.Serializer):
    text = serializers.CharField(trim_whitespace=False, allow_blank=True, min_length=1)


class DeliveredInput(serializers.Serializer):
    seq = SeqField()


class ChangesQuery(serializers.Serializer):
    since = SeqField(required=False, default=0)
    limit = serializers.IntegerField(required=False, min_value=1, default=50)


class ReadInput(serializers.Serializer):
    messageId = IdField(required=False, allow_null=True)  # noqa: N815


class HistoryQuery(serializers.Serializer):
    after = SeqField(required=False)
    before = SeqField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, default=50)


# ---------------------------------------------------------------- output


class MemberOutput(serializers.Serializer):
    id = IdField()
    username = serializers.CharField()
    lastReadSeq = serializers.CharField()  # noqa: N815
    lastDeliveredSeq = serializers.CharField()  # noqa: N815


class ReplyToOutput(serializers.Serializer):
    id = serializers.CharField()
    seq = serializers.CharField()


class ReactionOutput(serializers.Serializer):
    emoji = serializers.CharField()
    userIds = serializers.ListField(child=serializers.CharField())  # noqa: N815


class MessageOutput(serializers.Serializer):
    """The message object of docs/protocol.md, built by `protocol.message_data`."""

    id = serializers.CharField()
    chatId = serializers.CharField()  # noqa: N815
    seq = serializers.CharField()
    rev = serializers.CharField()
    senderId = serializers.CharField(allow_null=True)  # noqa: N815
    text = serializers.CharField(allow_null=True)
    clientMessageId = serializers.CharField(allow_null=True)  # noqa: N815
    createdAt = serializers.DateTimeField()  # noqa: N815
    deleted = serializers.BooleanField()
    editedAt = serializers.DateTimeField(allow_null=True)  # noqa: N815
    replyTo = ReplyToOutput(allow_null=True)  # noqa: N815
    reactions = ReactionOutput(many=True)

    def to_representation(self, instance):
        return protocol.message_data(instance)


class ChatOutput(serializers.Serializer):
    id = serializers.CharField()
    title = serializers.CharField()
    isDirect = serializers.BooleanField()  # noqa: N815
    createdAt = serializers.DateTimeField()  # noqa: N815
    members = MemberOutput(many=True)
    lastMessage = MessageOutput(allow_null=True)  # noqa: N815
    unreadCount = serializers.IntegerField()  # noqa: N815
    lastReadSeq = serializers.CharField()  # noqa: N815
    rev = serializers.CharField()
    notificationsMuted = serializers.BooleanField()  # noqa: N815


class ChatPageOutput(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = ChatOutput(many=True)


class HistoryOutput(serializers.Serializer):
    results = MessageOutput(many=True)
    hasMore = serializers.BooleanField()  # noqa: N815
    next = serializers.URLField(
        allow_null=True, help_text="The newer messages after this page, if any."
    )
    previous = serializers.URLField(
        allow_null=True, help_text="The older messages before this page, if any."
    )


class ChangesOutput(serializers.Serializer):
    results = MessageOutput(many=True)
    rev = serializers.CharField()
    hasMore = serializers.BooleanField()  # noqa: N815


class EditOutput(serializers.Serializer):
    text = serializers.CharField()
    editedAt = serializers.DateTimeField()  # noqa: N815


class DeliveredOutput(serializers.Serializer):
    seq = serializers.CharField()


class ReadOutput(serializers.Serializer):
    messageId = serializers.CharField(allow_null=True)  # noqa: N815
    seq = serializers.CharField()
    readAt = serializers.DateTimeField(allow_null=True)  # noqa: N815


class PushKeysInput(serializers.Serializer):
    p256dh = serializers.CharField(max_length=100)
    auth = serializers.CharField(max_length=50)


class PushSubscriptionInput(serializers.Serializer):
    """The browser's `PushSubscription` as its `toJSON()` gives it (`expirationTime` ignored)."""

    endpoint = serializers.CharField(max_length=1000)
    keys = PushKeysInput()


class PushEndpointInput(serializers.Serializer):
    endpoint = serializers.CharField(max_length=1000)


class PushKeyOutput(serializers.Serializer):
    publicKey = serializers.CharField()  # noqa: N815


class PushSubscriptionOutput(serializers.Serializer):
    endpoint = serializers.CharField()
