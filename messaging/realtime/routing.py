"""WebSocket routes: /ws/chat/ and, for the original Node client's URL, /."""

from django.urls import re_path

from messaging.realtime.consumer import ChatConsumer

websocket_urlpatterns = [
    re_path(r"^ws/chat/?$", ChatConsumer.as_asgi()),
    re_path(r"^$", ChatConsumer.as_asgi()),
]
