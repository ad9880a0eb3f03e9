"""The one error family of messaging: each carries the protocol's error code."""


class MessagingError(Exception):
    """Base of every refusal a service makes; `code` is the protocol's error code.

    `close_code`: a socket that hears this error is then closed with that code, after a
    `disconnect` frame with `closing_reason` when there is one.
    """

    code = "bad_request"
    status = 400
    default_message = "Bad request."
    close_code: int | None = None
    closing_reason: str | None = None

    def __init__(self, message: str | None = None, **extra):
        self.message = message or self.default_message
        self.extra = extra
        super().__init__(self.message)


class BadRequest(MessagingError):
    code, status, default_message = "bad_request", 400, "Bad request."


class NotMember(MessagingError):
    code, status, default_message = "not_member", 404, "Chat not found."


class NotFound(MessagingError):
    code, status, default_message = "not_found", 404, "Not found."


class Forbidden(MessagingError):
    code, status, default_message = "forbidden", 403, "Forbidden."


class TooLarge(MessagingError):
    code, status, default_message = "too_large", 400, "Text is too long."


class RateLimited(MessagingError):
    code, status, default_message = "rate_limited", 429, "Too many messages; slow down."


class Unavailable(MessagingError):
    code, status, default_message = (
        "unavailable",
        503,
        "Service unavailable; the message was not stored. Retry with the same clientMessageId.",
    )


class Unauthorized(MessagingError):
    code, status, default_message = "unauthorized", 401, "Authentication failed."


class Banned(Unauthorized):
    """The sender was banned: the socket hears `disconnect` (banned) and is closed with 4001."""

    default_message = "This account is banned."
    close_code = 4001
    closing_reason = "banned"


class EndpointRefused(BadRequest):
    """A push endpoint that is not https on a public address (WEBPUSH_ALLOW_INSECURE lets it in)."""

    code, status, default_message = (
        "endpoint_refused",
        400,
        "Push endpoints must be https URLs on a public address.",
    )
