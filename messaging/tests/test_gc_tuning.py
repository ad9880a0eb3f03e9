"""The served process's garbage collector: startup heap frozen, thresholds from GC_THRESHOLDS,
every collection timed (messaging/realtime/gc_tuning.py)."""

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(server) -> dict:
    body = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_a_served_process_takes_its_gc_thresholds_and_freezes_its_startup_heap(
    start_live_server, user
):
    server = start_live_server(GC_THRESHOLDS="3000,15,12")
    samples = scrape(server)
    thresholds = [samples[("biogram_gc_threshold", (("generation", str(g)),))] for g in range(3)]
    assert thresholds == [3000, 15, 12]
    # Django, the URL conf and the models exist before the server starts: tens of thousands.
    assert samples[("biogram_gc_frozen_objects", ())] > 10_000


async def test_a_served_process_times_its_collections(start_live_server, user, open_socket):
    server = await asyncio.to_thread(start_live_server, GC_THRESHOLDS="1000,10,10")
    sockets = [await open_socket(server, user) for _ in range(15)]
    for socket in sockets:
        await socket.close()
    samples = await asyncio.to_thread(scrape, server)
    young = samples.get(("biogram_gc_pause_seconds_count", (("generation", "0"),)), 0)
    assert young > 0, "no young collection was timed"
    assert samples[("biogram_gc_pause_seconds_sum", (("generation", "0"),))] > 0
