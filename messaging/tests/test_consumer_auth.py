"""The socket's handshake and lifetime: Origin, token and session, userId, the connect frame, `auth`, expiry."""

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.test import Client as DjangoClient
from rest_framework_simplejwt.tokens import AccessToken

from accounts.tests import forgery
from conftest import db_call, make_user, token_for
from messaging import services

ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def token_expiring_in(someone, seconds: float) -> str:
    """An access token of `someone` whose `exp` lies `seconds` from now (negative: already past)."""
    token = AccessToken.for_user(someone)
    token.set_exp(lifetime=timedelta(seconds=seconds))
    return str(token)


def session_cookie(someone) -> tuple[bytes, bytes]:
    """The Cookie header of a browser logged in to the project's pages as `someone`."""
    browser = DjangoClient()
    browser.force_login(someone)
    name = settings.SESSION_COOKIE_NAME
    return b"cookie", f"{name}={browser.cookies[name].value}".encode()


def parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


async def assert_refused(client, code: str, close_code: int):
    error = await client.receive()
    assert error == {
        "type": "error",
        "data": {"code": code, "message": error["data"]["message"], "ref": None},
    }
    assert await client.closed_with() == close_code


# ---------------------------------------------------------------- refused tokens


async def test_connection_without_token_is_refused_with_4001(transactional_db, connect):
    client = await connect(query="")

    assert client.accepted
    await assert_refused(client, "unauthorized", 4001)


async def test_connection_with_malformed_token_is_refused_with_4001(transactional_db, connect):
    client = await connect(token="not.a.jwt")

    await assert_refused(client, "unauthorized", 4001)


async def test_connection_with_expired_token_is_refused_with_4001(user, connect):
    expired = token_expiring_in(user, -60)

    client = await connect(token=expired)

    await assert_refused(client, "unauthorized", 4001)


async def test_connection_with_token_of_inactive_user_is_refused_with_4001(
    transactional_db, connect
):
    banned = await db_call(make_user)("dave", is_active=False)

    client = await connect(token=token_for(banned))

    await assert_refused(client, "unauthorized", 4001)


async def test_connection_with_refresh_token_is_refused_with_4001(user, connect):
    from rest_framework_simplejwt.tokens import RefreshToken

    refresh = await db_call(lambda: str(RefreshToken.for_user(user)))()

    client = await connect(token=refresh)

    await assert_refused(client, "unauthorized", 4001)


async def test_user_id_of_another_user_is_refused_with_4003(user, other_user, connect):
    query = f"token={token_for(user)}&userId={other_user.pk}"

    client = await connect(query=query)

    await assert_refused(client, "forbidden", 4003)


async def test_user_id_equal_to_the_tokens_user_is_accepted(user, connect):
    query = f"token={token_for(user)}&userId={user.pk}"

    client = await connect(query=query)

    frame = await client.receive()
    assert frame["type"] == "connect"
    assert frame["data"]["userId"] == str(user.pk)


async def test_refused_connections_never_receive_chat_data(user, other_user, chat, connect):
    alice = await connect(user)
    impostor = await connect(query=f"token={token_for(other_user)}&userId={user.pk}")
    anonymous = await connect(token="garbage")
    await assert_refused(impostor, "forbidden", 4003)
    await assert_refused(anonymous, "unauthorized", 4001)

    await alice.send("message", chatId=str(chat.pk), text="secret")
    await alice.send("typing", chatId=str(chat.pk))
    await db_call(services.send_message)(sender=user, chat_id=chat.pk, text="also secret")

    texts = {(await alice.receive_type("message"))["data"]["text"] for _ in range(2)}
    assert texts == {"secret", "also secret"}
    assert await impostor.nothing()
    assert await anonymous.nothing()


async def test_refused_connection_is_not_announced_as_online(user, other_user, chat, connect):
    alice = await connect(user)

    impostor = await connect(query=f"token={token_for(other_user)}&userId={user.pk}")
    await assert_refused(impostor, "forbidden", 4003)

    assert await alice.nothing()


async def test_refused_connection_ignores_frames(transactional_db, connect):
    client = await connect(token="garbage")
    await assert_refused(client, "unauthorized", 4001)

    await client.send("ping")

    assert await client.nothing()


# ---------------------------------------------------------------- forged tokens


async def test_unsigned_token_with_alg_none_is_refused_with_4001(user, connect):
    forged = forgery.unsigned(token_for(user))

    client = await connect(token=forged)

    await assert_refused(client, "unauthorized", 4001)


async def test_token_signed_with_another_key_is_refused_with_4001(user, connect):
    forged = forgery.signed_with_another_key(token_for(user))

    client = await connect(token=forged)

    await assert_refused(client, "unauthorized", 4001)


@pytest.mark.parametrize("algorithm", ["HS512", "RS256"])
async def test_token_whose_header_names_another_algorithm_is_refused_with_4001(
    user, connect, algorithm
):
    forged = forgery.with_algorithm(token_for(user), algorithm)

    client = await connect(token=forged)

    await assert_refused(client, "unauthorized", 4001)


async def test_token_with_a_tampered_user_id_is_refused_with_4001(user, other_user, connect):
    forged = forgery.with_user_id(token_for(user), other_user.pk)

    client = await connect(token=forged)

    await assert_refused(client, "unauthorized", 4001)


# ---------------------------------------------------------------- paths, session, Origin


async def test_root_path_works_like_ws_chat(user, other_user, chat, connect):
    alice = await connect(user, path="/")
    bob = await connect(other_user)

    await alice.send("message", chatId=str(chat.pk), text="old url")

    assert alice.connect_frame["data"]["userId"] == str(user.pk)
    assert (await bob.receive_type("message"))["data"]["text"] == "old url"


async def test_root_path_refuses_a_bad_token_too(transactional_db, connect):
    client = await connect(token="garbage", path="/")

    await assert_refused(client, "unauthorized", 4001)


async def test_session_cookie_authenticates_without_token(user, chat, connect):
    cookie = await db_call(session_cookie)(user)

    client = await connect(query="", headers=[cookie])

    frame = await client.receive()
    assert frame["type"] == "connect"
    assert frame["data"]["userId"] == str(user.pk)
    assert frame["data"]["chats"] == [str(chat.pk)]
    assert frame["data"]["tokenExpiresAt"] is None


async def test_session_connection_is_not_closed_for_expiry(user, connect):
    cookie = await db_call(session_cookie)(user)
    client = await connect(query="", headers=[cookie])
    await client.receive()

    await client.send("ping")

    assert (await client.receive())["type"] == "pong"


async def test_token_wins_over_session_cookie(user, other_user, connect):
    cookie = await db_call(session_cookie)(user)

    client = await connect(query=f"token={token_for(other_user)}", headers=[cookie])

    frame = await client.receive()
    assert frame["data"]["userId"] == str(other_user.pk)
    assert frame["data"]["tokenExpiresAt"] is not None


async def test_invalid_token_is_refused_even_with_a_session_cookie(user, connect):
    cookie = await db_call(session_cookie)(user)

    client = await connect(token="garbage", headers=[cookie])

    await assert_refused(client, "unauthorized", 4001)


async def test_foreign_or_null_origin_is_refused_at_handshake(user, connect):
    origins = [b"https://evil.example", b"null", b"http://localhost.evil.example", b"file://"]

    clients = [await connect(user, headers=[(b"origin", origin)]) for origin in origins]

    assert [client.accepted for client in clients] == [False] * len(origins)


async def test_same_host_origin_is_accepted(user, connect):
    client = await connect(user, headers=[(b"origin", b"http://localhost:8000")])

    assert client.accepted
    assert client.connect_frame["data"]["userId"] == str(user.pk)


async def test_origin_on_the_allow_list_is_accepted(user, connect, settings):
    settings.WS_ALLOWED_ORIGINS = ["https://app.example"]

    client = await connect(user, headers=[(b"origin", b"https://app.example")])

    assert client.accepted


async def test_missing_origin_is_accepted(user, connect):
    client = await connect(user)

    assert client.accepted
    assert client.connect_frame["type"] == "connect"


# ---------------------------------------------------------------- the connect frame


async def test_connect_frame_describes_user_chats_and_times(user, chat, group_chat, connect):
    token = AccessToken.for_user(user)
    before = datetime.now(UTC)

    client = await connect(token=str(token))
    frame = await client.receive()

    data = frame["data"]
    assert frame["type"] == "connect"
    assert set(data) == {
        "userId",
        "connectionId",
        "chats",
        "online",
        "serverTime",
        "tokenExpiresAt",
    }
    assert data["userId"] == str(user.pk)
    assert isinstance(data["connectionId"], str) and data["connectionId"]
    assert data["chats"] == sorted([str(chat.pk), str(group_chat.pk)], key=int)
    assert data["online"] == []
    assert ISO_MS.match(data["serverTime"])
    assert abs(parse_time(data["serverTime"]) - before) < timedelta(seconds=5)
    assert ISO_MS.match(data["tokenExpiresAt"])
    assert parse_time(data["tokenExpiresAt"]) == datetime.fromtimestamp(token["exp"], tz=UTC)


async def test_connect_frame_online_lists_only_connected_co_members(
    user, other_user, third_user, outsider, group_chat, connect
):
    await connect(other_user)
    await connect(outsider)

    alice = await connect(user)

    assert alice.connect_frame["data"]["online"] == [str(other_user.pk)]


async def test_each_connection_gets_its_own_connection_id(user, connect):
    first = await connect(user)

    second = await connect(user)

    assert (
        first.connect_frame["data"]["connectionId"] != second.connect_frame["data"]["connectionId"]
    )


async def test_connect_frame_comes_first(user, other_user, chat, connect):
    await connect(other_user)

    client = await connect(token=token_for(user))

    assert (await client.receive())["type"] == "connect"


# ---------------------------------------------------------------- auth frame and expiry


async def test_auth_with_fresh_token_of_same_user_answers_new_expiry(user, connect):
    alice = await connect(user)
    fresh = AccessToken.for_user(user)

    await alice.send("auth", token=str(fresh))

    frame = await alice.receive()
    assert frame["type"] == "auth"
    assert ISO_MS.match(frame["data"]["tokenExpiresAt"])
    assert parse_time(frame["data"]["tokenExpiresAt"]) == datetime.fromtimestamp(
        fresh["exp"], tz=UTC
    )


async def test_auth_with_token_of_another_user_is_unauthorized_and_keeps_socket(
    user, other_user, connect
):
    alice = await connect(user)

    await alice.send("auth", token=token_for(other_user))

    error = await alice.receive()
    assert error["type"] == "error"
    assert error["data"]["code"] == "unauthorized"
    assert error["data"]["ref"] == "auth"
    await alice.send("ping")
    assert (await alice.receive())["type"] == "pong"


async def test_auth_with_invalid_token_is_unauthorized_and_keeps_socket(user, connect):
    alice = await connect(user)

    await alice.send("auth", token="garbage")
    await alice.send("auth", token=token_expiring_in(user, -60))

    for _ in range(2):
        error = await alice.receive()
        assert error["data"]["code"] == "unauthorized"
        assert error["data"]["ref"] == "auth"
    await alice.send("ping")
    assert (await alice.receive())["type"] == "pong"


async def test_auth_without_token_is_bad_request(user, connect):
    alice = await connect(user)

    await alice.send("auth")
    await alice.send("auth", token=42)

    for _ in range(2):
        error = await alice.receive()
        assert error["data"]["code"] == "bad_request"
        assert error["data"]["ref"] == "auth"


async def test_expiring_token_closes_socket_with_disconnect_and_4001(user, connect):
    client = await connect(token=token_expiring_in(user, 2))
    await client.receive_type("connect")

    frame = await client.receive(timeout=4)

    assert frame == {
        "type": "disconnect",
        "data": {"userId": str(user.pk), "reason": "token_expired"},
    }
    assert await client.closed_with() == 4001


async def test_auth_with_fresh_token_keeps_socket_past_old_expiry(user, connect):
    client = await connect(token=token_expiring_in(user, 2))
    await client.receive_type("connect")
    started = time.monotonic()

    await client.send("auth", token=token_for(user))
    assert (await client.receive())["type"] == "auth"

    assert await client.nothing(timeout=2.5 - (time.monotonic() - started))
    await client.send("ping")
    assert (await client.receive())["type"] == "pong"


async def test_failed_auth_keeps_old_expiry(user, other_user, connect):
    client = await connect(token=token_expiring_in(user, 2))
    await client.receive_type("connect")

    await client.send("auth", token=token_for(other_user))

    assert (await client.receive())["data"]["code"] == "unauthorized"
    assert (await client.receive(timeout=4))["data"]["reason"] == "token_expired"
    assert await client.closed_with() == 4001
