"""The WebSocket handshake's checks: the Host must be one of ALLOWED_HOSTS (as for HTTP), and the
Origin one of our own hosts or on the allow-list; anything else gets HTTP 403 before any frame."""

from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host


def origin_allowed(origin: str | None) -> bool:
    """No Origin (a mobile app, a bot) passes; `null` and foreign origins do not."""
    if origin is None:
        return True
    return _origin_allowed(
        origin, tuple(settings.WS_ALLOWED_ORIGINS), tuple(settings.ALLOWED_HOSTS)
    )


@lru_cache(maxsize=256)  # the page's few origins, checked once each
def _origin_allowed(
    origin: str, allowed_origins: tuple[str, ...], allowed_hosts: tuple[str, ...]
) -> bool:
    origin = origin.strip()
    if not origin or origin.lower() == "null":
        return False
    if origin.rstrip("/") in allowed_origins:
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
    return validate_host(hostname, allowed_hosts)


def host_allowed(host: str | None) -> bool:
    """The Host header names one of ALLOWED_HOSTS, as Django requires of HTTP requests.

    No Host at all passes: HTTP/1.1 clients always send one (the servers refuse a
    handshake without it); only in-process test communicators leave it out.
    """
    if host is None:
        return True
    return _host_allowed(host, tuple(settings.ALLOWED_HOSTS))


@lru_cache(maxsize=256)  # every handshake names one of a few hosts (a burst checks it once)
def _host_allowed(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    domain, _ = split_domain_port(host.strip())
    return bool(domain) and validate_host(domain, allowed_hosts)


class OriginValidator:
    """Refuses the handshake (HTTP 403) of a socket with a Host not in ALLOWED_HOSTS, or from a
    foreign or `null` origin.

    Channels' AllowedHostsOriginValidator also refuses a missing Origin, which
    would lock out every non-browser client; this one lets those through.
    """

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            headers = {}
            for name, value in scope.get("headers", []):
                if name in (b"origin", b"host") and name not in headers:
                    headers[name] = value.decode("latin-1")
            if not host_allowed(headers.get(b"host")) or not origin_allowed(headers.get(b"origin")):
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 4003})
                return
        return await self.inner(scope, receive, send)
