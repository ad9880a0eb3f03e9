"""Checks at start: the database must be reachable (else one line and exit), Redis should be (one line)."""

import sys
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db import connection

REDIS_TIMEOUT_SECONDS = 2.0


def masked(url: str) -> str:
    """A URL without its password, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def database_problem() -> str | None:
    """None when the database answers; else one line saying what and where."""
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        where = (
            f"DATABASE_URL={masked(settings.DATABASE_URL_GIVEN)}"
            if settings.DATABASE_URL_GIVEN
            else f"the SQLite database {connection.settings_dict['NAME']} (DATABASE_URL is unset)"
        )
        return f"Cannot reach {where}: {_first_line(error)}"
    finally:
        connection.close()
    return None


def redis_problem() -> str | None:
    """None when Redis answers (or none is configured); else one line naming REDIS_URL."""
    if not settings.REDIS_URL:
        return None
    import redis

    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:
        return (
            f"Redis at REDIS_URL={masked(settings.REDIS_URL)} is unreachable ({_first_line(error)});"
            " serving this process's own sockets until it is back"
        )
    return None


def run(*, stderr=None) -> bool:
    """Print what is wrong, one line each; False when the server cannot start."""
    stderr = stderr or sys.stderr
    problem = database_problem()
    if problem is not None:
        print(problem, file=stderr)
        return False
    problem = redis_problem()
    if problem is not None:
        print(problem, file=stderr)
    return True
