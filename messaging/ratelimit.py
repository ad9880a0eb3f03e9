"""Per-user token buckets for message sends, shared by every connection of a user in this process."""

import time
from dataclasses import dataclass, field

from django.conf import settings

from messaging import metrics
from messaging.errors import RateLimited


@dataclass
class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; one token per message."""

    burst: float
    rate: float
    tokens: float = -1.0
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self) -> float:
        """Take a token; 0.0 on success, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


_buckets: dict[str, TokenBucket] = {}


def take_message_token(user_id) -> float:
    """0.0 when the user may send now, else the seconds to wait (`retryAfterMs`)."""
    if not settings.RATE_LIMIT_ENABLED:
        return 0.0
    key = str(user_id)
    bucket = _buckets.get(key)
    if bucket is None:
        if len(_buckets) > 100_000:
            _buckets.clear()  # full buckets are the default state: forgetting them is safe
        bucket = _buckets[key] = TokenBucket(
            burst=settings.RATE_LIMIT_BURST, rate=settings.RATE_LIMIT_PER_SECOND
        )
    return bucket.take()


def check_message_rate(user_id) -> None:
    """Take one of the user's message tokens, or raise `RateLimited` saying when to retry.

    The socket and REST paths both call this for every message they accept.
    """
    wait = take_message_token(user_id)
    if wait:
        metrics.RATE_LIMITED.inc()
        raise RateLimited(retryAfterMs=max(1, int(wait * 1000 + 0.999)))


def reset() -> None:
    _buckets.clear()
