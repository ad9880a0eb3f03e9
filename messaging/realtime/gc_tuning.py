"""The server process's cyclic garbage collector, tuned for an event loop holding thousands of sockets.

A socket keeps about a hundred container objects alive (its uvicorn protocol,
parser, coroutines, the consumer's sets and queues). CPython's full collection
walks every one of them, and with the default thresholds a burst of connections
or a few seconds of load set one off again and again: with 5,000 sockets each
full collection stopped the event loop for 0.3 to 0.6 s, seven of them during the
5,000 connects, nine in 35 s at 3,500 msg/s after them (docs/benchmarks.md,
2026-12-04b). So `manage.py serve`, once started:

- freezes what exists at that point (Django, the URL conf, the models, the
  settings): `gc.freeze()` moves it out of every later collection;
- raises the thresholds (`GC_THRESHOLDS`, default 20000,10,10): a young
  collection every 20,000 net allocations instead of 700, so objects of work in
  flight (a batch being stored, a frame being fanned out) are mostly gone before
  a collection sees them and are not promoted to the old generation;
- times every collection: `biogram_gc_pause_seconds{generation=…}` on `/metrics`,
  beside `biogram_gc_threshold{generation=…}` and `biogram_gc_frozen_objects`.

Nothing is disabled: cyclic garbage is still collected, later.
"""

import gc
import time

from django.conf import settings
from prometheus_client.core import REGISTRY, GaugeMetricFamily

from messaging import metrics

_started_at: list[float] = []


def tune() -> None:
    """Apply GC_FREEZE and GC_THRESHOLDS to this process and time its collections."""
    if settings.GC_FREEZE:
        gc.collect()  # what startup left as garbage is freed, not frozen
        gc.freeze()
    if settings.GC_THRESHOLDS:
        gc.set_threshold(*settings.GC_THRESHOLDS)
    if _time_collection not in gc.callbacks:
        gc.callbacks.append(_time_collection)
        REGISTRY.register(_Settings())


def _time_collection(phase: str, info: dict) -> None:
    if phase == "start":
        _started_at[:] = [time.perf_counter()]
    elif _started_at:
        metrics.GC_PAUSE_SECONDS.labels(generation=str(info["generation"])).observe(
            time.perf_counter() - _started_at.pop()
        )


class _Settings:
    """What `tune` set, as this process has it now."""

    def collect(self):
        threshold = GaugeMetricFamily(
            "biogram_gc_threshold",
            "The garbage collector's threshold per generation (GC_THRESHOLDS).",
            labels=["generation"],
        )
        for generation, value in enumerate(gc.get_threshold()):
            threshold.add_metric([str(generation)], value)
        yield threshold
        yield GaugeMetricFamily(
            "biogram_gc_frozen_objects",
            "Objects frozen out of collections at startup (GC_FREEZE).",
            value=gc.get_freeze_count(),
        )
