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


class MemberAddInput(serializers.Serializer):
    userId = IdField()  # noqa: N815


class MessageSendInput(serializers.Serializer):
    # Blank text is let through to `protocol.parse_text`, whose refusal the socket gives too.
    text = serializers.CharField(trim_whitespace=False, allow_blank=True, min_length=1)
    clientMessageId = serializers.CharField(  # noqa: N815
        required=False, allow_null=True, max_length=protocol.CLIENT_MESSAGE_ID_MAX
    )


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


class MessageOutput(serializers.Serializer):
    """The message object of docs/protocol.md, built by `protocol.message_data`."""

    id = serializers.CharField()
    chatId = serializers.CharField()  # noqa: N815
    seq = serializers.CharField()
    senderId = serializers.CharField(allow_null=True)  # noqa: N815
    text = serializers.CharField(allow_null=True)
    clientMessageId = serializers.CharField(allow_null=True)  # noqa: N815
    createdAt = serializers.DateTimeField()  # noqa: N815
    deleted = serializers.BooleanField()

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


class HistoryOutput(serializers.Serializer):
    results = MessageOutput(many=True)
    hasMore = serializers.BooleanField()  # noqa: N815


class ReadOutput(serializers.Serializer):
    messageId = serializers.CharField(allow_null=True)  # noqa: N815
    seq = serializers.CharField()
    readAt = serializers.DateTimeField(allow_null=True)  # noqa: N815


def chat_data(chat, *, last_message, unread_count: int, read_seq: int) -> dict:
    """The chat object of the REST API (`chat` annotated by `selectors.chats_for_list`)."""
    read_seqs = {receipt.user_id: receipt.seq for receipt in chat.read_receipts.all()}
    return {
        "id": str(chat.pk),
        "title": chat.title,
        "isDirect": chat.is_direct,
        "createdAt": protocol.format_time(chat.created_at),
        "members": [
            {
                "id": str(m.user_id),
                "username": m.user.username,
                "lastReadSeq": str(read_seqs.get(m.user_id, 0)),
            }
            for m in chat.memberships.all()
        ],
        "lastMessage": protocol.message_data(last_message) if last_message else None,
        "unreadCount": unread_count,
        "lastReadSeq": str(read_seq),
    }
