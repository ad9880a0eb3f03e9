"""The far ends of notifications, played by the tests: a push service, a browser's keys, a webhook receiver.

`Receiver` is an HTTP server on a free port of 127.0.0.1 that records every
POST and answers each path with the statuses the test scripts (201 by
default). `Browser` holds what a browser keeps for a push subscription (a
P-256 key pair and a 16-byte auth secret, made by the test) and decrypts what
the server pushed to it as the browser would (RFC 8291, aes128gcm).
`vapid_claims` checks the VAPID `Authorization` header of a push (RFC 8292) and
`webhook_signature_ok` the webhook's signature, as a receiver would.
"""

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from requests.structures import CaseInsensitiveDict


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def vapid_key_pem() -> str:
    """A fresh VAPID private key, as VAPID_PRIVATE_KEY takes it."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass
class Received:
    path: str
    headers: CaseInsensitiveDict
    body: bytes
    at: float  # time.monotonic()


class Receiver:
    """An HTTP server in a thread recording each POST; `answer(path, *statuses)` scripts the
    statuses of the next requests to `path` (then 201, or `default`)."""

    def __init__(self, *, default: int = 201):
        self.requests: list[Received] = []
        self.default = default
        self.scripts: dict[str, list[int]] = {}
        self.lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append(
                        Received(
                            self.path,
                            CaseInsensitiveDict(self.headers.items()),
                            body,
                            time.monotonic(),
                        )
                    )
                    script = receiver.scripts.get(self.path)
                    status = script.pop(0) if script else receiver.default
                    receiver.lock.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "Receiver":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, *statuses: int) -> None:
        with self.lock:
            self.scripts[path] = list(statuses)

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, count: int, *, path: str | None = None, timeout: float = 10) -> list:
        """The requests (to `path`) once there are at least `count`; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                found = [r for r in self.requests if path is None or r.path == path]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(found)} requests to {path or self.url}, not {count}"
                    )
                self.lock.wait(left)


class Browser:
    """A browser's side of one push subscription: its keys, made here, and its endpoint."""

    def __init__(self, push_service: Receiver, name: str | None = None):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        self.path = f"/push/{name or b64url(os.urandom(9))}"
        self.endpoint = push_service.url + self.path
        self.push_service = push_service

    @property
    def p256dh(self) -> str:
        return b64url(
            self.key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    def subscription(self) -> dict:
        """What `PushSubscription.toJSON()` gives the page."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": b64url(self.auth)},
        }

    def pushes(self) -> list[Received]:
        return self.push_service.to(self.path)

    def decrypt(self, received: Received) -> dict:
        assert received.headers.get("Content-Encoding") == "aes128gcm", received.headers
        plain = http_ece.decrypt(
            received.body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"
        )
        return json.loads(plain)

    def payloads(self) -> list[dict]:
        return [self.decrypt(received) for received in self.pushes()]


def vapid_claims(received: Received, *, public_key: str) -> dict:
    """The claims of a push's `Authorization: vapid t=<JWT>,k=<key>`, once its ES256 signature
    is verified with `public_key` (the server's, from GET /api/push/key/), `k` is that key and
    the JWT has not expired."""
    scheme, _, params = received.headers["Authorization"].partition(" ")
    assert scheme == "vapid", received.headers["Authorization"]
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert fields["k"] == public_key
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(public_key))
    return jwt.decode(
        fields["t"], key=key, algorithms=["ES256"], options={"verify_aud": False}, leeway=0
    )


def webhook_signature_ok(received: Received, secret: str, *, tolerance: int = 300) -> bool:
    """The receiver's check of `Biogram-Signature` (the README's snippet)."""
    header = CaseInsensitiveDict(received.headers).get("Biogram-Signature", "")
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    timestamp = parts.get("t", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))
