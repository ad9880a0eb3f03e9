"""What the server relies on in its libraries' internals, checked against the installed versions.

Each test names the behaviour, where we rely on it, and fails with a message
that says what to revisit if an upgrade changes it (README, "Pinned for a reason").
"""

import asyncio
import contextlib

import pytest
import uvicorn
from websockets.asyncio.client import connect as ws_connect

from messaging import storage
from messaging.models import Message
from messaging.realtime.consumer import ChatConsumer
from messaging.realtime.server import ChatServer
from messaging.realtime.socket import SocketConsumer
from messaging.testing import serving_asgi

FRAMES = 200


async def test_uvicorn_sansio_send_finishes_without_suspending_while_the_socket_is_writable():
    """The outbox (messaging/realtime/outbox.py) starts uvicorn's `send` coroutine by hand and
    counts on it finishing at once while the transport takes data: a delivery then needs no task."""
    finished_at_once = []

    async def app(scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        for n in range(FRAMES):
            coroutine = send({"type": "websocket.send", "text": str(n)})
            try:
                coroutine.send(None)
            except StopIteration:
                finished_at_once.append(True)
            else:
                finished_at_once.append(False)
                coroutine.close()
                break
        await send({"type": "websocket.close", "code": 1000})

    async with serving_asgi(app) as (_, url), ws_connect(url) as client:
        received = [message async for message in client]

    assert all(finished_at_once) and len(finished_at_once) == FRAMES, (
        f"uvicorn {uvicorn.__version__}'s sans-I/O send suspended on a writable socket: the outbox's "
        "synchronous fast path no longer applies; revisit messaging/realtime/outbox.py"
    )
    assert received == [str(n) for n in range(FRAMES)]


async def test_uvicorn_calls_server_shutdown_while_sockets_are_still_open():
    """ChatServer (messaging/realtime/server.py) overrides `uvicorn.Server.shutdown` to say
    `disconnect` (server_shutdown) on every socket before uvicorn closes them."""
    open_at_shutdown = []

    class Recording(uvicorn.Server):
        async def shutdown(self, sockets=None):
            open_at_shutdown.append(len(self.server_state.connections))
            await super().shutdown(sockets=sockets)

    connected = asyncio.Event()

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        connected.set()
        while (await receive())["type"] != "websocket.disconnect":
            pass

    async with (
        serving_asgi(app, server_class=Recording) as (server, url),
        ws_connect(url) as client,
    ):
        await connected.wait()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.recv(), 5)

    assert open_at_shutdown == [1], (
        f"uvicorn {uvicorn.__version__} no longer calls Server.shutdown with the sockets open: "
        "ChatServer's `server_shutdown` notice would come too late; revisit messaging/realtime/server.py"
    )
    assert "shutdown" in ChatServer.__dict__


def test_the_consumer_refuses_the_sends_that_would_bypass_its_outbox():
    consumer = ChatConsumer()

    for bypass in (consumer.send({"type": "websocket.send", "text": "x"}), consumer.close(1000)):
        with pytest.raises(TypeError, match="outbox"):
            bypass.send(None)
    assert issubclass(ChatConsumer, SocketConsumer)


def test_message_instance_needs_every_field_of_the_message_model():
    """storage.message_instance skips Model.__init__: a field added to Message must be given."""
    every = {name: None for name in storage.MESSAGE_FIELDS}

    assert {f.attname for f in Message._meta.concrete_fields} == storage.MESSAGE_FIELDS
    storage.message_instance(**every)
    with pytest.raises(TypeError, match="missing \\['deleted_at'\\]"):
        storage.message_instance(**{k: v for k, v in every.items() if k != "deleted_at"})
    with pytest.raises(TypeError, match="unknown \\['colour'\\]"):
        storage.message_instance(**every, colour="red")


def test_a_message_built_for_a_stored_row_equals_the_row_read_back(user, chat):
    from messaging import services

    ((built, created),) = services.store_messages(
        [services.Outgoing(user, chat.pk, "hello", "contract-1")]
    )

    loaded = Message.objects.get(pk=built.pk)
    assert created
    for field in Message._meta.concrete_fields:
        assert getattr(built, field.attname) == getattr(loaded, field.attname), field.name


def test_daphne_still_closes_through_autobahn_as_the_dev_server_shim_expects():
    """messaging/realtime/daphne_compat.py replaces daphne's `serverClose` and writes refused
    codes with autobahn's `sendCloseFrame(code=…, isReply=…)`."""
    import inspect

    from autobahn.websocket.protocol import WebSocketProtocol as Autobahn
    from daphne.ws_protocol import WebSocketProtocol as Daphne

    assert "code" in inspect.signature(Daphne.serverClose).parameters, (
        "daphne's WebSocketProtocol.serverClose changed: revisit messaging/realtime/daphne_compat.py"
    )
    assert {"code", "isReply"} <= set(inspect.signature(Autobahn.sendCloseFrame).parameters), (
        "autobahn's sendCloseFrame changed: revisit messaging/realtime/daphne_compat.py"
    )
