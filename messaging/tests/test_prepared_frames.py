"""Frames framed once for every member (messaging/realtime/wire.py): the same bytes websockets
would have sent, in the same order, on a real socket, falling back to ASGI `send` whenever the
socket would not take a frame at once."""

import asyncio

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.frames import Frame, Opcode

from messaging.realtime import wire
from messaging.realtime.outbox import Outbox
from messaging.realtime.wire import (
    PREPARED_FRAMES,
    ChatWebSocketProtocol,
    corked,
    prepared,
    text_frame,
)
from messaging.testing import serving_asgi


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_prepared_frame_is_the_bytes_websockets_would_send(length):
    text = ("é" + "x" * length)[:length] if length else ""
    expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    assert text_frame(text) == expected


def test_the_same_text_object_is_framed_once_and_an_equal_new_one_again():
    text = "".join(["hello ", "members"])
    first = prepared(text)
    assert prepared(text) is first
    other = "".join(["hello ", "members"])  # equal, not the same object
    assert prepared(other) == first and prepared(other) is not first


def serving(app, *, deflate=False):
    """`app` on the server's WebSocket protocol (`ChatWebSocketProtocol`)."""
    return serving_asgi(app, ws=ChatWebSocketProtocol, deflate=deflate)


def pushing_app(
    frames: list[str], outcomes: list, *, at_once: int | None = None, pushed_while_draining=None
):
    """Push the frames through an Outbox, recording what each prepared write said: `at_once` of
    them (all by default) at once, then each as soon as the transport takes data again while
    earlier frames still wait in the outbox (recorded in `pushed_while_draining`)."""

    async def app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        write = scope["extensions"].get(PREPARED_FRAMES)

        def recorded(frame: bytes) -> bool:
            outcomes.append(ok := write(frame))
            return ok

        outbox = Outbox(
            send, limit=len(frames) + 1, on_overflow=lambda: None, write_prepared=write and recorded
        )
        for n, text in enumerate(frames):
            if at_once is not None and n >= at_once:
                # Push when the transport takes data again while frames still wait their turn.
                protocol = write.__self__
                for _ in range(10_000):
                    await asyncio.sleep(0)
                    if protocol.writable.is_set() and outbox.backlog:
                        pushed_while_draining.append(n)
                        break
            outbox.push(text)
        outbox.close(1000)
        await outbox.flushed()
        while (await receive())["type"] != "websocket.disconnect":
            pass

    return app


async def test_frames_arrive_whole_and_in_order_when_the_socket_backs_up_midway():
    """2,000 frames of 10 KB at once to a client that reads nothing at first, then 1,000 more
    one by one while it catches up: the first go out as prepared bytes, the transport pauses,
    the rest wait in ASGI `send`; frames pushed while those drain (the transport writable
    again) queue behind them; all arrive in order."""
    frames = [f"{n:05d}" + "x" * 10_000 for n in range(3000)]
    outcomes: list[bool] = []
    draining: list[int] = []
    app = pushing_app(frames, outcomes, at_once=2000, pushed_while_draining=draining)
    async with serving(app) as (_, url), ws_connect(url, max_queue=None, max_size=None) as client:
        await asyncio.sleep(0.5)  # the server fills the socket meanwhile
        received = [message async for message in client]
    assert received == frames
    assert draining, "no frame was pushed while earlier ones drained"
    assert True in outcomes, "no frame went out prepared"
    assert False in outcomes, "the socket never backed up: the fallback was not exercised"


async def test_a_socket_with_compression_gets_no_prepared_frames():
    """Compressed frames differ per socket: a socket that negotiated permessage-deflate is
    offered no prepared writes, and its frames still arrive (compressed by `send`)."""
    frames = [f"frame {n} " * 20 for n in range(50)]
    outcomes: list[bool] = []
    app = pushing_app(frames, outcomes)
    async with (
        serving(app, deflate=True) as (_, url),
        ws_connect(url, compression="deflate") as client,
    ):
        assert client.protocol.extensions, "the client did not negotiate compression"
        received = [message async for message in client]
    assert received == frames
    assert outcomes == []


async def test_frames_pushed_while_corked_go_out_together_at_the_end_before_what_is_sent_after():
    """A batch's frames for one socket are held while `corked()` and written in one `write`
    when it ends; a `send` inside the block (here the close) goes out after them, not before."""
    frames = [f"batch frame {n}" for n in range(5)]
    held_inside: list[int] = []

    async def app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        write = scope["extensions"][PREPARED_FRAMES]
        outbox = Outbox(send, limit=10, on_overflow=lambda: None, write_prepared=write)
        with corked():
            for text in frames[:3]:
                outbox.push(text)
            held_inside.append(len(wire._corks.held[write.__self__]))
            outbox.close(1000)  # through ASGI `send`: the held frames first
            for text in frames[3:]:
                outbox.push(text)  # after the close: dropped
        await outbox.flushed()
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async with serving(app) as (_, url), ws_connect(url) as client:
        received = [message async for message in client]
        code = client.close_code
    assert held_inside == [3]
    assert received == frames[:3]
    assert code == 1000
    assert wire._corks.held is None


async def test_frames_corked_in_another_thread_are_not_held_here():
    """Each serving loop's thread has its own cork: while another thread is corked, this loop's
    prepared frames still go out at once."""
    other_started, release = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def cork_in_a_thread():
        with corked():
            loop.call_soon_threadsafe(other_started.set)
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)

    async def app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        write = scope["extensions"][PREPARED_FRAMES]
        outbox = Outbox(send, limit=30, on_overflow=lambda: None, write_prepared=write)
        for n in range(20):
            outbox.push(f"frame {n}")
        while (await receive())["type"] != "websocket.disconnect":
            pass

    holder = loop.run_in_executor(None, cork_in_a_thread)
    await other_started.wait()
    try:
        async with serving(app) as (_, url), ws_connect(url) as client:
            received = [await asyncio.wait_for(client.recv(), 2) for _ in range(20)]
    finally:
        release.set()
        await holder
    assert received == [f"frame {n}" for n in range(20)]


async def test_tasks_woken_together_write_to_a_socket_once_and_nothing_stays_held():
    """`corked_wakeups`: the tasks a batch's results wake write their frames for one socket in
    one `write`, in the order they ran, after the frames written before; once they have run,
    a frame goes out at once again."""
    writes: list[bytes] = []
    done = asyncio.Event()

    async def app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        write = scope["extensions"][PREPARED_FRAMES]
        transport = write.__self__.transport
        real_write = transport.write

        def counted(data):
            writes.append(bytes(data))
            real_write(data)

        transport.write = counted
        outbox = Outbox(send, limit=30, on_overflow=lambda: None, write_prepared=write)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(5)]

        async def member(future):
            outbox.push(f"woken {await future}")

        outbox.push("before")
        tasks = [asyncio.create_task(member(future)) for future in futures]
        await asyncio.sleep(0)  # all five wait on their futures

        def wake():
            for n, future in enumerate(futures):
                future.set_result(n)

        wire.corked_wakeups(loop, wake)
        await asyncio.gather(*tasks)
        assert wire._corks.held is None
        outbox.push("after")
        done.set()
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async with serving(app) as (_, url), ws_connect(url) as client:
        received = [await asyncio.wait_for(client.recv(), 2) for _ in range(7)]
        await asyncio.wait_for(done.wait(), 2)
    woken = [f"woken {n}" for n in range(5)]
    assert received == ["before", *woken, "after"]
    assert writes[:3] == [  # then the close frame, when the client leaves
        text_frame("before"),
        b"".join(text_frame(text) for text in woken),
        text_frame("after"),
    ]
