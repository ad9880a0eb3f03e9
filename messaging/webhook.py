"""The webhook for mobile apps: one POST of one JSON object per notification, signed as Stripe signs.

`Biogram-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body, keyed with
NOTIFY_WEBHOOK_SECRET>`; a receiver recomputes it and refuses an old `t` (README).
`Biogram-Notification` carries the notification's id, the same on every retry, so a
receiver that got a call whose answer was lost can tell the retry apart.
"""

import hashlib
import hmac
import json
import logging
import time

import requests
from django.conf import settings

from messaging.notifications import REJECTED, RETRY, SENT

logger = logging.getLogger(__name__)

TIMEOUT = (5, 10)  # seconds: connect, read
SIGNATURE_HEADER = "Biogram-Signature"
ID_HEADER = "Biogram-Notification"


def signature(body: bytes, *, secret: str, timestamp: int) -> str:
    """The `Biogram-Signature` header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def send(fields: dict, *, notification_id: int) -> str:
    """POST `fields` to NOTIFY_WEBHOOK_URL: SENT (2xx), RETRY (network error, 429, 5xx) or
    REJECTED (another answer; retrying would not change it)."""
    body = json.dumps(fields, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(
            body, secret=settings.NOTIFY_WEBHOOK_SECRET, timestamp=int(time.time())
        ),
        ID_HEADER: str(notification_id),
    }
    try:
        response = requests.post(
            settings.NOTIFY_WEBHOOK_URL,
            data=body,
            headers=headers,
            timeout=TIMEOUT,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        logger.warning("notification webhook failed: %s", exc)
        return RETRY
    if 200 <= response.status_code < 300:
        return SENT
    if response.status_code == 429 or response.status_code >= 500:
        logger.warning("notification webhook answered %s", response.status_code)
        return RETRY
    logger.warning("notification webhook answered %s: refused", response.status_code)
    return REJECTED
