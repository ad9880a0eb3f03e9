"""REST views of messaging: each parses its input, calls one service or selector, and answers."""

from urllib.parse import urlencode

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from messaging import protocol, ratelimit, selectors, services, webpush
from messaging.api.serializers import (
    DIGITS,
    ChangesOutput,
    ChangesQuery,
    ChatCreateInput,
    ChatOutput,
    ChatPageOutput,
    ChatRenameInput,
    DeliveredInput,
    DeliveredOutput,
    EditOutput,
    HistoryOutput,
    HistoryQuery,
    MemberAddInput,
    MessageEditInput,
    MessageOutput,
    MessageSendInput,
    NotificationsInput,
    NotificationsOutput,
    PushEndpointInput,
    PushKeyOutput,
    PushSubscriptionInput,
    PushSubscriptionOutput,
    ReadInput,
    ReadOutput,
)


def _validated(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ChatPages(CursorPagination):
    """The chat list, most recent activity first, in pages that stay put while chats move."""

    ordering = ("-activity", "-id")
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200


class ChatListView(APIView):
    """The caller's chats (cursor-paginated: follow `next`), and new ones."""

    pagination_class = ChatPages

    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", str, description="From a `next` or `previous` link."),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1},
                description="Page size, default 50, at most 200.",
            ),
        ],
        responses=ChatPageOutput,
        operation_id="chats_list",
    )
    def get(self, request):
        pages = self.pagination_class()
        chats = pages.paginate_queryset(selectors.chats_for_list(request.user), request, view=self)
        return pages.get_paginated_response(selectors.chat_objects(request.user, chats))

    @extend_schema(request=ChatCreateInput, responses={201: ChatOutput, 200: ChatOutput})
    def post(self, request):
        data = _validated(ChatCreateInput, request.data)
        chat, created = services.create_chat(
            creator=request.user, member_ids=data["memberIds"], title=data["title"]
        )
        return Response(
            selectors.chat_object(request.user, chat.pk),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ChatDetailView(APIView):
    """One chat of the caller's."""

    @extend_schema(responses=ChatOutput)
    def get(self, request, chat_id):
        return Response(selectors.chat_object(request.user, chat_id))

    @extend_schema(request=ChatRenameInput, responses=ChatOutput)
    def patch(self, request, chat_id):
        data = _validated(ChatRenameInput, request.data)
        chat = services.rename_chat(actor=request.user, chat_id=chat_id, title=data["title"])
        return Response(selectors.chat_object(request.user, chat.pk))


class NotificationsView(APIView):
    """The caller's notification setting for a chat (not the moderation mute)."""

    @extend_schema(request=NotificationsInput, responses=NotificationsOutput)
    def put(self, request, chat_id):
        data = _validated(NotificationsInput, request.data)
        muted = services.set_notifications_muted(
            user=request.user, chat_id=chat_id, muted=data["muted"]
        )
        return Response({"muted": muted})


class MemberListView(APIView):
    """Add a member to a group chat."""

    @extend_schema(request=MemberAddInput, responses={201: ChatOutput, 200: ChatOutput})
    def post(self, request, chat_id):
        data = _validated(MemberAddInput, request.data)
        chat, created = services.add_member(
            actor=request.user, chat_id=chat_id, user_id=data["userId"]
        )
        return Response(
            selectors.chat_object(request.user, chat.pk),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class MemberDetailView(APIView):
    """Leave a chat, or remove a member as its owner."""

    @extend_schema(responses={204: None})
    def delete(self, request, chat_id, user_id):
        services.remove_member(actor=request.user, chat_id=chat_id, user_id=user_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _history_links(request, chat, page, limit: int) -> dict:
    """`next` (the newer messages after the page) and `previous` (the older ones before it), as
    URLs with the same `limit`, or null where there is none. Seqs have no holes (a deleted
    message keeps its seq), so older ones exist below the page's first seq unless it is 1, and
    newer ones above its last unless that is the chat's last, whichever cursor the page came from."""
    if not page.messages:
        return {"next": None, "previous": None}
    first, last = page.messages[0].seq, page.messages[-1].seq

    def link(**cursor):
        return request.build_absolute_uri(f"{request.path}?{urlencode({**cursor, 'limit': limit})}")

    return {
        "next": link(after=last) if last < chat.last_seq else None,
        "previous": link(before=first) if first > 1 else None,
    }


class MessageListView(APIView):
    """A chat's history, and sending to it."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "after", str, pattern=DIGITS, description="Only messages with a greater seq."
            ),
            OpenApiParameter(
                "before", str, pattern=DIGITS, description="Only messages with a smaller seq."
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1},
                description="Page size, default 50, at most 200.",
            ),
        ],
        responses=HistoryOutput,
    )
    def get(self, request, chat_id):
        query = _validated(HistoryQuery, request.query_params)
        chat = services.access_chat(user=request.user, chat_id=chat_id)
        limit = min(query["limit"], selectors.HISTORY_MAX_LIMIT)
        page = selectors.history(
            chat=chat, after=query.get("after"), before=query.get("before"), limit=limit
        )
        return Response(
            {
                "results": [protocol.message_data(m) for m in page.messages],
                "hasMore": page.has_more,
                **_history_links(request, chat, page, limit),
            }
        )

    @extend_schema(request=MessageSendInput, responses={201: MessageOutput, 200: MessageOutput})
    def post(self, request, chat_id):
        data = _validated(MessageSendInput, request.data)
        ratelimit.check_message_rate(request.user.pk)
        message, created = services.send_message(
            sender=request.user,
            chat_id=chat_id,
            text=data["text"],
            client_message_id=data.get("clientMessageId"),
            reply_to=data.get("replyTo"),
        )
        return Response(
            protocol.message_data(message),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ReadView(APIView):
    """Move the caller's read position forward."""

    @extend_schema(request=ReadInput, responses=ReadOutput)
    def post(self, request, chat_id):
        data = _validated(ReadInput, request.data or {})
        receipt, _ = services.mark_read(
            user=request.user, chat_id=chat_id, message_id=data.get("messageId")
        )
        return Response(protocol.read_position_data(receipt))


class MessageDetailView(APIView):
    """One message: read it, edit it or delete it (its author)."""

    @extend_schema(operation_id="chats_message_retrieve", responses=MessageOutput)
    def get(self, request, chat_id, message_id):
        message = services.access_message(user=request.user, chat_id=chat_id, message_id=message_id)
        return Response(protocol.message_data(message))

    @extend_schema(request=MessageEditInput, responses=MessageOutput)
    def patch(self, request, chat_id, message_id):
        data = _validated(MessageEditInput, request.data)
        ratelimit.check_message_rate(request.user.pk)
        outcome = services.edit_message(
            user=request.user, chat_id=chat_id, message_id=message_id, text=data["text"]
        )
        return Response(protocol.message_data(outcome.message))

    @extend_schema(responses={204: None})
    def delete(self, request, chat_id, message_id):
        ratelimit.check_message_rate(request.user.pk)
        services.delete_own_message(user=request.user, chat_id=chat_id, message_id=message_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MessageEditsView(APIView):
    """A message's texts, oldest first, the current one last."""

    @extend_schema(responses=EditOutput(many=True))
    def get(self, request, chat_id, message_id):
        message = services.access_message(user=request.user, chat_id=chat_id, message_id=message_id)
        return Response(selectors.edit_history(message))


class ReactionView(APIView):
    """The caller's reaction with one emoji (percent-encoded in the path) on a message."""

    @extend_schema(request=None, responses=MessageOutput)
    def put(self, request, chat_id, message_id, emoji):
        return self._react(request, chat_id, message_id, emoji, on=True)

    @extend_schema(request=None, responses=MessageOutput)
    def delete(self, request, chat_id, message_id, emoji):
        return self._react(request, chat_id, message_id, emoji, on=False)

    def _react(self, request, chat_id, message_id, emoji, *, on: bool):
        emoji = protocol.parse_emoji(emoji)
        ratelimit.check_message_rate(request.user.pk)
        outcome = services.react(
            user=request.user, chat_id=chat_id, message_id=message_id, emoji=emoji, on=on
        )
        return Response(protocol.message_data(outcome.message))


class ChangesView(APIView):
    """The chat's log since a rev: each message changed (or new) after it, in its current state."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "since",
                str,
                pattern=DIGITS,
                description="Only messages whose latest change is after this rev (default 0).",
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1},
                description="Page size, default 50, at most 200.",
            ),
        ],
        responses=ChangesOutput,
    )
    def get(self, request, chat_id):
        query = _validated(ChangesQuery, request.query_params)
        chat = services.access_chat(user=request.user, chat_id=chat_id)
        page = selectors.changes(
            chat=chat,
            since=query["since"],
            limit=min(query["limit"], selectors.HISTORY_MAX_LIMIT),
        )
        rev = page.messages[-1].rev if page.messages else query["since"]
        return Response(
            {
                "results": [protocol.message_data(m) for m in page.messages],
                "rev": str(rev),
                "hasMore": page.has_more,
            }
        )


class DeliveredView(APIView):
    """Move the caller's delivered position forward."""

    @extend_schema(request=DeliveredInput, responses=DeliveredOutput)
    def post(self, request, chat_id):
        data = _validated(DeliveredInput, request.data)
        position, _ = services.mark_delivered(user=request.user, chat_id=chat_id, seq=data["seq"])
        return Response({"seq": str(position)})


class PushKeyView(APIView):
    """The server's VAPID public key, the `applicationServerKey` of `pushManager.subscribe`."""

    permission_classes = [AllowAny]  # a public key: nothing to hide, and a page may ask first

    @extend_schema(responses=PushKeyOutput)
    def get(self, request):
        return Response({"publicKey": webpush.public_key()})


class PushSubscriptionsView(APIView):
    """The caller's Web Push subscriptions: add one (the browser's `PushSubscription`), remove one."""

    @extend_schema(
        request=PushSubscriptionInput,
        responses={201: PushSubscriptionOutput, 200: PushSubscriptionOutput},
    )
    def post(self, request):
        data = _validated(PushSubscriptionInput, request.data)
        subscription, created = services.subscribe_push(
            user=request.user,
            endpoint=data["endpoint"],
            p256dh=data["keys"]["p256dh"],
            auth=data["keys"]["auth"],
        )
        return Response(
            {"endpoint": subscription.endpoint},
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(request=PushEndpointInput, responses={204: None})
    def delete(self, request):
        data = _validated(PushEndpointInput, request.data)
        services.unsubscribe_push(user=request.user, endpoint=data["endpoint"])
        return Response(status=status.HTTP_204_NO_CONTENT)
