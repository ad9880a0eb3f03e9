"""Prometheus metrics of this process, served at /metrics."""

import functools

from prometheus_client import Counter, Gauge, Histogram

OPEN_SOCKETS = Gauge("biogram_open_sockets", "WebSocket connections open in this process.")
CONNECTS = Counter("biogram_socket_connects_total", "Accepted WebSocket connections.")
DISCONNECTS = Counter(
    "biogram_socket_disconnects_total", "Closed WebSocket connections, by close code.", ["code"]
)
FRAMES_IN = Counter("biogram_frames_in_total", "Frames received from clients, by type.", ["type"])


@functools.cache
def frames_in(frame_type: str):
    """FRAMES_IN of one frame type ("invalid" or a type the protocol knows: a closed set),
    looked up once instead of per frame (`labels()` validates its arguments every call)."""
    return FRAMES_IN.labels(type=frame_type)


ERRORS = Counter("biogram_errors_total", "Error frames sent, by code.", ["code"])
MESSAGES_STORED = Counter("biogram_messages_stored_total", "Messages stored.")
LAYER_SEND_FAILURES = Counter(
    "biogram_layer_send_failures_total", "Channel-layer sends that failed."
)
RATE_LIMITED = Counter("biogram_rate_limited_total", "Messages refused by the rate limit.")
SLOW_CLIENT_DISCONNECTS = Counter(
    "biogram_slow_client_disconnects_total",
    "Clients closed because their outbound queue overflowed.",
)
FANOUT_SECONDS = Histogram(
    "biogram_fanout_seconds",
    "From a message's storage to its send on the last local connection.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
NOTIFICATIONS_CLAIMED = Counter(
    "biogram_notifications_claimed_total", "Notifications decided by this process's notifier."
)
NOTIFICATION_DISPATCHES = Counter(
    "biogram_notification_dispatches_total",
    "Pushes and webhook calls attempted by this process, by kind and outcome.",
    ["kind", "outcome"],
)
SYNC_REQUESTS = Counter(
    "biogram_sync_requests_total", "Chats asked for by sync frames (one per chat of a frame)."
)
SYNC_PAGES_READ = Counter(
    "biogram_sync_pages_read_total",
    "Sync pages read from the database: identical requests in a batch share one read.",
)
GC_PAUSE_SECONDS = Histogram(
    "biogram_gc_pause_seconds",
    "Collections of the cyclic garbage collector, by generation, and how long each stopped the"
    " process (messaging/realtime/gc_tuning.py).",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
