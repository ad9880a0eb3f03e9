"""Web Push (RFC 8030, 8291, 8292): the server's VAPID key, the endpoint check, and one push.

The VAPID key is VAPID_PRIVATE_KEY, or one generated once into VAR_DIR (like the
secret key), so that browsers' subscriptions keep working across restarts.
Endpoints come from browsers, that is from anybody: one must be https on a
public address, checked when it is subscribed and again before each push (its
name may resolve elsewhere by then), and a push never follows a redirect.
"""

import base64
import functools
import ipaddress
import json
import logging
import socket
import threading
import time
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from py_vapid import Vapid

from biogram.files import create_once
from messaging.errors import BadRequest, EndpointRefused
from messaging.notifications import GONE, REFUSED, REJECTED, RETRY, SENT

logger = logging.getLogger(__name__)

KEY_FILE = "vapid_private_key.pem"
TIMEOUT = (5, 10)  # seconds: connect, read
JWT_LIFETIME = 12 * 3600  # RFC 8292 allows at most 24 hours


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---------------------------------------------------------------- the VAPID key


@functools.cache
def vapid() -> Vapid:
    """The server's VAPID key: VAPID_PRIVATE_KEY, else var/vapid_private_key.pem (made once)."""
    configured = settings.VAPID_PRIVATE_KEY.strip()
    if configured:
        if "-----BEGIN" in configured:
            return Vapid(serialization.load_pem_private_key(configured.encode(), password=None))
        return Vapid.from_string(configured)  # raw 32 bytes or DER, base64url
    pem = create_once(
        settings.VAR_DIR / KEY_FILE,
        lambda: ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return Vapid(serialization.load_pem_private_key(pem, password=None))


def public_key() -> str:
    """The VAPID public key as browsers take it (`applicationServerKey`): the uncompressed
    P-256 point, base64url without padding."""
    point = vapid().public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(point)


# ---------------------------------------------------------------- subscriptions


def check_keys(p256dh: str, auth: str) -> None:
    """The browser's key and secret as RFC 8291 needs them, or `BadRequest`."""
    try:
        point = b64url_decode(p256dh)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        secret = b64url_decode(auth)
    except (ValueError, TypeError) as exc:
        raise BadRequest(
            "keys: p256dh must be a P-256 point, auth 16 bytes, in base64url."
        ) from exc
    if len(point) != 65 or len(secret) != 16:
        raise BadRequest("keys: p256dh must be a P-256 point, auth 16 bytes, in base64url.")


def check_endpoint(url: str) -> None:
    """`EndpointRefused` unless `url` is https on public addresses only (any http(s) URL with
    WEBPUSH_ALLOW_INSECURE). Resolves the host name: call it off the event loop."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise EndpointRefused("The endpoint is not a URL.") from exc
    allowed = ("http", "https") if settings.WEBPUSH_ALLOW_INSECURE else ("https",)
    if parts.scheme not in allowed or not host:
        raise EndpointRefused()
    if parts.username is not None or parts.password is not None:
        raise EndpointRefused("Push endpoints carry no user name or password.")
    if settings.WEBPUSH_ALLOW_INSECURE:
        return
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise EndpointRefused("The endpoint's host name does not resolve.") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not address.is_global or address.is_multicast:
            raise EndpointRefused(
                "The endpoint resolves to a loopback, private, link-local or reserved address."
            )


# ---------------------------------------------------------------- sending


_signed: dict[str, tuple[float, dict]] = {}  # audience -> (when to sign anew, headers)


def vapid_headers(audience: str) -> dict:
    """`Authorization: vapid t=<JWT>,k=<public key>` for a push service (RFC 8292); one JWT
    serves every push to that service for half its lifetime."""
    now = time.time()
    cached = _signed.get(audience)
    if cached is None or cached[0] < now:
        claims = {"aud": audience, "sub": settings.VAPID_SUBJECT, "exp": int(now) + JWT_LIFETIME}
        if len(_signed) > 1000:
            _signed.clear()
        cached = _signed[audience] = (now + JWT_LIFETIME / 2, vapid().sign(claims))
    return cached[1]


def forget_keys() -> None:
    """Read the VAPID key and subject again (tests that change them)."""
    vapid.cache_clear()
    _signed.clear()


class _NoRedirects(requests.Session):
    """A push service answers; it does not send us elsewhere (a redirect could aim inside)."""

    def request(self, *args, **kwargs):
        kwargs["allow_redirects"] = False
        return super().request(*args, **kwargs)


_sessions = threading.local()


def _session() -> requests.Session:
    """The sending thread's session: its connections to a push service are kept and reused."""
    session = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = _NoRedirects()
    return session


def send(subscription, payload: dict, *, topic: str | None = None) -> str:
    """Encrypt `payload` (aes128gcm) for one subscription and POST it, signed with VAPID.

    The outcome: SENT; RETRY (network error, 429, 5xx); GONE (404/410: the subscription
    ended); REJECTED (another answer); REFUSED (the endpoint no longer passes the check).
    """
    try:
        check_endpoint(subscription.endpoint)
    except EndpointRefused:
        return REFUSED
    parts = urlsplit(subscription.endpoint)
    headers = {**vapid_headers(f"{parts.scheme}://{parts.netloc}"), "Urgency": "high"}
    if topic:
        headers["Topic"] = topic  # a newer push of the same chat replaces one still queued
    info = {
        "endpoint": subscription.endpoint,
        "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
    }
    body = json.dumps(payload, separators=(",", ":")).encode()
    from pywebpush import WebPusher  # here: it imports aiohttp, 0.6 s no other path needs

    try:
        response = WebPusher(info, requests_session=_session()).send(
            body, headers, ttl=settings.WEBPUSH_TTL, timeout=TIMEOUT
        )
    except requests.RequestException as exc:
        logger.info("push to %s failed: %s", parts.netloc, exc)
        return RETRY
    status = response.status_code
    if status in (200, 201, 202):
        return SENT
    if status in (404, 410):
        return GONE
    if status == 429 or status >= 500:
        return RETRY
    logger.warning("push to %s answered %s: %s", parts.netloc, status, response.text[:200])
    return REJECTED
