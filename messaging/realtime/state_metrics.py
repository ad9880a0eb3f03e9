"""What this process holds for its sockets, read at each scrape of /metrics: where a leak would show.

Every socket adds entries to a few structures (the layer's sinks and group
memberships, the sequencer's per-chat order, presence counts, the access
watch, the outbox) and must remove them when it closes, however it closes.
`biogram_socket_state{kind=…}` reports their sizes, so an operator (and
`test_socket_state_leaks.py`) sees them return to what the open sockets
explain, and `biogram_event_loop_tasks{coroutine=…}` the tasks alive in the serving loop.
"""

import asyncio
import concurrent.futures
from collections import Counter

from channels.layers import get_channel_layer
from prometheus_client.core import REGISTRY, GaugeMetricFamily

SNAPSHOT_TIMEOUT = 2.0  # seconds a scrape waits for the event loop to answer


def snapshot() -> dict:
    """The sizes, read in the serving event loop (the only thread that changes them)."""
    from messaging.realtime import presence
    from messaging.realtime.access import watch
    from messaging.realtime.consumer import live_consumers

    layer = get_channel_layer()
    consumers = list(live_consumers)
    sizes = {
        "consumers": len(consumers),
        "outbox_frames": sum(c.outbox.backlog for c in consumers),
        "presence_users": len(presence._connections),
        "access_watched_users": len(watch.sockets),
    }
    if hasattr(layer, "sinks"):
        orders = layer.sequencer.chats.values()
        sizes.update(
            layer_sinks=len(layer.sinks),
            layer_queues=len(layer.channels),
            layer_groups=len(layer.groups),
            layer_group_members=sum(len(members) for members in layer.groups.values()),
            layer_channels_in_groups=len(layer.memberships),
            sequencer_chats=len(orders),
            sequencer_held=sum(len(order.held) for order in orders),
        )
    loop = getattr(layer, "loop", None)
    if loop is not None and not loop.is_closed():
        tasks = Counter(
            getattr(task.get_coro(), "__qualname__", "other") for task in asyncio.all_tasks(loop)
        )
        sizes["event_loop_tasks"] = tasks
    return sizes


def _read() -> dict | None:
    loop = getattr(get_channel_layer(), "loop", None)
    if loop is None or not loop.is_running():
        return snapshot()
    try:
        if asyncio.get_running_loop() is loop:
            return snapshot()
    except RuntimeError:
        pass  # a scrape runs in a worker thread: ask the loop
    answer: concurrent.futures.Future = concurrent.futures.Future()

    def read_in_loop():
        try:
            answer.set_result(snapshot())
        except Exception as exc:
            answer.set_exception(exc)

    loop.call_soon_threadsafe(read_in_loop)
    try:
        return answer.result(timeout=SNAPSHOT_TIMEOUT)
    except concurrent.futures.TimeoutError:
        return None  # the loop is too busy to answer: leave the gauges out of this scrape


class SocketStateCollector:
    def collect(self):
        sizes = _read()
        if sizes is None:
            return
        tasks: Counter | None = sizes.pop("event_loop_tasks", None)
        state = GaugeMetricFamily(
            "biogram_socket_state",
            "Entries this process holds for its sockets, by structure (a leak grows one).",
            labels=["kind"],
        )
        for kind, size in sizes.items():
            state.add_metric([kind], size)
        yield state
        if tasks is not None:
            by_coroutine = GaugeMetricFamily(
                "biogram_event_loop_tasks",
                "Tasks alive in the serving event loop, by the coroutine they run.",
                labels=["coroutine"],
            )
            for coroutine, count in sorted(tasks.items()):
                by_coroutine.add_metric([coroutine], count)
            yield by_coroutine


_registered = False


def register() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(SocketStateCollector())
        _registered = True
