from conftest import db_call
from messaging import services


async def test_message_is_delivered_to_every_member_connection(user, other_user, chat, connect):
    alice = await connect(user)
    bob = await connect(other_user)

    await alice.send("message", chatId=str(chat.pk), text="hello", clientMessageId="m1")

    mine = await alice.receive_type("message")
    theirs = await bob.receive_type("message")
    assert mine == theirs
    assert mine["data"]["message"]["seq"] == "1"


async def test_rest_send_arrives_live(user, other_user, chat, connect):
    bob = await connect(other_user)

    await db_call(services.send_message)(sender=user, chat_id=chat.pk, text="via rest")

    frame = await bob.receive_type("message")
    assert frame["data"]["text"] == "via rest"
