"""The ceiling: a bare ASGI chat app on the same uvicorn protocol as the server. Not part of the product.

No framework, no authentication, no storage, no ordering: the chat comes from the
`chatId` query parameter, every received `message` frame is encoded once and
handed to each member's ASGI `send` in this process. Whatever the project does
on top (Channels, auth, storage, seq, the log) costs something; this is what
the stack underneath (uvicorn, `websockets-sansio`, uvloop, httptools) carries
on this machine, measured in the same `make bench` run so that the project's
figures are ratios to it (docs/benchmarks.md).

    .venv/bin/python -m uvicorn bench.bare:app --ws websockets-sansio \
        --ws-per-message-deflate false --lifespan off --port 8200
"""

from urllib.parse import parse_qs

import orjson

CONNECT = orjson.dumps({"type": "connect", "data": {}}).decode()
rooms: dict[str, set] = {}


async def app(scope, receive, send):
    if scope["type"] != "websocket":
        if scope["type"] == "http":  # readiness probe
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        return
    query = parse_qs(scope["query_string"].decode())
    chat_id = query.get("chatId", ["0"])[0]
    user_id = query.get("userId", [""])[0]
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": CONNECT})
    members = rooms.setdefault(chat_id, set())
    members.add(send)
    try:
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                return
            text = event.get("text")
            if not text:
                continue
            data = orjson.loads(text).get("data", {})
            frame = {
                "type": "websocket.send",
                "text": orjson.dumps(
                    {
                        "type": "message",
                        "data": {
                            "chatId": chat_id,
                            "senderId": data.get("senderId", user_id),
                            "text": data.get("text", ""),
                            "message": {"clientMessageId": data.get("clientMessageId")},
                        },
                    }
                ).decode(),
            }
            for member in list(members):
                try:
                    await member(frame)
                except Exception:  # a member that left mid-send
                    members.discard(member)
    finally:
        members.discard(send)
