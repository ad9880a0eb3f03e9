"""Who is online: a count of open connections per user in this process."""

from collections import Counter

_connections: Counter = Counter()


def connected(user_id) -> bool:
    """Count a new connection; True when it is the user's first (they came online)."""
    key = str(user_id)
    _connections[key] += 1
    return _connections[key] == 1


def disconnected(user_id) -> bool:
    """Forget a connection; True when it was the user's last (they went offline)."""
    key = str(user_id)
    if _connections[key] <= 1:
        _connections.pop(key, None)
        return True
    _connections[key] -= 1
    return False


def online_among(user_ids) -> list[str]:
    return sorted((str(user_id) for user_id in user_ids if str(user_id) in _connections), key=int)
