"""Delivered announcements: at most one a second per member and chat, the latest position winning.

A device reports `delivered` for every message it shows, so a busy chat would
announce each member's position many times a second. The position is stored at
once (`services.mark_delivered`); its announcement goes out at once when the
member's last one in that chat is older than the interval, else once the
interval is over, carrying the latest position reported meanwhile. One thread
keeps the deadlines of the whole process (a timer thread per member would not
scale); announcing is `events.publish`, which never waits on Redis.
"""

import heapq
import threading
import time

from django.conf import settings

from messaging import events, protocol

_lock = threading.Condition()
_last: dict[tuple[int, int], float] = {}  # (chat, user) -> when its last announcement left
_pending: dict[tuple[int, int], int] = {}  # (chat, user) -> the latest position not yet announced
_due: list[tuple[float, tuple[int, int]]] = []  # heap of (deadline, key) for the pending
_thread: threading.Thread | None = None


def _interval() -> float:
    return settings.DELIVERED_ANNOUNCE_INTERVAL_MS / 1000


def announce(chat_id: int, user_id: int, seq: int) -> None:
    """Announce that `user_id` has chat `chat_id` up to `seq`, now or at the end of the interval."""
    key = (chat_id, user_id)
    now = time.monotonic()
    with _lock:
        last = _last.get(key)
        if last is None or now - last >= _interval():
            _last[key] = now
            _pending.pop(key, None)
            if len(_last) > 10_000:
                _forget_older_than(now - _interval())
        else:
            if key not in _pending:
                heapq.heappush(_due, (last + _interval(), key))
                _start()
                _lock.notify()
            _pending[key] = max(seq, _pending.get(key, 0))
            return
    _publish(chat_id, user_id, seq)


def _publish(chat_id: int, user_id: int, seq: int) -> None:
    frame = events.chat_frame_event(
        chat_id, protocol.delivered_frame(chat_id=chat_id, user_id=user_id, seq=seq)
    )
    events.publish(events.chat_group(chat_id), frame)


def _forget_older_than(moment: float) -> None:
    for key in [k for k, at in _last.items() if at < moment and k not in _pending]:
        del _last[key]


def _start() -> None:
    global _thread
    if _thread is None or not _thread.is_alive():
        _thread = threading.Thread(target=_run, name="delivered-announcer", daemon=True)
        _thread.start()


def _run() -> None:
    while True:
        with _lock:
            while not _due or _due[0][0] > time.monotonic():
                _lock.wait(None if not _due else _due[0][0] - time.monotonic())
            _, key = heapq.heappop(_due)
            seq = _pending.pop(key, None)
            if seq is not None:
                _last[key] = time.monotonic()
        if seq is not None:
            try:
                _publish(*key, seq)
            except Exception:  # publish logs its own failures; the thread must live on
                continue


def reset() -> None:
    """Forget every announcement (tests start each one clean)."""
    with _lock:
        _last.clear()
        _pending.clear()
        _due.clear()
