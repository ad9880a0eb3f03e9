"""The client package (clients/js): its types checked by `tsc`, and its Node tests (node --test, the
`ws` package) against a live server that this test kills and restarts when they ask."""

import http.server
import re
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from accounts import logins
from conftest import BASE_DIR
from messaging import services

PACKAGE = BASE_DIR / "clients" / "js"
TSC = PACKAGE / "node_modules" / ".bin" / "tsc"


def require_node_modules():
    if not TSC.exists() or not shutil.which("node"):
        pytest.fail("clients/js is not installed: `make js` (npm ci) installs it")


def test_the_client_and_the_guides_hooks_type_check_against_the_protocol_types():
    require_node_modules()

    run = subprocess.run(
        [str(TSC), "-p", "tsconfig.json"], cwd=PACKAGE, capture_output=True, text=True, timeout=300
    )

    assert run.returncode == 0, run.stdout + run.stderr


def test_tsc_would_catch_a_client_that_breaks_the_protocol_types(tmp_path):
    """The check above can fail: a frame handler reading a field the protocol lacks is an error."""
    require_node_modules()
    broken = tmp_path / "broken.ts"
    broken.write_text(
        'import { BiogramSocket } from "' + str(PACKAGE / "src" / "biogram-client.js") + '";\n'
        "const client = new BiogramSocket({});\n"
        'client.on("message", (message) => message.body.trim());\n'
    )

    run = subprocess.run(
        [
            str(TSC),
            "--noEmit",
            "--strict",
            "--allowJs",
            "--checkJs",
            "--skipLibCheck",
            "--module",
            "NodeNext",
            "--moduleResolution",
            "NodeNext",
            "--target",
            "ES2022",
            "--lib",
            "ES2022,DOM",
            str(broken),
        ],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert run.returncode != 0
    assert "Property 'body' does not exist on type 'Message'" in run.stdout


def refresh_token(someone) -> str:
    return str(logins.refresh_token_for(logins.start_login(someone)))


class Control(http.server.ThreadingHTTPServer):
    """What the Node tests may ask of the test: POST /restart?messages=N."""

    def __init__(self, server, chat, sender):
        super().__init__(("127.0.0.1", 0), ControlHandler)
        self.live_server, self.chat, self.sender = server, chat, sender
        self.restarts = 0


class ControlHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        url = urlparse(self.path)
        if url.path != "/restart":
            self.send_error(404)
            return
        control = self.server
        count = int(parse_qs(url.query).get("messages", ["0"])[0])
        control.live_server.kill()  # SIGKILL: no goodbye to the sockets
        for n in range(1, count + 1):
            services.send_message(
                sender=control.sender, chat_id=control.chat.pk, text=f"while you were away {n}"
            )
        control.live_server.start()  # the same port and database
        control.restarts += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.live
def test_the_node_client_connects_sends_refreshes_and_resumes_after_a_crash(
    start_live_server, user, other_user, chat
):
    require_node_modules()
    # Access tokens of 8 s: the client must refresh through `auth` to keep its socket.
    server = start_live_server(JWT_ACCESS_LIFETIME=8, RATE_LIMIT_ENABLED=0)
    control = Control(server, chat, other_user)
    thread = threading.Thread(target=control.serve_forever, daemon=True)
    thread.start()
    try:
        run = subprocess.run(
            ["node", "--test", "--test-reporter=spec", "test/"],
            cwd=PACKAGE,
            env={
                "PATH": str(Path(shutil.which("node")).parent) + ":/usr/bin:/bin",
                "BIOGRAM_URL": server.url,
                # A login each (its refresh token): the Node side gets access tokens from the
                # server itself, with the server's short lifetime.
                "BIOGRAM_ALICE": refresh_token(user),
                "BIOGRAM_ALICE_2": refresh_token(user),
                "BIOGRAM_BOB": refresh_token(other_user),
                "BIOGRAM_CHAT": str(chat.pk),
                "BIOGRAM_CONTROL": f"http://127.0.0.1:{control.server_address[1]}",
            },
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        control.shutdown()
        control.server_close()

    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    assert re.search(r"\bpass 6\n", run.stdout) and re.search(r"\bfail 0\n", run.stdout), run.stdout
    assert control.restarts == 1
