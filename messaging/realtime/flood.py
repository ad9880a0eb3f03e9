"""Flood control of one socket: the shared per-user message rate, and the close for persistent flooding."""

from django.conf import settings

from messaging import ratelimit
from messaging.errors import RateLimited

CLOSE_FLOODING = 4008


class Flooding(RateLimited):
    """Kept sending past `rate_limited` too many times in a row: the socket is closed (4008)."""

    default_message = "Flooding; closing."
    close_code = CLOSE_FLOODING


class FloodGuard:
    """Counts a connection's consecutive refusals by the rate limit (the strikes)."""

    __slots__ = ("strikes", "user_id")

    def __init__(self, user_id: str):
        self.user_id = user_id
        self.strikes = 0

    def admit(self) -> None:
        """Let one message through, or raise `RateLimited` (or `Flooding` past the strikes)."""
        try:
            ratelimit.check_message_rate(self.user_id)
        except RateLimited:
            self.strikes += 1
            if self.strikes > settings.RATE_LIMIT_STRIKES:
                raise Flooding() from None
            raise
        self.strikes = 0
