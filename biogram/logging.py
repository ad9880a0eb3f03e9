"""Log filters and formatters: token redaction and JSON lines."""

import contextvars
import logging
import re

import orjson

TOKEN_IN_TEXT = re.compile(r"((?:access_)?token=)[^&\s\"']+", re.IGNORECASE)
REDACTED = r"\1[redacted]"

# Attributes every LogRecord has; the rest are `extra=` context worth printing.
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "socket",  # the text formatter's suffix; JSON has the fields themselves
}


# The socket a log line belongs to: user_id, connection_id and, while a frame about
# one is handled, chat_id. Set by the consumer in its connection's task.
socket_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "socket_context", default=None
)
_CONTEXT_FIELDS = ("user_id", "connection_id", "chat_id")


def bind(**fields) -> contextvars.Token:
    """Add fields to the current socket's log context; returns the token to undo it."""
    return socket_context.set({**(socket_context.get() or {}), **fields})


def process_task(loop, coroutine, *, name: str | None = None):
    """A task of the process (a Redis link, a batch runner), not of the socket whose handling
    happened to start it: it runs in a fresh context, so its log lines carry no socket's ids."""
    return loop.create_task(coroutine, name=name, context=contextvars.Context())


def process_timer(loop, delay: float, callback, *args):
    """`loop.call_later` for the process's own work, outside any socket's log context."""
    return loop.call_later(delay, callback, *args, context=contextvars.Context())


class SocketContext(logging.Filter):
    """Puts the socket's ids on every record logged in its context (JSON fields, or a
    ` [user_id=… connection_id=… chat_id=…]` suffix in text logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = socket_context.get()
        suffix = ""
        if context:
            for key in _CONTEXT_FIELDS:
                if key in context and not hasattr(record, key):
                    setattr(record, key, context[key])
            suffix = (
                " [" + " ".join(f"{k}={context[k]}" for k in _CONTEXT_FIELDS if k in context) + "]"
            )
        record.socket = suffix
        return True


def redact(text: str) -> str:
    return TOKEN_IN_TEXT.sub(REDACTED, text)


def _redacted_str(value) -> str:
    """What JSON cannot hold as it is (a request, say) goes out as its redacted str()."""
    return redact(str(value))


class RedactTokens(logging.Filter):
    """Rewrites a record so that no `token=` value of a query string reaches a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message.lower():
            record.msg = redact(message)
            record.args = None
        if record.exc_info and not record.exc_text:
            # Formatters print exc_text when set: a traceback may quote a URL too.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with the record's `extra=` context as fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                # Context is redacted too: django.request's `request` prints its full path.
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=_redacted_str).decode()
