"""URLs of the messaging REST API, under /api/."""

from django.urls import path

from messaging.api import views

urlpatterns = [
    path("chats/", views.ChatListView.as_view(), name="chat-list"),
    path("chats/<int:chat_id>/", views.ChatDetailView.as_view(), name="chat-detail"),
    path("chats/<int:chat_id>/members/", views.MemberListView.as_view(), name="chat-members"),
    path(
        "chats/<int:chat_id>/members/<int:user_id>/",
        views.MemberDetailView.as_view(),
        name="chat-member",
    ),
    path("chats/<int:chat_id>/messages/", views.MessageListView.as_view(), name="chat-messages"),
    path("chats/<int:chat_id>/read/", views.ReadView.as_view(), name="chat-read"),
]
