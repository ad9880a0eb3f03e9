"""The reference server: a chat consumer as the Channels tutorial writes it. Not part of the product.

No authentication, no storage: the chat comes from the `chatId` query parameter,
every received `message` frame is one `group_send` to the chat, and each member's
consumer encodes and sends its own copy. It speaks just enough of
docs/protocol.md for bench/loadgen.js: a `connect` frame after accept, and
`message` frames carrying the sender's clientMessageId.

    DJANGO_SETTINGS_MODULE=bench.reference_settings \
        .venv/bin/python -m uvicorn bench.reference:application --port 8100
"""

import json
import os
from urllib.parse import parse_qs

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.reference_settings")
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        query = parse_qs(self.scope["query_string"].decode())
        self.chat_id = query.get("chatId", ["0"])[0]
        self.user_id = query.get("userId", [""])[0]
        self.group_name = f"chat_{self.chat_id}"
        await self.channel_layer.group_add(self.group_name, self.channel_name)
        await self.accept()
        await self.send(text_data=json.dumps({"type": "connect", "data": {}}))

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group_name, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        data = json.loads(text_data).get("data", {})
        await self.channel_layer.group_send(
            self.group_name,
            {
                "type": "chat.message",
                "senderId": data.get("senderId", self.user_id),
                "text": data.get("text", ""),
                "clientMessageId": data.get("clientMessageId"),
            },
        )

    async def chat_message(self, event):
        await self.send(
            text_data=json.dumps(
                {
                    "type": "message",
                    "data": {
                        "chatId": self.chat_id,
                        "senderId": event["senderId"],
                        "text": event["text"],
                        "message": {"clientMessageId": event["clientMessageId"]},
                    },
                }
            )
        )


application = ProtocolTypeRouter(
    {"websocket": URLRouter([path("ws/chat/", ChatConsumer.as_asgi())])}
)
