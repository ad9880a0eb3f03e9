"""`manage.py serve`: the production server, uvicorn, configured for the chat protocol."""

import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve HTTP and WebSocket with uvicorn (no autoreload), on HOST:PORT."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args, host, port, **options):
        import uvicorn

        from biogram import preflight

        if not preflight.run():
            sys.exit(1)

        from messaging.realtime.server import ChatServer
        from messaging.realtime.wire import ChatWebSocketProtocol

        config = uvicorn.Config(
            "biogram.asgi:application",
            host=host,
            port=port,
            lifespan="off",
            # uvicorn's sans-I/O protocol, the lightest of its WebSocket stacks (benchmarks.md),
            # taught to write a chat frame framed once for all members (realtime/wire.py).
            ws=ChatWebSocketProtocol,
            # Chat frames are small; compression would cost CPU and ~40 KB of zlib state per socket.
            ws_per_message_deflate=False,
            log_config=None,  # Django's LOGGING (with token redaction) stays in charge
            # Frames over the protocol's hard limit close the socket with 1009.
            ws_max_size=settings.WS_MAX_FRAME_BYTES,
            ws_ping_interval=settings.WS_PING_INTERVAL,
            ws_ping_timeout=settings.WS_PING_TIMEOUT,
            proxy_headers=True,
            forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
            timeout_graceful_shutdown=5,
            server_header=False,
        )
        ChatServer(config).run()
