"""BatchRunner (messaging/realtime/batching.py): requests that arrive while a batch runs join the
next one, handled and answered in order; the runner's thread takes that next batch itself."""

import asyncio
import threading
import time

import pytest

from messaging.realtime.batching import BatchRunner


async def test_the_runner_takes_its_next_batch_while_the_event_loop_is_busy():
    """Requests made while a batch runs go together in the next one, and the runner's thread
    starts it as soon as the first ends, even while the event loop is busy (here blocked):
    it does not wait for the loop to hand the batch over. Answers come in order."""
    started, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def handle(items):
        batches.append(list(items))
        if items == [0]:
            started.set()
            release.wait(5)
        return [item * 10 for item in items]

    runner = BatchRunner(handle, name="test-runner")
    first = runner.enqueue(0)
    await asyncio.to_thread(started.wait, 5)
    rest = [runner.enqueue(n) for n in range(1, 6)]

    release.set()
    deadline = time.monotonic() + 5
    while len(batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)  # noqa: ASYNC251 - the event loop kept busy on purpose

    assert batches == [[0], [1, 2, 3, 4, 5]]
    assert await first == 0
    assert [await future for future in rest] == [10, 20, 30, 40, 50]


async def test_requests_of_one_turn_of_the_loop_go_in_one_batch():
    """A burst (handshakes read in one turn of the event loop) is one batch, not a batch of
    one for its first request and another for the rest."""
    batches: list[list[int]] = []

    def handle(items):
        batches.append(list(items))
        return list(items)

    runner = BatchRunner(handle, name="test-runner-burst")
    futures = [runner.enqueue(n) for n in range(5)]
    assert [await future for future in futures] == [0, 1, 2, 3, 4]
    assert await runner.submit(5) == 5
    assert batches == [[0, 1, 2, 3, 4], [5]]


async def test_a_start_queued_on_a_loop_that_closed_does_not_stall_the_next_loop():
    runner = BatchRunner(lambda items: list(items), name="test-runner-loops")

    def enqueue_on_a_loop_that_stops_at_once():
        loop = asyncio.new_event_loop()

        def enqueue():
            loop.stop()  # the loop ends with this turn: the start queued for the next never runs
            runner.enqueue("left behind")

        loop.call_soon(enqueue)
        loop.run_forever()
        loop.close()

    await asyncio.to_thread(enqueue_on_a_loop_that_stops_at_once)
    assert runner.starting is not None and runner.starting.is_closed()
    assert await asyncio.wait_for(runner.submit("here"), 5) == "here"


async def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_still_runs():
    started, gate = threading.Event(), threading.Event()

    def handle(items):
        if "first" in items:
            started.set()
            gate.wait(5)  # the next three arrive meanwhile: one batch
        if "bad" in items:
            raise ValueError("the database said no")
        return [f"{item} done" for item in items]

    runner = BatchRunner(handle, name="test-runner-failing")
    first = runner.enqueue("first")
    await asyncio.to_thread(started.wait, 5)
    together = [runner.enqueue(item) for item in ("a", "bad", "b")]
    gate.set()
    assert await first == "first done"
    for future in together:
        with pytest.raises(ValueError, match="the database said no"):
            await future
    assert await runner.submit("c") == "c done"


async def test_an_answer_for_a_caller_that_went_away_is_dropped_and_the_others_get_theirs():
    gate = threading.Event()

    def handle(items):
        gate.wait(5)
        return list(items)

    runner = BatchRunner(handle, name="test-runner-cancelled")
    gone, kept = runner.enqueue(1), runner.enqueue(2)
    gone.cancel()
    gate.set()
    assert await kept == 2
    assert gone.cancelled()
