"""URLs of the messaging REST API, under /api/."""

from django.urls import path, register_converter

from messaging import protocol
from messaging.api import views


class RowId:
    """An id in a path, as `protocol.parse_id` reads ids in frames: digits that no row can
    have (0, or past 64 bits) give None, which every service answers as "not found"."""

    regex = "[0-9]+"

    def to_python(self, value: str) -> int | None:
        return protocol.parse_id(int(value), "id", allow_unknown=True)

    def to_url(self, value) -> str:
        return str(value)


register_converter(RowId, "id")

urlpatterns = [
    path("chats/", views.ChatListView.as_view(), name="chat-list"),
    path("chats/<id:chat_id>/", views.ChatDetailView.as_view(), name="chat-detail"),
    path(
        "chats/<id:chat_id>/notifications/",
        views.NotificationsView.as_view(),
        name="chat-notifications",
    ),
    path("chats/<id:chat_id>/members/", views.MemberListView.as_view(), name="chat-members"),
    path(
        "chats/<id:chat_id>/members/<id:user_id>/",
        views.MemberDetailView.as_view(),
        name="chat-member",
    ),
    path("chats/<id:chat_id>/messages/", views.MessageListView.as_view(), name="chat-messages"),
    path(
        "chats/<id:chat_id>/messages/<id:message_id>/",
        views.MessageDetailView.as_view(),
        name="chat-message",
    ),
    path(
        "chats/<id:chat_id>/messages/<id:message_id>/edits/",
        views.MessageEditsView.as_view(),
        name="chat-message-edits",
    ),
    # `path`: an emoji may contain "/" (percent-encoded, decoded before routing).
    path(
        "chats/<id:chat_id>/messages/<id:message_id>/reactions/<path:emoji>/",
        views.ReactionView.as_view(),
        name="chat-message-reaction",
    ),
    path("chats/<id:chat_id>/changes/", views.ChangesView.as_view(), name="chat-changes"),
    path("chats/<id:chat_id>/read/", views.ReadView.as_view(), name="chat-read"),
    path("chats/<id:chat_id>/delivered/", views.DeliveredView.as_view(), name="chat-delivered"),
    path("push/key/", views.PushKeyView.as_view(), name="push-key"),
    path("push/subscriptions/", views.PushSubscriptionsView.as_view(), name="push-subscriptions"),
]
