"""The WebSocket handshake's Origin check: own hosts and the allow-list pass, others get 403."""

from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import validate_host


def origin_allowed(origin: str | None) -> bool:
    """No Origin (a mobile app, a bot) passes; `null` and foreign origins do not."""
    if origin is None:
        return True
    origin = origin.strip()
    if not origin or origin.lower() == "null":
        return False
    if origin.rstrip("/") in settings.WS_ALLOWED_ORIGINS:
        return True
    try:
        parts = urlsplit(origin)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    if parts.scheme not in {"http", "https"} or not hostname:
        return False
    if ":" in hostname:
        hostname = f"[{hostname}]"
    return validate_host(hostname, settings.ALLOWED_HOSTS)


class OriginValidator:
    """Refuses the handshake (HTTP 403) of a socket from a foreign or `null` origin.

    Channels' AllowedHostsOriginValidator also refuses a missing Origin, which
    would lock out every non-browser client; this one lets those through.
    """

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            origin = None
            for name, value in scope.get("headers", []):
                if name == b"origin":
                    origin = value.decode("latin-1")
                    break
            if not origin_allowed(origin):
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 4003})
                return
        return await self.inner(scope, receive, send)
