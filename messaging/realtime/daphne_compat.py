"""Close codes under `make dev` (Django's runserver on daphne): every code the server uses must work.

daphne hands an application's `websocket.close` to autobahn's `sendClose`,
which accepts only 1000 and 3000-4999 and raises for the codes RFC 6455 gives
a server (1001 going away, 1009 too big, 1011 internal error): the close is
lost and the socket stays open but dead. The production server (uvicorn)
sends them as they are. Under daphne, this sends those codes through
autobahn's `sendCloseFrame`, the frame writer `sendClose` itself ends in.
`test_library_contracts.py` fails loudly if daphne or autobahn change what
this relies on.
"""

import sys

_installed = False


def install_if_daphne() -> None:
    """Patch daphne's WebSocket protocol once, if this process runs daphne."""
    global _installed
    if _installed or "daphne.ws_protocol" not in sys.modules:
        return
    from daphne.ws_protocol import WebSocketProtocol

    original = WebSocketProtocol.serverClose

    def server_close(self, code=None):
        if code is None or code == 1000 or 3000 <= code <= 4999:
            return original(self, code=code)
        self.sendCloseFrame(code=code, isReply=False)

    WebSocketProtocol.serverClose = server_close
    _installed = True
