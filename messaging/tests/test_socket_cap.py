"""The cap on open sockets per user: the newest past it is refused with 4029, the others stay."""

from conftest import token_for


async def test_the_newest_socket_past_the_per_user_cap_is_refused_with_4029(
    user, connect, settings
):
    settings.WS_MAX_SOCKETS_PER_USER = 2
    first = await connect(user)
    second = await connect(user)

    third = await connect(token=token_for(user))

    frame = await third.receive()
    assert frame["type"] == "error", frame
    assert frame["data"]["code"] == "rate_limited"
    assert "Too many open connections (2)" in frame["data"]["message"]
    assert await third.closed_with() == 4029
    await first.send("ping")
    assert (await first.receive_type("pong"))["type"] == "pong"
    await second.send("ping")
    assert (await second.receive_type("pong"))["type"] == "pong"


async def test_closing_a_socket_makes_room_under_the_cap(user, connect, settings):
    settings.WS_MAX_SOCKETS_PER_USER = 1
    first = await connect(user)
    await first.send("disconnect")
    assert await first.closed_with() == 1000
    await first.communicator.disconnect()  # the server's websocket.disconnect, as uvicorn sends

    again = await connect(user)

    assert again.connect_frame["data"]["userId"] == str(user.pk)


async def test_the_cap_counts_each_user_separately(user, other_user, chat, connect, settings):
    settings.WS_MAX_SOCKETS_PER_USER = 1
    await connect(user)

    bob = await connect(other_user)

    assert bob.connect_frame["type"] == "connect"
