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
    """None when Redis answers (or none is configured); else one line naming the setting."""
    if settings.REDIS_CLUSTER_NODES:
        return _cluster_problem()
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


def _cluster_problem() -> str | None:
    """None when a node of REDIS_CLUSTER_NODES answers and says the cluster is up."""
    import redis

    from messaging.realtime.redis_cluster import cluster_nodes

    error: Exception | str = "no node listed"
    for host, port in cluster_nodes(settings.REDIS_CLUSTER_NODES):
        client = redis.Redis(
            host=host,
            port=port,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
        )
        try:
            state = client.execute_command("CLUSTER", "INFO")
            state = state.decode() if isinstance(state, bytes) else str(state)
            if "cluster_state:ok" in state:
                return None
            error = "cluster_state is not ok"
        except Exception as exc:
            error = exc
        finally:
            client.close()
    return (
        f"Redis Cluster at REDIS_CLUSTER_NODES={settings.REDIS_CLUSTER_NODES} is unavailable "
        f"({_first_line(error)}); serving this process's own sockets until it is back"
    )


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
